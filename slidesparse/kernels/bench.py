"""Measure the quant kernels: inputs, bytes moved, timing, copy bandwidth, the summary table.

Library side of ``slidesparse bench quant`` and of the ``kernel-quant`` task. A case and the
copy it is compared with are timed adaptively (:func:`slidesparse.core.timing.time_adaptive`:
L2 flushed before every sample, sampled until the median's spread meets the target); the
copy bandwidth is a device-to-device ``copy_`` of the kernel's input size, measured in the
same process, so "% of copy" compares like with like on this device. Tuning, which only ranks
configs, times with ``triton.testing.do_bench`` (:func:`time_fn`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from slidesparse.core import sparsity, timing
from slidesparse.core.errors import Unsupported, UserError
from slidesparse.kernels import numerics

KERNELS = ("quant_only", "quant_slide", "dequant_bias")
TIMER = "triton_do_bench_l2flush"
TIMER_GRAPH = "triton_do_bench_cudagraph"
TIMER_INTERPRETER = "perf_counter(triton-interpreter)"
_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "int8": 1, "fp8": 1, "int32": 4}
# Adaptive timing of a case (or its copy) on a GPU: launches of µs to ms, so a 1% target is
# usually met in well under the cap. Under the CPU interpreter a sample takes seconds and
# says nothing about speed: the minimum, capped short.
SAMPLING = {"min_samples": 10, "max_s": 1.0}
INTERPRETER_SAMPLING = {"min_samples": 3, "max_s": 0.1}


@dataclass(frozen=True)
class Case:
    """One kernel launch shape. ``size`` is K for the quant kernels, N for dequant_bias;
    ``in_dtype`` is the activation (quant) or accumulator (dequant) dtype."""

    kernel: str
    M: int
    size: int
    in_dtype: str
    out_dtype: str
    pattern: str | None = None  # canonical sparse pattern, quant_slide only

    @property
    def tuning_kernel(self) -> str:
        """The kernel name tuned configs are stored under."""
        return f"quant_slide_{self.pattern}" if self.kernel == "quant_slide" else self.kernel

    @property
    def dtypes(self) -> str:
        return f"{self.in_dtype}->{self.out_dtype}"

    @property
    def out_cols(self) -> int:
        """Columns of the output: K_pad, K_slide or N."""
        if self.kernel == "quant_only":
            return numerics.ceil_to(self.size, numerics.K_ALIGN)
        if self.kernel == "quant_slide":
            return sparsity.k_slide(self.size, self.pattern)
        return self.size

    @property
    def out_rows(self) -> int:
        return (
            self.M if self.kernel == "dequant_bias" else numerics.ceil_to(self.M, numerics.M_ALIGN)
        )

    @property
    def input_bytes(self) -> int:
        """Bytes of the main input (activation or accumulator): the copy it is compared with."""
        return self.M * self.size * _BYTES[self.in_dtype]

    def bytes_moved(self) -> int:
        """Bytes the kernel must read and write at least (its memory roofline)."""
        read = self.input_bytes
        write = self.out_rows * self.out_cols * _BYTES[self.out_dtype]
        if self.kernel == "dequant_bias":
            return read + write + 4 * self.M + 4 * self.size + 2 * self.size  # scales, bf16 bias
        return read + write + 4 * self.out_rows  # + scales


def make_case(kernel: str, M: int, size: int, in_dtype: str, out_dtype: str, pattern=None) -> Case:
    """Validate and build a :class:`Case`."""
    if kernel not in KERNELS:
        raise UserError(f"unknown quant kernel {kernel!r}; valid: {', '.join(KERNELS)}")
    for name, v in (("M", M), ("K/N", size)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise UserError(f"{kernel}: {name}={v!r} must be a positive integer")
    if kernel == "dequant_bias":
        numerics.check_dtype(in_dtype, numerics.ACC_DTYPES, "dequant_bias accumulator")
        numerics.check_dtype(out_dtype, numerics.OUT_DTYPES, "dequant_bias output")
    else:
        numerics.check_dtype(in_dtype, numerics.IN_DTYPES, f"{kernel} input")
        numerics.check_dtype(out_dtype, numerics.QUANT_DTYPES, f"{kernel} output")
    if kernel == "quant_slide":
        if pattern is None:
            raise UserError("quant_slide needs a sparsity pattern (e.g. 2_8)")
        p = sparsity.parse_pattern(pattern)
        if p.is_dense:
            raise UserError("quant_slide needs a sparse pattern, not dense; use quant_only")
        pattern = p.name
    else:
        pattern = None
    return Case(kernel, M, size, in_dtype, out_dtype, pattern)


def make_inputs(case: Case, device: str, seed: int = 0) -> tuple:
    """Random inputs of ``case`` on ``device`` (activations ~N(0,1); int32 accumulators)."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    if case.kernel != "dequant_bias":
        x = torch.randn(case.M, case.size, generator=g, device=device, dtype=torch.float32)
        return (x.to(numerics.torch_dtype(case.in_dtype)),)
    M, N = case.M, case.size
    if case.in_dtype == "int32":
        acc = torch.randint(-(2**20), 2**20, (M, N), generator=g, device=device, dtype=torch.int32)
    else:
        acc = torch.randn(M, N, generator=g, device=device).to(numerics.torch_dtype(case.in_dtype))
    scale_a = torch.rand(M, generator=g, device=device) * 1e-2
    scale_b = torch.rand(N, generator=g, device=device) * 1e-2
    bias = torch.randn(N, generator=g, device=device).to(torch.bfloat16)
    return acc, scale_a, scale_b, bias


