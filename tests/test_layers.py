"""The package's import graph: layers point down only, and no module imports itself back.

Every ``import`` in every module counts, including those inside functions (a lazy import is
still a dependency). Layers, bottom up: core; native (the csrc extension); kernels (Triton);
gemm; engine; tasks and results; run and report; commands; the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import slidesparse

PACKAGE = Path(slidesparse.__file__).resolve().parent
RANK = {
    "": 0,  # slidesparse/__init__.py: the version only
    "core": 0,
    "native": 1,
    "kernels": 2,
    "gemm": 3,
    "engine": 4,
    "tasks": 5,
    "results": 5,
    "run": 6,
    "report": 6,
    "commands": 7,
    "cli": 8,
    "__main__": 9,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = ["slidesparse", *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(module: str, path: Path) -> set[str]:
    """The slidesparse modules ``module`` imports (a name imported from a package that is a
    module of its own counts as that module, not as the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import sub`` depends on the submodule; ``from pkg import name`` on pkg.
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names
            ]
        else:
            continue
        for name in names:
            if not name.startswith("slidesparse"):
                continue
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in MODULES and name != module:
                found.add(name)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_the_walk_sees_the_whole_package():
    assert {"slidesparse.core.sparsity", "slidesparse.run.runner", "slidesparse.cli"} <= set(GRAPH)
    assert all(_layer(m) in RANK for m in MODULES), sorted({_layer(m) for m in MODULES} - set(RANK))


def test_layers_import_downward_only():
    upward = []
    for module, targets in GRAPH.items():
        for target in targets:
            src, dst = _layer(module), _layer(target)
            if target == "slidesparse" or src == dst:
                continue
            if RANK[dst] >= RANK[src]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that do not point down:\n" + "\n".join(sorted(upward))


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                return [*stack[stack.index(t) :], t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_is_oversized():
    big = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 520}
    assert not big, big
