"""A task registered from outside the package runs through ``run-matrix`` untouched.

This module registers ``echo-test`` at import; nothing in the package names it. The matrix
file validates against its axes, the planner asks it whether a cell needs a GPU, and the
worker subprocess imports this very file (by its path) to run it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import PositiveInt

from slidesparse.cli import main
from slidesparse.results.store import Store, latest_per_cell
from slidesparse.tasks import TaskContext, get_task, register_task, task_names
from slidesparse.tasks.axes import Axes, axis, product


class EchoAxes(Axes):
    """echo-test: one cell per value; ``gpu`` cells need a CUDA device."""

    value: axis(PositiveInt)
    gpu: axis(bool) = [False]  # noqa: RUF012 - a pydantic field (copied per instance)

    def points(self) -> Iterator[dict[str, Any]]:
        yield from product(value=self.value, gpu=self.gpu)


@register_task(
    "echo-test",
    axes=EchoAxes,
    default_timeout_s=30,
    needs_gpu=lambda p: bool(p["gpu"]),
    mode="echo",
    row_key=lambda p: {"M": p["value"]},
)
def run_echo(params: Mapping[str, Any], ctx: TaskContext) -> list[dict]:
    """One row carrying the value, the worker's pid and its device."""
    return [
        {"latency_us": float(params["value"]), "extra": {"pid": os.getpid(), "dev": ctx.device}}
    ]


def test_registered_task_is_known_with_its_metadata():
    assert "echo-test" in task_names()
    spec = get_task("echo-test")
    assert spec.axes is EchoAxes and spec.mode == "echo" and spec.default_timeout_s == 30
    assert spec.needs_gpu({"gpu": True}) and not spec.needs_gpu({"gpu": False})
    assert spec.module == __name__ and spec.source == __file__


def test_registered_task_runs_through_run_matrix(tmp_path, capsys):
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({"gpu_tag": "CPU_echo_py311_cpu_x86_64", "cc": None}))
    matrix = tmp_path / "echo.yaml"
    matrix.write_text("blocks: [{task: echo-test, axes: {value: [3, 5], gpu: [false, true]}}]")
    results = tmp_path / "results"
    args = ["--preset", str(matrix), "--machine", str(machine), "--results", str(results)]
    assert main(["run-matrix", *args, "--progress", "plain"]) == 0
    out = capsys.readouterr().out
    assert "2 ok, 0 failed, 2 skipped" in out, out
    frame = latest_per_cell(Store(results).read("CPU_echo_py311_cpu_x86_64"))
    ok = frame[frame["status"] == "ok"]
    assert sorted(ok["latency_us"]) == [3.0, 5.0]
    assert set(ok["mode"]) == {"echo"} and sorted(ok["M"]) == [3, 5]
    assert {json.loads(e)["dev"] for e in ok["extra"]} == {"cpu"}
    assert all(json.loads(e)["pid"] != os.getpid() for e in ok["extra"])  # ran in a worker
    skipped = frame[frame["status"] == "skipped"]
    assert set(skipped["error_message"]) == {"no CUDA device"} and sorted(skipped["M"]) == [3, 5]
    # A second run finds every cell done.
    assert main(["run-matrix", *args, "--progress", "plain"]) == 0
    assert "0 ok, 0 failed, 0 skipped" in capsys.readouterr().out
