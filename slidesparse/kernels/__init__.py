"""Triton kernels of the SlideSparse activation path: ``quant_only``, ``quant_slide``,
``dequant_bias`` (semantics in :mod:`slidesparse.kernels.numerics`).

The public names are the ``torch.library`` custom ops of :mod:`slidesparse.kernels.ops`,
loaded on first use so that importing this package imports neither torch nor triton::

    from slidesparse.kernels import quant_slide
    q, scale = quant_slide(x, "2_8", torch.int8)
"""

from __future__ import annotations

__all__ = ["dequant_bias", "quant_only", "quant_slide"]


def __getattr__(name: str):
    if name in __all__:
        from slidesparse.kernels import ops

        return getattr(ops, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
