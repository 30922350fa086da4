"""The engine's router (``--gemm auto``): two GEMM kinds per linear, the faster whole linear
kept per padded M, decided once per GPU tag. On CPU the two kinds are the fp64 reference and
torch's ``_int_mm``, both real GEMMs of the same INT8 operands."""

import time

import pytest
import torch

from slidesparse.core import timing
from slidesparse.engine.algos import Router, route_key
from slidesparse.engine.linear import QuantLinear, quantize_weight

CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU kinds on CPU tensors")
TAG = "TEST_cc00_cpu"


def _router(tmp_path, kinds=("a", "b")):
    # Loose enough for sleep-based calls; choose() only needs the sign of the difference.
    return Router(kinds, tmp_path, TAG, device="cpu", policy=timing.Adaptive(0.05, 6, 0.5))


def _slow():
    time.sleep(0.002)


def _fast():
    return None


@pytest.mark.parametrize("slow_first", [True, False])
def test_router_keeps_the_faster_call(tmp_path, slow_first):
    r = _router(tmp_path)
    calls = {"a": _slow, "b": _fast} if slow_first else {"a": _fast, "b": _slow}
    won = r.choose("route|a+b|int8|dense|N8|K8|M16", calls)
    assert won == ("b" if slow_first else "a")
    rec = r.decisions["route|a+b|int8|dense|N8|K8|M16"]
    assert (rec["ratio"] > 1) == slow_first and not rec["tie"]
    assert rec["us"]["a"] > 0 and rec["n_samples"] >= 6


def test_router_decision_is_reused_from_the_tag_cache(tmp_path):
    key = "route|a+b|int8|dense|N8|K8|M16"
    assert _router(tmp_path).choose(key, {"a": _slow, "b": _fast}) == "b"

    def never():
        raise AssertionError("a cached decision is not timed again")

    # A later process on the same GPU tag repeats the decision without timing.
    assert _router(tmp_path).choose(key, {"a": never, "b": never}) == "b"
    # A cached kind that is not on offer any more is decided again.
    assert _router(tmp_path).choose(key, {"a": _fast, "c": _slow}) == "a"


def test_router_redecides_a_decision_timed_another_way(tmp_path):
    """A decision taken from eager timings (launch-bound at small M) is not reused once the
    router times that case another way: it is timed again."""
    key = "route|a+b|int8|dense|N8|K8|M16"
    r = _router(tmp_path)
    r.cache.put(key, {"kind": "a", "timer": timing.TIMER_CUDA_GRAPH, "ratio": 0.5, "tie": False})
    assert r.choose(key, {"a": _slow, "b": _fast}) == "b"
    assert r.decisions[key]["timer"] == timing.TIMER_CPU


@CPU_ONLY
def test_quant_linear_routes_per_padded_m_and_records_them(tmp_path):
    """A QuantLinear with two forms runs the kind the router picked at each M_pad, gives the
    same exact INT8 result on either, and the summary names the route per M_pad."""
    torch.manual_seed(0)
    N, K = 64, 64
    q, scale = quantize_weight(torch.randn(N, K), torch.int8)
    forms = {"cpu-ref": (q, None), "torch-builtin": (q, None)}
    r = Router(tuple(forms), tmp_path, TAG, device="cpu")
    lin = QuantLinear(N=N, K=K, qdtype=torch.int8, pattern=None, forms=forms, w_scale=scale,
                      bias=None, selector=r, name="layers.0.o_proj")  # fmt: skip
    ref = QuantLinear(N=N, K=K, qdtype=torch.int8, pattern=None, forms={"cpu-ref": (q, None)},
                      w_scale=scale, bias=None)  # fmt: skip
    for M in (3, 40):
        x = torch.randn(M, K, dtype=torch.bfloat16)
        assert torch.equal(lin(x), ref(x))
    got = r.summary()["o_proj"]
    assert set(got) == {"16", "48"}  # M padded to 16 by the quant kernel
    assert all(v["kind"] in forms and "ratio" in v for v in got.values())
    assert route_key(r.kinds, lin, 16, False) in r.decisions
    assert lin.weight_bytes() == N * K  # one shared INT8 tensor


def test_pack_linear_keeps_each_kind_form(tmp_path):
    """Dense kinds share one tensor; every sparse kind gets its own compressed form."""
    from slidesparse.engine.weights import LinearPlan, forms_of, pack_linear

    q, scale = quantize_weight(torch.randn(16, 32), torch.int8)
    dense = LinearPlan("w8a8", torch.int8, None, None, ("cpu-ref", "torch-builtin"))
    t = pack_linear(q, scale, dense)
    f = forms_of(t, dense.kinds)
    assert f["cpu-ref"][0] is f["torch-builtin"][0] and set(t) == {"weight", "w_scale"}
    assert dense.cache_tag().endswith("|cpu-ref+torch-builtin")