def runner(case: Case, inputs: tuple, config: dict | None = None):
    """A no-argument callable that runs the case's kernel once (for timing)."""
    from slidesparse.kernels import dequant, quant, slide

    if case.kernel == "quant_only":
        return lambda: quant.quant_only(inputs[0], case.out_dtype, config=config)
    if case.kernel == "quant_slide":
        return lambda: slide.quant_slide(inputs[0], case.pattern, case.out_dtype, config=config)
    return lambda: dequant.dequant_bias(*inputs, case.out_dtype, config=config)


def time_fn(fn, *, warmup_ms: int = 25, rep_ms: int = 100, graph: bool = False) -> dict:
    """Time ``fn`` on the current CUDA device: the store's latency columns (µs), plus the
    90th percentile the tuner ranks configs by. ``graph``: each sample is the mean of many
    back-to-back calls replayed from one CUDA graph (no host launch cost, warm L2)."""
    from triton.testing import do_bench, do_bench_cudagraph

    from slidesparse.core.timing import Timing, quantile, summarize

    if graph:
        times_ms = do_bench_cudagraph(fn, rep=rep_ms, return_mode="all")
    else:
        times_ms = do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all")
    if not isinstance(times_ms, list):  # a single sample comes back as a float
        times_ms = [times_ms]
    us = tuple(t * 1e3 for t in times_ms)
    timer = TIMER_GRAPH if graph else TIMER
    return {**summarize(Timing(us, timer)), "latency_p90_us": quantile(sorted(us), 0.9)}


def copy_gbps(nbytes: int, *, target: float = timing.DEFAULT_TARGET) -> float:
    """Device-to-device copy bandwidth (read + write bytes / median time), GB/s."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").fill_(1)
    dst = torch.empty_like(src)
    t = timing.time_adaptive(lambda: dst.copy_(src), "cuda", timing.Adaptive(target, **SAMPLING))
    return 2 * nbytes / (t.median_us * 1e3)


def require_cuda() -> None:
    """Raise Unsupported unless a CUDA device is visible (timing needs one)."""
    import torch

    if not torch.cuda.is_available():
        raise Unsupported("no CUDA device: quant kernel timing needs a GPU")


def require_cuda_or_user_error() -> None:
    """For the CLI: no CUDA device is the user's problem to fix, said in one line."""
    try:
        require_cuda()
    except Unsupported as exc:
        raise UserError(f"{exc.reason}; run this on a machine with an NVIDIA GPU") from None


def bench_case(
    case: Case,
    *,
    copy_bw: float | None = None,
    target: float = timing.DEFAULT_TARGET,
    check: bool = True,
) -> dict:
    """Time one case with its tuned (or default) config until the spread of its median meets
    ``target``; a result row in store columns."""

    from slidesparse.kernels import tuning

    require_cuda()
    inputs = make_inputs(case, "cuda")
    fn = runner(case, inputs)
    row = case_columns(case)
    out = fn()  # compiles (or loads) the kernel outside any timing
    if check:
        row["correct"] = check_case(case, inputs, out)
    t = timing.summarize(timing.time_adaptive(fn, "cuda", timing.Adaptive(target, **SAMPLING)))
    row.update(t)
    nbytes = case.bytes_moved()
    row["gbps"] = nbytes / (t["latency_us"] * 1e3)
    config = tuning.config_for(case.tuning_kernel, case.dtypes, case.size, case.M)
    extra = {
        "bytes_moved": nbytes,
        "config": config,
        # "tuned", "nearest M" or "default": an untuned launch is no tuned figure.
        "config_source": tuning.config_source(case.tuning_kernel, case.dtypes, case.size, case.M),
        "triton": _triton_version(),
        "target_spread": target,
    }
    if copy_bw is not None:
        extra["copy_gbps"] = copy_bw
        extra["pct_of_copy"] = 100.0 * row["gbps"] / copy_bw
    row["extra"] = extra
    return row


