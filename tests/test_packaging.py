"""The wheel carries the package data and works from a non-editable install in a fresh venv."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (whl,) = out.glob("slidesparse-*.whl")
    return whl


def test_wheel_contains_data_folders(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("slidesparse/matrix_files/") and n.endswith(".yaml") for n in names)
    assert any(n.startswith("slidesparse/report_templates/") and n.endswith(".j2") for n in names)
    assert any(n.startswith("slidesparse/csrc/") for n in names)
    assert "slidesparse/cli.py" in names


@pytest.mark.slow
def test_non_editable_install_runs(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # Dependencies come from this interpreter's site-packages through a .pth file (a .pth
    # inside that folder is not processed, so an editable install there cannot shadow the wheel).
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    exe = env_dir / "bin" / "slidesparse"

    def run(*args):
        return subprocess.run(
            args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
        )

    version = run(str(exe), "--version")
    assert version.returncode == 0 and "version" in version.stdout, version.stderr
    env_out = run(str(exe), "env", "--json")
    assert env_out.returncode == 0 and '"gpu_tag"' in env_out.stdout, env_out.stderr
    probe = run(
        str(py),
        "-c",
        "import slidesparse, importlib.resources as r;"
        "print(slidesparse.__file__);"
        "print(sorted(p.name for p in r.files('slidesparse.matrix_files').iterdir()));"
        "print(sorted(p.name for p in r.files('slidesparse.report_templates').iterdir()))",
    )
    assert probe.returncode == 0, probe.stderr
    installed, matrices, templates = probe.stdout.strip().splitlines()
    assert installed.startswith(str(env_dir)), installed
    assert "smoke.yaml" in matrices
    assert ".j2" in templates
