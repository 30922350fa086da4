"""The torch.library registration: opcheck, torch.compile, and the symbolic K_slide."""

import pytest
import torch

from slidesparse.core import sparsity
from slidesparse.kernels import ops


def test_opcheck_every_op(device):
    x = torch.randn(5, 70, dtype=torch.bfloat16, device=device)
    torch.library.opcheck(ops.quant_only, (x, torch.int8))
    torch.library.opcheck(ops.quant_slide, (x, "2_8", torch.float8_e4m3fn))
    acc = torch.randint(-1000, 1000, (5, 40), dtype=torch.int32, device=device)
    sa, sb = torch.rand(5, device=device), torch.rand(40, device=device)
    torch.library.opcheck(
        ops.dequant_bias, (acc, sa, sb, torch.randn(40, device=device), torch.bfloat16)
    )
    torch.library.opcheck(ops.dequant_bias, (acc, sa[:1], sb, None, torch.float16))


def test_public_names_are_the_ops():
    import slidesparse.kernels as k

    assert k.quant_slide is ops.quant_slide and k.dequant_bias is ops.dequant_bias
    with pytest.raises(AttributeError):
        _ = k.no_such_kernel


@pytest.mark.parametrize("pattern", sparsity.ALL_SPARSE)
def test_symbolic_k_slide_agrees_with_sparsity(pattern):
    for K in (1, 2, 3, 31, 32, 33, 100, 2048, 3584, 18944, 18945):
        assert ops.k_slide_symbolic(K, pattern) == sparsity.k_slide(K, pattern)


@pytest.mark.slow
def test_torch_compile_sees_one_op_per_kernel(device):
    def f(x):
        q, s = ops.quant_slide(x, "2_8", torch.int8)
        return q.float().sum(1) * s

    x = torch.randn(20, 64, dtype=torch.bfloat16, device=device)
    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    assert torch.equal(compiled(x), f(x))
    x2 = torch.randn(33, 80, dtype=torch.bfloat16, device=device)  # new M and K: same graph
    assert torch.equal(compiled(x2), f(x2))
