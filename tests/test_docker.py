"""Checks on the two Docker images that need no Docker engine (CI has none).

The Dockerfiles are parsed with the `dockerfile` package (Docker's own Go parser). The tests
tie each file to the things it must agree with: constraints.txt (the one lock both images
install), pyproject.toml, the real ``slidesparse`` CLI (every command the files or
docs/docker.md run must exist, with the options used), and Triton's own name for the
Blackwell ptxas override.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import slidesparse
from slidesparse.cli import cli

ROOT = Path(__file__).resolve().parents[1]
ARCHES = ("x86_64", "aarch64")
EXPECTED_ARCH_LIST = {
    "x86_64": {"8.0", "8.6", "8.9", "9.0", "10.0", "12.0"},
    "aarch64": {"9.0", "10.0", "12.1"},
}
# The Python that each Ubuntu release ships as python3 (the images use it for the venv).
UBUNTU_PYTHON = {"22.04": "3.10", "24.04": "3.12"}
TOOLKIT_PTXAS = "/usr/local/cuda/bin/ptxas"
CUDA_IMAGE = re.compile(
    r"^nvidia/cuda:(?P<cuda>\d+\.\d+\.\d+)-(?P<flavor>devel|runtime)-ubuntu(?P<ubuntu>\d+\.\d+)"
    r"(@sha256:[0-9a-f]{64})?$"
)
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", ">", ">>", "<"}


# --------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------


@dataclass
class Stage:
    """One FROM ... block: its image, alias, instructions and the ARG/ENV values in scope."""

    image: str
    name: str | None
    instructions: list = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)

    def expand(self, text: str) -> str:
        """Substitute $VAR and ${VAR} the way the builder would (defaults only)."""
        return re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: self.variables.get(m.group(1) or m.group(2), m.group(0)),
            text,
        )

    def all(self, cmd: str) -> list:
        return [i for i in self.instructions if i.cmd == cmd]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for inst in self.all("ENV"):
            pairs = inst.value
            out.update({pairs[k]: _unquote(pairs[k + 1]) for k in range(0, len(pairs), 2)})
        return out

    def labels(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for inst in self.all("LABEL"):
            pairs = inst.value
            for k in range(0, len(pairs), 2):
                out[pairs[k]] = self.expand(_unquote(pairs[k + 1]))
        return out


def _unquote(text: str) -> str:
    parts = shlex.split(text)
    return parts[0] if len(parts) == 1 else text


def parse_stages(path: Path) -> list[Stage]:
    """Split a Dockerfile into stages, tracking ARG defaults and ENV values per stage."""
    dockerfile = pytest.importorskip(
        "dockerfile", reason="the Dockerfile parser package `dockerfile` is not installed"
    )
    stages: list[Stage] = []
    global_args: dict[str, str] = {}  # ARGs before the first FROM, usable by any stage
    for inst in dockerfile.parse_file(str(path)):
        if inst.cmd == "FROM":
            words = inst.value
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=words[0], name=name))
            continue
        if not stages:
            assert inst.cmd == "ARG", f"{path.name}: {inst.cmd} before the first FROM"
            key, _, default = inst.value[0].partition("=")
            global_args[key] = _unquote(default)
            continue
        stage = stages[-1]
        stage.instructions.append(inst)
        if inst.cmd == "ARG":
            key, has_default, default = inst.value[0].partition("=")
            if has_default:
                stage.variables[key] = _unquote(default)
            else:
                assert key in global_args, f"{path.name}: ARG {key} has no value"
                stage.variables[key] = global_args[key]
        elif inst.cmd == "ENV":
            pairs = inst.value
            for k in range(0, len(pairs), 2):
                stage.variables[pairs[k]] = stage.expand(_unquote(pairs[k + 1]))
    return stages


def dockerfile_path(arch: str) -> Path:
    return ROOT / f"Dockerfile.{arch}"


@pytest.fixture(scope="module", params=ARCHES)
def arch(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def stages(arch: str) -> list[Stage]:
    return parse_stages(dockerfile_path(arch))


def resolved_pins(arch: str) -> dict[str, str]:
    """Name -> pinned version from constraints.txt, markers evaluated for the image's Python."""
    ubuntu = {CUDA_IMAGE.match(s.image)["ubuntu"] for s in parse_stages(dockerfile_path(arch))}
    (python,) = {UBUNTU_PYTHON[u] for u in ubuntu}
    environment = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": arch,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
    }
    pins: dict[str, str] = {}
    for req in constraint_requirements():
        if req.marker is not None and not req.marker.evaluate(environment):
            continue
        name = canonicalize_name(req.name)
        assert name not in pins, f"constraints.txt pins {name} twice for {arch}"
        (spec,) = req.specifier
        pins[name] = spec.version
    return pins


