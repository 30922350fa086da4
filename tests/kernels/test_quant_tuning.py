"""Config spaces, the JSON store and the lookup order of tuned configs."""

import json
import warnings

import pytest
import torch

from slidesparse.core import sparsity
from slidesparse.core.errors import UserError
from slidesparse.kernels import bench, reference, tuning


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setattr(tuning, "_context", {"gpu_tag": None, "cache_dir": None})
    monkeypatch.setattr(tuning, "_SHIPPED_DIR", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    tuning._clear_caches()
    yield
    tuning._clear_caches()


def test_m_buckets():
    assert [tuning.m_bucket(m) for m in (1, 16, 17, 16384, 16385, 65536, 10**6)] == [
        16,
        16,
        32,
        16384,
        32768,
        65536,
        65536,
    ]


@pytest.mark.parametrize(
    "kernel", ["quant_only", "quant_slide_2_8", "quant_slide_2_inf", "dequant_bias"]
)
@pytest.mark.parametrize("size", [40, 3584, 18944])
def test_config_space_is_valid_and_starts_with_the_default(kernel, size):
    space = tuning.config_space(kernel, size)
    assert space[0] == tuning.default_config(kernel, size, 16384)
    assert len({json.dumps(c, sort_keys=True) for c in space}) == len(space)
    for c in space:
        blocks = [c[k] for k in ("BLOCK", "BLOCK_M", "BLOCK_N", "GROUPS") if k in c]
        assert all(b & (b - 1) == 0 for b in blocks)
        if "ROWS" in c:
            assert 16 % c["ROWS"] == 0


@pytest.mark.parametrize("size", [40, 3584, 18944])
def test_group_configs_only_for_finite_patterns(size):
    assert any("GROUPS" in c for c in tuning.config_space("quant_slide_2_8", size))
    for kernel in ("quant_slide_2_inf", "quant_only"):
        assert not any("GROUPS" in c for c in tuning.config_space(kernel, size))


def test_unknown_kernel_is_a_user_error():
    with pytest.raises(UserError, match="unknown kernel"):
        tuning.config_space("quant_everything", 64)


@pytest.mark.parametrize("kernel", ["quant_only", "quant_slide_2_6", "dequant_bias"])
def test_every_config_in_the_space_is_correct(device, kernel):
    name = "quant_slide" if kernel.startswith("quant_slide") else kernel
    pattern = "2_6" if name == "quant_slide" else None
    dtypes = ("int32", "bf16") if name == "dequant_bias" else ("bf16", "fp8")
    case = bench.make_case(name, 20, 200, *dtypes, pattern)
    inputs = bench.make_inputs(case, device)
    for config in tuning.config_space(kernel, 200):
        assert bench.check_case(case, inputs, bench.runner(case, inputs, config)()), config


def test_save_load_and_lookup_order(tmp_path):
    tag = "H100_cc90_py312_cu130_x86_64"
    shipped = {
        "quant_only|bf16->int8|3584|16384": {"config": {"ROWS": 1, "BLOCK": 2048, "num_warps": 4}}
    }
    tuning.save_entries(tuning._SHIPPED_DIR / f"{tag}.json", tag, shipped)
    tables = tuning._tables(tag)
    got = tuning.find_entry(tables, "quant_only", "bf16->int8", 3584, 16384)
    assert got["config"]["BLOCK"] == 2048
    # Nearest tuned bucket of the same kernel/dtypes/size; nothing for another size.
    assert (
        tuning.find_entry(tables, "quant_only", "bf16->int8", 3584, 50000)["config"]["BLOCK"]
        == 2048
    )
    assert tuning.find_entry(tables, "quant_only", "bf16->int8", 3585, 16384) is None
    assert tuning._lookup(tag, "quant_only", "bf16->int8", 3585, 16384) == tuning.default_config(
        "quant_only", 3585, 16384
    )
    # A user cache folder wins over the shipped table.
    user = tmp_path / "cache"
    mine = {
        "quant_only|bf16->int8|3584|16384": {"config": {"ROWS": 1, "BLOCK": 4096, "num_warps": 8}}
    }
    tuning.save_entries(user / tuning.CACHE_FILE, tag, mine)
    tuning.use(cache_dir=user)
    assert tuning._lookup(tag, "quant_only", "bf16->int8", 3584, 16384)["BLOCK"] == 4096
    # Same GPU, other Python/CUDA: the shipped table still applies; another GPU: it does not.
    assert tuning.shipped_path("H100_cc90_py311_cu129_x86_64") is not None
    assert tuning.shipped_path("H200_cc90_py312_cu130_x86_64") is None


def test_save_refuses_another_gpus_table(tmp_path):
    path = tmp_path / "own" / "t.json"
    tuning.save_entries(path, "A_cc80_py311_cu129_x86_64", {})
    with pytest.raises(UserError, match="holds configs of"):
        tuning.save_entries(path, "B_cc90_py311_cu129_x86_64", {})
    assert [p.name for p in path.parent.iterdir()] == ["t.json"]  # no temp files left


def test_bad_tables_are_refused_and_skipped_at_lookup(tmp_path):
    path = tmp_path / tuning.CACHE_FILE
    path.write_text(json.dumps({"schema_version": 99, "gpu_tag": "X", "entries": {}}))
    with pytest.raises(UserError, match="schema version 99"):
        tuning.load_table(path)
    tuning.use(cache_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = tuning._lookup("X_cc90_py311_cu129_x86_64", "dequant_bias", "int32->bf16", 64, 16)
    assert config == tuning.default_config("dequant_bias", 64, 16)
    assert any("ignoring tuned configs" in str(w.message) for w in caught)
    path.write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        tuning.load_table(path)


def test_shipped_tables_are_well_formed():
    from pathlib import Path

    import slidesparse.kernels

    for path in (Path(slidesparse.kernels.__file__).parent / "tuned").glob("*.json"):
        table = tuning.load_table(path)
        assert path.stem == table["gpu_tag"]
        for key, record in table["entries"].items():
            kernel, _, size, bucket = key.split("|")
            assert record["config"] in tuning.config_space(kernel, int(size)), key
            assert tuning.m_bucket(int(bucket)) == int(bucket)


def test_bytes_moved_and_ideal_ratio():
    only = bench.make_case("quant_only", 16384, 3584, "bf16", "int8")
    assert only.bytes_moved() == 16384 * 3584 * 2 + 16384 * 3584 + 16384 * 4
    slid = bench.make_case("quant_slide", 16384, 3584, "bf16", "int8", "6:8")
    assert slid.pattern == "2_8" and slid.out_cols == sparsity.k_slide(3584, "2_8") == 5376
    assert slid.bytes_moved() / only.bytes_moved() == pytest.approx(3.5 / 3, rel=1e-3)
    deq = bench.make_case("dequant_bias", 4, 10, "int32", "bf16")
    assert deq.bytes_moved() == 4 * 10 * 4 + 4 * 10 * 2 + 16 + 40 + 20


def test_check_case_catches_a_single_flipped_bit(device):
    case = bench.make_case("quant_slide", 40, 64, "bf16", "int8", "2_4")
    inputs = bench.make_inputs(case, device)
    q, s = reference.quant_slide_ref(inputs[0], "2_4", "int8")
    assert bench.check_case(case, inputs, (q, s), rows_per_chunk=16)
    q[37, 5] ^= 1
    assert not bench.check_case(case, inputs, (q, s), rows_per_chunk=16)
    s2 = s.clone()
    s2[47] = 2.0  # a padded row's scale must be 1
    q[37, 5] ^= 1
    assert not bench.check_case(case, inputs, (q, s2), rows_per_chunk=16)


def test_bit_equal_nan_and_signed_zero():
    a = torch.tensor([float("nan"), 0.0, 1.0], dtype=torch.bfloat16)
    assert bench.bit_equal(a, a.clone())
    assert not bench.bit_equal(a, torch.tensor([float("nan"), -0.0, 1.0], dtype=torch.bfloat16))
    assert not bench.bit_equal(a, a.float())


def test_make_case_rejects_bad_input():
    with pytest.raises(UserError, match="unknown quant kernel"):
        bench.make_case("gemm", 16, 16, "bf16", "int8")
    with pytest.raises(UserError, match="positive integer"):
        bench.make_case("quant_only", 0, 16, "bf16", "int8")
    with pytest.raises(UserError, match="sparsity pattern"):
        bench.make_case("quant_slide", 16, 16, "bf16", "int8")
    with pytest.raises(UserError, match="accumulator"):
        bench.make_case("dequant_bias", 16, 16, "int8", "bf16")


def test_figures_that_break_a_bound_are_flagged_not_reported():
    from rich.console import Console

    from slidesparse.kernels.bench import flag_bounds, format_table

    def row(kernel, ratio=None, pct=90.0):
        extra = {"copy_gbps": 4000.0, "pct_of_copy": pct}
        if ratio is not None:
            extra.update(ratio_vs_quant_only=ratio, ideal_ratio=1.17)
        return {
            "kernel": kernel, "sparsity": "2_8", "dtype": "bf16", "out_dtype": "int8",
            "M": 16384, "K": 3584, "latency_us": 10.0, "latency_p25_us": 9.0,
            "latency_p75_us": 11.0, "gbps": 3600.0, "correct": True, "extra": extra,
        }  # fmt: skip

    good, slow_base, too_fast = (
        row("quant_slide", 1.15),
        row("quant_slide", 0.55),
        row("quant_only", pct=140.0),
    )
    assert flag_bounds(good) == [] and "suspect" not in good["extra"]
    assert "moves more bytes" in flag_bounds(slow_base)[0]
    assert "copy bandwidth" in flag_bounds(too_fast)[0]
    console = Console(width=300, record=True)
    console.print(format_table([good, slow_base, too_fast]))
    text = console.export_text()
    assert "(0.55)†" in text and "(140%)†" in text and "1.15 " in text
    assert "2 row(s) break a physical bound" in text


def test_a_launch_says_whether_its_config_was_tuned():
    table = tuning.empty_table("H200_cc90_py312_cu130_x86_64")
    key = tuning.make_key("quant_only", "bf16->int8", 4096, 1024)
    table["entries"][key] = {"config": {"ROWS": 1, "BLOCK": 4096, "num_warps": 8}}
    tables = (table,)
    assert tuning.config_source("quant_only", "bf16->int8", 4096, 1000, tables) == "tuned"
    assert tuning.config_source("quant_only", "bf16->int8", 4096, 9000, tables) == "nearest M"
    assert tuning.config_source("quant_only", "bf16->int8", 2048, 1024, tables) == "default"
    assert tuning.config_source("quant_only", "bf16->fp8", 4096, 1024, tables) == "default"


def test_untuned_launches_are_remembered(tmp_path):
    tuning.use(None, tmp_path)  # an empty cache folder: nothing tuned for this size
    try:
        tuning.config_for("quant_only", "bf16->int8", 1232, 48)
        key = tuning.make_key("quant_only", "bf16->int8", 1232, 48)
        assert tuning.untuned_launches().get(key) == "default"
    finally:
        tuning.use(None, None)


def test_tuner_ranks_configs_by_their_slow_tail():
    """A bimodal config with the lowest median loses to a steady one (the H200 case that made
    a shipped table 44% slow on the next run); ties fall to the median, then to order."""
    from slidesparse.kernels.autotune import RANKED_BY, pick

    bimodal, steady = {"GROUPS": 512, "num_warps": 4}, {"GROUPS": 256, "num_warps": 4}
    assert RANKED_BY == "p90"
    assert pick([(90.4, 57.6, bimodal), (62.5, 61.8, steady)])[2] == steady
    assert pick([(62.5, 61.9, bimodal), (62.5, 61.8, steady)])[2] == steady
    assert pick([(62.5, 61.8, bimodal), (62.5, 61.8, steady)])[2] == bimodal


def test_short_cases_are_timed_from_cuda_graphs():
    from slidesparse.core.timing import GRAPH_MAX_M
    from slidesparse.kernels.autotune import graphed

    assert graphed(16) and graphed(GRAPH_MAX_M) and not graphed(2 * GRAPH_MAX_M)