def case_columns(case: Case) -> dict:
    """The store columns that describe the case itself (shared with the tune task)."""
    return {
        "mode": "quant",
        "kernel": case.kernel,
        "backend": "triton",
        "dtype": case.in_dtype,
        "out_dtype": case.out_dtype,
        "sparsity": case.pattern or "dense",
        "M": case.M,
        "K": case.size if case.kernel != "dequant_bias" else None,
        "N": case.size if case.kernel == "dequant_bias" else None,
        "K_slide": case.out_cols if case.kernel == "quant_slide" else None,
    }


def bench_case_interpreted(case: Case, *, target: float = timing.DEFAULT_TARGET) -> dict:
    """Check and time one case on CPU under the Triton interpreter (TRITON_INTERPRET=1).

    Same row as :func:`bench_case` but timed with perf_counter (:data:`INTERPRETER_SAMPLING`)
    and ``gbps`` left null: the interpreter runs numpy ops per tile, so its time shows the
    code path works, not how fast the kernel is. Uses the default config (tuned tables
    describe GPUs).
    """
    from slidesparse.kernels import tuning

    if not numerics.interpreting():
        raise Unsupported("the Triton interpreter is off (set TRITON_INTERPRET=1 before import)")
    inputs = make_inputs(case, "cpu")
    config = tuning.default_config(case.tuning_kernel, case.size, case.M)
    if case.kernel != "dequant_bias":
        # The interpreter pays per program, not per element: 16 rows a program is 10x faster.
        config["ROWS"] = numerics.M_ALIGN
    fn = runner(case, inputs, config)
    row = case_columns(case)
    row["correct"] = check_case(case, inputs, fn())
    policy = timing.Adaptive(target, **INTERPRETER_SAMPLING)
    t = timing.time_adaptive(fn, "cpu", policy, warmup=0)
    row.update(timing.summarize(replace(t, timer=TIMER_INTERPRETER)))
    row["gbps"] = None
    row["extra"] = {
        "bytes_moved": case.bytes_moved(),
        "config": config,
        "triton": _triton_version(),
        "interpreter": True,
        "target_spread": target,
    }
    return row


def _triton_version() -> str:
    import triton

    return triton.__version__


def check_case(case: Case, inputs: tuple, got, rows_per_chunk: int = 4096) -> bool:
    """Bit-compare kernel output ``got`` with the torch reference, ``rows_per_chunk`` rows at a
    time so that the reference's fp32 temporaries stay small at M = 65536."""
    from slidesparse.kernels import reference

    step = numerics.ceil_to(rows_per_chunk, numerics.M_ALIGN)
    for r0 in range(0, case.M, step):
        r1 = min(case.M, r0 + step)
        if case.kernel == "dequant_bias":
            acc, sa, sb, bias = inputs
            sa = sa if sa.numel() == 1 else sa[r0:r1]
            want = reference.dequant_bias_ref(acc[r0:r1], sa, sb, bias, case.out_dtype)
            part = got[r0:r1]
        else:
            x = inputs[0][r0:r1]
            if case.kernel == "quant_only":
                want = reference.quant_only_ref(x, case.out_dtype)
            else:
                want = reference.quant_slide_ref(x, case.pattern, case.out_dtype)
            # Chunks start on multiples of 16, so the chunk's own padding ends where the
            # kernel's does (or, inside the tensor, there is none).
            r_end = r0 + want[0].shape[0]
            part = (got[0][r0:r_end], got[1][r0:r_end])
        if not bit_equal(part, want):
            return False
    return True


def bit_equal(got, want) -> bool:
    """Bit equality of kernel outputs (a tensor or a tuple of tensors), NaN == NaN."""
    import torch

    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for a, b in zip(got, want, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.is_floating_point and a.element_size() > 1:
            if not torch.equal(torch.isnan(a), torch.isnan(b)):
                return False
            a, b = torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0)
        ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[a.element_size()]
        if not torch.equal(a.view(ints), b.view(ints)):
            return False
    return True