def constraint_requirements() -> list[Requirement]:
    reqs = []
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(Requirement(line))
    return reqs


def shell_invocations(text: str) -> list[list[str]]:
    """Argument lists of every `slidesparse` command in a shell snippet.

    A command starts where `slidesparse` stands in command position (start, after an operator,
    after VAR=value assignments) or where a `docker run` names an image called slidesparse.
    """
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    found: list[list[str]] = []
    at_command = True
    in_docker_run = False
    for i, tok in enumerate(tokens):
        if tok in SHELL_OPERATORS:
            at_command, in_docker_run = True, False
            continue
        is_image = in_docker_run and re.fullmatch(r"(.*/)?slidesparse(:[\w.\-]+)?", tok)
        if (at_command and re.fullmatch(r"(.*/)?slidesparse", tok)) or is_image:
            args = []
            for t in tokens[i + 1 :]:
                if t in SHELL_OPERATORS:
                    break
                args.append(t)
            found.append(args)
            in_docker_run = False
        if tok == "run" and i > 0 and tokens[i - 1] == "docker":
            in_docker_run = True
        if at_command and not re.fullmatch(r"\w+=.*", tok) and tok not in ("exec", "time"):
            at_command = False
    return found


def check_cli(args: list[str]) -> list[str]:
    """Problems with running `slidesparse ARGS` against the real click tree (empty: fine)."""
    command: click.Command = cli
    path = ["slidesparse"]
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        if sub is None:
            return [f"`{' '.join(path)}` has no command {rest[0]!r}"]
        command, path, rest = sub, [*path, rest[0]], rest[1:]
    known = {"--help", "-h"}
    for param in command.params:
        known.update(param.opts)
        known.update(param.secondary_opts)
    problems = []
    for tok in rest:
        if tok.startswith("-") and not tok.startswith("-$") and tok != "-":
            opt = tok.split("=", 1)[0]
            if opt not in known:
                problems.append(f"`{' '.join(path)}` has no option {opt}")
    return problems


def find_command(*names: str) -> click.Command | None:
    command: click.Command = cli
    for name in names:
        if not isinstance(command, click.Group) or name not in command.commands:
            return None
        command = command.commands[name]
    return command


# --------------------------------------------------------------------------------------
# constraints.txt
# --------------------------------------------------------------------------------------


def test_constraints_are_exact_pins():
    reqs = constraint_requirements()
    assert len(reqs) > 50, "constraints.txt should lock the whole dependency tree"
    for req in reqs:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{req} is not an exact pin"
        assert not req.extras, f"{req}: pip refuses extras in a constraints file"


def test_constraints_resolved_for_the_images_python():
    header = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()[:3]
    command = " ".join(header)
    assert "--universal" in command, "one lock for both archs needs a universal resolution"
    python = re.search(r"--python-version (\d+\.\d+)", command)
    assert python, "constraints.txt header does not say which Python it was resolved for"
    for arch in ARCHES:
        for stage in parse_stages(dockerfile_path(arch)):
            ubuntu = CUDA_IMAGE.match(stage.image)["ubuntu"]
            assert UBUNTU_PYTHON[ubuntu] == python.group(1), (arch, stage.image)


@pytest.mark.parametrize("target", ARCHES)
def test_constraints_pin_the_gpu_stack(target):
    pins = resolved_pins(target)
    for name in ("torch", "triton", "vllm", "nvidia-cusparselt-cu13", "cuda-toolkit"):
        assert name in pins, f"constraints.txt has no pin for {name} on {target}"
    # The cuSPARSELt wheel and the CUDA base image must match torch's CUDA build.
    toolkit = pins["cuda-toolkit"]
    cusparselt = [n for n in pins if n.startswith("nvidia-cusparselt-cu")]
    assert cusparselt == [f"nvidia-cusparselt-cu{toolkit.split('.')[0]}"], cusparselt
    for stage in parse_stages(dockerfile_path(target)):
        assert CUDA_IMAGE.match(stage.image)["cuda"] == toolkit, (
            f"Dockerfile.{target}: base image {stage.image} is not CUDA {toolkit}, the toolkit "
            "the pinned torch wheel was built against"
        )


@pytest.mark.parametrize("target", ARCHES)
def test_constraints_satisfy_pyproject(target):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in ("gpu", "vllm"):
        wanted += project["optional-dependencies"][extra]
    pins = resolved_pins(target)
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"pyproject needs {req} but constraints.txt does not pin it"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {req}"
        )


# --------------------------------------------------------------------------------------
# Dockerfiles
# --------------------------------------------------------------------------------------


