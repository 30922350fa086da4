"""Large shapes on a real GPU: 64-bit indexing, CUDA graphs, the bench table (marked gpu)."""

import pytest
import torch

from slidesparse.kernels import bench, ops

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]


def _free_bytes() -> int:
    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0


def _run_and_check(case):
    inputs = bench.make_inputs(case, "cuda")
    got = bench.runner(case, inputs)()
    torch.cuda.synchronize()  # an illegal address would surface here
    ok = bench.check_case(case, inputs, got)
    del inputs, got
    torch.cuda.empty_cache()
    return ok


@pytest.mark.parametrize("out", ["int8", "fp8"])
@pytest.mark.parametrize(
    "kernel,pattern", [("quant_only", None), ("quant_slide", "2_8"), ("quant_slide", "2_inf")]
)
def test_qwen7b_down_at_m65536(kernel, pattern, out):
    # M·K_slide = 65536·37888 > 2^31 for 2_inf: the overflow other kits crashed on.
    assert _run_and_check(bench.make_case(kernel, 65536, 18944, "bf16", out, pattern))


@pytest.mark.parametrize("acc", ["int32", "bf16"])
def test_dequant_at_m65536_gate_up(acc):
    assert _run_and_check(bench.make_case("dequant_bias", 65536, 37888, acc, "bf16"))


@pytest.mark.parametrize("kernel,pattern", [("quant_only", None), ("quant_slide", "2_8")])
def test_more_than_2_pow_32_elements(kernel, pattern):
    M, K = 131072, 32800  # M·K = 4.3e9 > 2^32
    need = M * K * (2 + 1) * (1.5 if pattern else 1) + 8e9  # x, q, chunked reference
    if _free_bytes() < need:
        pytest.skip(f"needs {need / 1e9:.0f} GB free on the GPU")
    assert _run_and_check(bench.make_case(kernel, M, K, "bf16", "int8", pattern))


def test_cuda_graph_replay_matches_eager():
    x = torch.randn(300, 3584, dtype=torch.bfloat16, device="cuda")
    q_eager, _ = ops.quant_slide(x, "2_8", torch.float8_e4m3fn)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ops.quant_slide(x, "2_8", torch.float8_e4m3fn)  # warm-up compiles outside capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        q, s = ops.quant_slide(x, "2_8", torch.float8_e4m3fn)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    q_new, s_new = ops.quant_slide(x, "2_8", torch.float8_e4m3fn)
    assert torch.equal(q.view(torch.uint8), q_new.view(torch.uint8)) and torch.equal(s, s_new)
    assert not torch.equal(q.view(torch.uint8), q_eager.view(torch.uint8))


def test_run_bench_rows_are_complete():
    rows = bench.run_bench([256], [512], patterns=("2_8",), target=0.05)
    kinds = {(r["kernel"], r["sparsity"], r["out_dtype"], r["dtype"]) for r in rows}
    assert ("quant_slide", "2_8", "fp8", "bf16") in kinds and (
        "dequant_bias",
        "dense",
        "bf16",
        "int32",
    ) in kinds
    for r in rows:
        assert r["correct"] is True
        assert r["latency_p25_us"] <= r["latency_us"] <= r["latency_p75_us"]
        assert r["extra"]["copy_gbps"] > 0 and r["gbps"] > 0
        assert r["n_samples"] >= 10 and r["spread_met"] == (r["latency_spread"] <= 0.05)
    slide_row = next(r for r in rows if r["kernel"] == "quant_slide")
    assert slide_row["extra"]["ideal_ratio"] > 1