def run_bench(
    Ms: list[int],
    sizes: list[int],
    *,
    in_dtype: str = "bf16",
    out_dtypes: tuple[str, ...] = ("int8", "fp8"),
    patterns: tuple[str, ...] = sparsity.ALL_SPARSE,
    acc_dtypes: tuple[str, ...] = ("int32", "bf16"),
    kernels: tuple[str, ...] = KERNELS,
    target: float = timing.DEFAULT_TARGET,
    check: bool = True,
) -> list[dict]:
    """Time every kernel over Ms x sizes, each until the spread of its median meets
    ``target``; rows carry copy bandwidth and slide/only ratios."""
    require_cuda()
    spin_up()
    rows = []
    for M in Ms:
        for size in sizes:
            copy_bw = copy_gbps(
                make_case("quant_only", M, size, in_dtype, "int8").input_bytes, target=target
            )
            for out in out_dtypes:
                base = None
                if "quant_only" in kernels or "quant_slide" in kernels:
                    base = bench_case(
                        make_case("quant_only", M, size, in_dtype, out),
                        copy_bw=copy_bw,
                        target=target,
                        check=check,
                    )
                    if "quant_only" in kernels:
                        rows.append(base)
                if "quant_slide" in kernels:
                    for p in patterns:
                        case = make_case("quant_slide", M, size, in_dtype, out, p)
                        row = bench_case(case, copy_bw=copy_bw, target=target, check=check)
                        ideal = case.bytes_moved() / base["extra"]["bytes_moved"]
                        row["extra"]["ratio_vs_quant_only"] = row["latency_us"] / base["latency_us"]
                        row["extra"]["ideal_ratio"] = ideal
                        rows.append(row)
            if "dequant_bias" in kernels:
                for acc in acc_dtypes:
                    case = make_case("dequant_bias", M, size, acc, "bf16")
                    rows.append(bench_case(case, copy_bw=copy_bw, target=target, check=check))
    for row in rows:
        flag_bounds(row)
    return rows


def spin_up(seconds: float = 0.5) -> None:
    """Keep the GPU busy for ``seconds`` so the first case is not timed at idle clocks."""
    import time

    import torch

    src = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        dst.copy_(src)
        torch.cuda.synchronize()


def flag_bounds(row: dict) -> list[str]:
    """Why a row's figures break a physical bound (stored as ``extra["suspect"]``):
    quant_slide moves more bytes than quant_only, so its time ratio cannot be below 1;
    no kernel moves bytes faster than a device copy. The noise margin is the suspect
    margin of the speedup checks."""
    from slidesparse.core.metrics import SUSPECT_MARGIN

    e = row.setdefault("extra", {})
    reasons = []
    ratio = e.get("ratio_vs_quant_only")
    if ratio is not None and ratio * SUSPECT_MARGIN < 1:
        reasons.append(f"quant_slide/quant_only {ratio:.2f} < 1, yet quant_slide moves more bytes")
    pct = e.get("pct_of_copy")
    if pct is not None and pct > 100 * SUSPECT_MARGIN:
        reasons.append(f"{pct:.0f}% of the copy bandwidth measured in the same run")
    if reasons:
        e["suspect"] = reasons
    return reasons


def format_table(rows: list[dict]):
    """A rich table: kernel, pattern, dtypes, M, K/N, latency, GB/s, % of copy, slide ratio."""
    from rich.table import Table

    table = Table(title="quant kernels (median latency; GB/s = bytes moved / median)")
    for col in (
        "kernel",
        "sparsity",
        "dtypes",
        "M",
        "K|N",
        "lat us",
        "p25-p75",
        "GB/s",
        "copy GB/s",
        "% copy",
        "ratio",
        "ideal",
        "ok",
    ):
        table.add_column(
            col, justify="left" if col in ("kernel", "sparsity", "dtypes") else "right"
        )
    for r in rows:
        e = r.get("extra") or {}
        ratio, ideal = e.get("ratio_vs_quant_only"), e.get("ideal_ratio")
        table.add_row(
            r["kernel"],
            r["sparsity"],
            f"{r['dtype']}->{r['out_dtype']}",
            str(r["M"]),
            str(r["K"] if r.get("K") is not None else r.get("N")),
            f"{r['latency_us']:.1f}",
            f"{r['latency_p25_us']:.1f}-{r['latency_p75_us']:.1f}",
            f"{r['gbps']:.0f}",
            f"{e['copy_gbps']:.0f}" if "copy_gbps" in e else "",
            _mark(f"{e['pct_of_copy']:.0f}%", e, "copy") if "pct_of_copy" in e else "",
            _mark(f"{ratio:.2f}", e, "quant_slide/") if ratio is not None else "",
            f"{ideal:.2f}" if ideal is not None else "",
            {True: "yes", False: "NO", None: ""}[r.get("correct")],
        )
    n = sum(1 for r in rows if (r.get("extra") or {}).get("suspect"))
    if n:
        table.caption = (
            f"(x)† : {n} row(s) break a physical bound (a slide ratio below 1, or more than "
            "the copy bandwidth): a timing problem, not a result; re-run them"
        )
    return table


def _mark(text: str, extra: dict, about: str) -> str:
    """``(text)†`` where the row's suspect reasons concern this column."""
    if any(about in r for r in extra.get("suspect", ())):
        return f"({text})†"
    return text