def test_base_images_are_pinned_and_multistage(arch, stages):
    assert len(stages) >= 2, "build and runtime must be separate stages"
    for stage in stages:
        assert CUDA_IMAGE.match(stage.image), f"{stage.image}: not a version-pinned CUDA image"
    assert CUDA_IMAGE.match(stages[0].image)["flavor"] == "devel"
    assert stages[0].name == "build"
    assert CUDA_IMAGE.match(stages[-1].image)["flavor"] == "runtime", (
        "the final stage must not be the devel image"
    )
    # The other arch's file must use the same CUDA and Ubuntu, or results stop being comparable.
    other = parse_stages(dockerfile_path(next(a for a in ARCHES if a != arch)))
    mine = [CUDA_IMAGE.match(s.image).group("cuda", "ubuntu") for s in stages]
    theirs = [CUDA_IMAGE.match(s.image).group("cuda", "ubuntu") for s in other]
    assert mine == theirs


def test_pip_installs_use_the_constraints(arch, stages):
    pins = resolved_pins(arch)
    for stage in stages:
        constraint = stage.env().get("PIP_CONSTRAINT", "")
        for run in stage.all("RUN"):
            text = stage.expand(run.value[0])
            if "pip install" not in text:
                continue
            assert constraint.endswith("constraints.txt") or "-c constraints.txt" in text, (
                f"Dockerfile.{arch}: `{text}` runs without constraints.txt"
            )
            for name, version in re.findall(r"([A-Za-z0-9_.\-]+)==([\w.+\-]+)", text):
                assert pins.get(canonicalize_name(name)) == version, (
                    f"Dockerfile.{arch} pins {name}=={version}, constraints.txt "
                    f"{pins.get(canonicalize_name(name))}"
                )
    build_runs = " ".join(r.value[0] for r in stages[0].all("RUN"))
    assert "--only-binary=:all: -r constraints.txt" in build_runs, "install the lock, wheels only"
    # Apt's CUDA packages (cuda-nvcc-13-0, ...) must be the base image's CUDA release.
    cuda = CUDA_IMAGE.match(stages[-1].image)["cuda"]
    suffix = "-".join(cuda.split(".")[:2])
    for stage in stages:
        for run in stage.all("RUN"):
            for package in re.findall(r"\bcuda-[a-z\-]+?-(\d+-\d+)\b", run.value[0]):
                assert package == suffix, f"Dockerfile.{arch}: apt CUDA {package} vs {suffix}"


