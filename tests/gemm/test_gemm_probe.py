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


# Decides by alg id, as a library with a few bad algorithms would: 3 segfaults, 5 is sticky.
_VET_CHILD = textwrap.dedent(
    """
    import json, os, sys
    for i, c in enumerate(json.loads(sys.stdin.read())):
        print(json.dumps({"begin": i}), flush=True)
        if c["alg_id"] == 3:
            os.abort()
        if c["alg_id"] == 5:
            print(json.dumps({"end": i, "status": "cuda_error", "detail": "illegal instruction"}),
                  flush=True)
            sys.exit(3)
        print(json.dumps({"end": i, "status": "ok", "detail": "rel_err=0"}), flush=True)
    """
)


def _vet(tmp_path, script_text, candidates):
    script = tmp_path / "vet_child.py"
    script.write_text(script_text)
    return probe.vet(
        candidates, dtype="fp16", out="fp16", shape=(128, 256, 512), cache_dir=tmp_path / "c",
        gpu_tag="H100_cc90_py312_cu130_x86_64", workers=2, child=[sys.executable, str(script)],
    )  # fmt: skip


def _grid():
    return [
        {"alg_id": a, "split_k": s, "split_k_mode": -1, "layout": lay}
        for lay in (0, 3) for s in (1, -1) for a in range(7)
    ]  # fmt: skip


def test_vet_leaves_out_crashing_and_sticky_configurations(tmp_path):
    kept, left_out = _vet(tmp_path, _VET_CHILD, _grid())
    assert sorted({c["alg_id"] for c in kept}) == [0, 1, 2, 4, 6]
    assert len(kept) == 5 * 4
    assert {v["status"] for v in left_out.values()} == {"crashed", "cuda_error"}
    assert len(left_out) == 2 * 4
    assert all(v["shape"] == "128x256x512" for v in left_out.values())


def test_vet_verdicts_are_cached_per_gpu_tag(tmp_path):
    _vet(tmp_path, _VET_CHILD, _grid())
    # A child that would now fail everything is never started: the verdicts come from disk.
    kept, left_out = _vet(tmp_path, _CHILD.replace('c["act"]', '"segv"'), _grid())
    assert len(kept) == 20 and len(left_out) == 8
    never_starts = [sys.executable, "-c", "import sys; sys.exit(1)"]
    other = probe.vet(_grid(), dtype="fp16", out="fp16", shape=(128, 256, 512),
                      cache_dir=tmp_path / "c", gpu_tag="H200_cc90_py312_cu130_x86_64",
                      workers=2, child=never_starts)  # fmt: skip
    # Another GPU's verdicts do not apply; its child never started, so nothing is left out.
    assert len(other[0]) == 28 and other[1] == {}


def test_vet_keys_ignore_the_shape_but_not_the_library_arguments():
    a = probe.config("fp16", 128, 256, 512, alg_id=1, layout=3)
    b = probe.config("fp16", 4096, 4096, 4096, alg_id=1, layout=3)
    assert probe.vet_key(a) == probe.vet_key(b)
    assert probe.vet_key(a) != probe.vet_key({**a, "layout": 2})
    assert probe.vet_key(a) != probe.vet_key({**a, "out": "fp32"})
