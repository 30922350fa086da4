"""The crash-isolated probe's bookkeeping, with a child that crashes on purpose (no GPU)."""

from __future__ import annotations

import sys
import textwrap

from slidesparse.gemm import probe

# Speaks probe's child protocol; each configuration's "act" says how it ends.
_CHILD = textwrap.dedent(
    """
    import json, os, sys
    for i, c in enumerate(json.loads(sys.stdin.read())):
        print(json.dumps({"begin": i}), flush=True)
        act = c["act"]
        if act == "segv":
            os.abort()
        if act == "sticky":
            print(json.dumps({"end": i, "status": "cuda_error", "detail": "illegal instruction"}),
                  flush=True)
            sys.exit(3)
        status = "ok" if act == "ok" else "error"
        print(json.dumps({"end": i, "status": status, "detail": act}), flush=True)
    """
)


def _run(tmp_path, acts):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    configs = [
        {**probe.config("fp16", 128, 128, 128, alg_id=i), "act": a} for i, a in enumerate(acts)
    ]
    return probe.probe(configs, child=[sys.executable, str(script)], timeout_s=60)


def test_every_configuration_gets_one_result_in_order(tmp_path):
    res = _run(tmp_path, ["ok", "segv", "ok", "sticky", "error", "segv", "segv", "ok"])
    assert [r["alg_id"] for r in res] == list(range(8))
    assert [r["status"] for r in res] == [
        "ok", "crashed", "ok", "cuda_error", "error", "crashed", "crashed", "ok",
    ]  # fmt: skip
    assert res[1]["detail"].startswith("exit status")


def test_a_crash_on_the_last_configuration_is_recorded(tmp_path):
    res = _run(tmp_path, ["ok", "segv"])
    assert [r["status"] for r in res] == ["ok", "crashed"]


def test_probe_groups_runs_chains_apart(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    groups = [
        [{**probe.config("fp16", 128, 128, 128, alg_id=g * 10 + i), "act": a} for i, a in
         enumerate(acts)]
        for g, acts in enumerate([["segv", "ok"], ["ok", "sticky", "ok"]])
    ]  # fmt: skip
    res = probe.probe_groups(groups, workers=2, child=[sys.executable, str(script)], timeout_s=60)
    assert [(r["alg_id"], r["status"]) for r in res] == [
        (0, "crashed"), (1, "ok"), (10, "ok"), (11, "cuda_error"), (12, "ok"),
    ]  # fmt: skip