def test_entrypoint_and_default_command(stages):
    final = stages[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    (default_cmd,) = final.all("CMD")
    assert entrypoint.json and list(entrypoint.value) == ["slidesparse"]
    assert default_cmd.json and list(default_cmd.value) == ["run-matrix"]


def test_kernels_built_for_the_arch_list(arch, stages):
    build = stages[0]
    arch_list = build.variables.get("TORCH_CUDA_ARCH_LIST", "")
    assert set(arch_list.split()) == EXPECTED_ARCH_LIST[arch]
    calls = [
        args
        for run in build.all("RUN")
        for args in shell_invocations(build.expand(run.value[0]))
        if args[:1] == ["build-kernels"]
    ]
    assert calls, f"Dockerfile.{arch}: the build stage never runs `slidesparse build-kernels`"
    from slidesparse.native import cutlass

    for args in calls:
        assert "--arch-list" in args
        assert set(args[args.index("--arch-list") + 1].split()) == EXPECTED_ARCH_LIST[arch]
        # Every GPU of the arch list that a CUTLASS target serves gets its library baked.
        assert "--cutlass-arch" in args, f"Dockerfile.{arch}: name the CUTLASS targets"
        baked = {a.name for a in cutlass.parse_archs(args[args.index("--cutlass-arch") + 1])}
        ccs = {tuple(int(p) for p in v.split(".")) for v in EXPECTED_ARCH_LIST[arch]}
        served = {cutlass.arch_for(cc).name for cc in ccs if cutlass.arch_for(cc)}
        assert baked == served, (baked, served)
    # The runtime stage gets the prebuilt extension from the build stage, at the same path.
    kernel_dir = build.env().get("SLIDESPARSE_EXT_CACHE")
    assert kernel_dir, "the build stage must say where build-kernels puts the extension"
    copied = [c.value[0] for c in stages[-1].all("COPY") if "--from=build" in c.flags]
    assert any(kernel_dir.startswith(src) for src in copied), (kernel_dir, copied)
    runtime_env = stages[-1].env()
    assert runtime_env.get("SLIDESPARSE_EXT_CACHE") == kernel_dir
    # The loader keys the prebuilt copy by TORCH_CUDA_ARCH_LIST: the runtime must see the same.
    assert stages[-1].variables.get("TORCH_CUDA_ARCH_LIST") == arch_list


def test_runs_as_non_root(stages):
    final = stages[-1]
    users = final.all("USER")
    assert users, "the final stage must switch to a non-root user"
    user = final.expand(users[-1].value[0]).split(":")[0]
    assert user not in ("root", "0"), user
    if user.isdigit():
        creates = " ".join(final.expand(r.value[0]) for r in final.all("RUN"))
        assert re.search(rf"useradd\b.*--uid {user}\b", creates.replace('"', "")), (
            f"no useradd creates uid {user}"
        )
    # Nothing after USER may need root.
    last_user = final.instructions.index(users[-1])
    assert not [i for i in final.instructions[last_user:] if i.cmd == "RUN"]


def test_results_volume(stages):
    final = stages[-1]
    volumes = {v for inst in final.all("VOLUME") for v in inst.value}
    assert "/results" in volumes
    assert final.env().get("SLIDESPARSE_RESULTS") == "/results"


def test_results_envvar_is_what_run_matrix_reads():
    command = find_command("run-matrix")
    assert command is not None, "the CLI has no run-matrix command yet"
    results = [p for p in command.params if "--results" in getattr(p, "opts", [])]
    assert results, "run-matrix has no --results option"
    assert results[0].envvar == "SLIDESPARSE_RESULTS"


def test_oci_labels(stages):
    labels = stages[-1].labels()
    for key in ("version", "source", "revision"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"missing OCI label {key}"
    assert labels["org.opencontainers.image.version"] == slidesparse.__version__


def test_aarch64_points_triton_at_the_toolkit_ptxas():
    final = parse_stages(dockerfile_path("aarch64"))[-1]
    env = final.env()
    knobs = pytest.importorskip("triton.knobs")
    # Triton's own names for its two ptxas overrides (below / from sm_100).
    names = [vars(knobs.nvidia_knobs)[k].key for k in ("ptxas", "ptxas_blackwell")]
    assert names == ["TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH"]
    for name in names:
        assert env.get(name) == TOOLKIT_PTXAS, f"{name} must point at {TOOLKIT_PTXAS}"
    runs = " ".join(r.value[0] for r in final.all("RUN"))
    assert "-arch=sm_121a" in runs, "the build must prove that ptxas accepts sm_121a"


def _env_effect(name: str, value: str) -> str:
    """What the package does with ``name=value`` (the effect a variable the image sets has)."""
    from click.testing import CliRunner

    from slidesparse.cli import cli
    from slidesparse.native import extension

    if name == "SLIDESPARSE_EXT_CACHE":
        return str(extension.cache_root())
    if name == "SLIDESPARSE_RESULTS":  # run-matrix/plan/results: the default --results folder
        res = CliRunner().invoke(cli, ["results"], env={name: value})
        return f"{res.output} {res.exception}"  # the folder it looked in, or why it is missing
    raise AssertionError(f"the image sets {name}, which no slidesparse code path reads")


def test_image_env_vars_are_read_by_the_package(stages, monkeypatch, tmp_path):
    for name in stages[-1].env():
        if name.startswith("SLIDESPARSE_"):
            value = str(tmp_path / name.lower())
            monkeypatch.setenv(name, value)
            assert value in _env_effect(name, value), f"the image sets {name}; nothing reads it"


def test_every_slidesparse_command_exists(arch, stages):
    problems = []
    for stage in stages:
        for run in stage.all("RUN"):
            for args in shell_invocations(stage.expand(run.value[0])):
                problems += check_cli(args)
    final = stages[-1]
    problems += check_cli(list(final.all("CMD")[0].value))
    assert not problems, f"Dockerfile.{arch}: " + "; ".join(problems)


def test_docs_commands_exist():
    text = (ROOT / "docs" / "docker.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh|console|shell)\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/docker.md has no shell examples"
    calls = []
    for block in blocks:
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split(" #", 1)[0].removeprefix("$ ").strip()
            if line and not line.startswith("#"):
                calls += shell_invocations(line)
    assert len(calls) >= 5
    problems = [p for args in calls for p in check_cli(args)]
    assert not problems, "docs/docker.md: " + "; ".join(sorted(set(problems)))


# --------------------------------------------------------------------------------------
# build context
# --------------------------------------------------------------------------------------


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_builds_copy(stages):
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in stages:
        for copy in stage.all("COPY"):
            if any(f.startswith("--from=") for f in copy.flags):
                continue
            for src in copy.value[:-1]:
                assert not dockerignore_excludes(src, patterns), f".dockerignore drops {src}"
    for private in (".git", ".device-wheels", "results", "tests", ".venv"):
        assert dockerignore_excludes(private, patterns), f".dockerignore sends {private}"
