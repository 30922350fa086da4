"""Matrix files: validation, expansion, cell ids, shards, per-GPU skip rules."""

from __future__ import annotations

import json
import textwrap
from collections import Counter

import pytest
from machines import make_machine

from slidesparse.core.errors import UserError
from slidesparse.run.matrix import (
    cell_id,
    expand,
    load_matrix,
    load_yaml,
    parse_matrix,
    parse_shard,
    preset_names,
    shard,
)
from slidesparse.run.rules import apply_rules, load_rules, predicted_bytes
from slidesparse.tasks import get_task

CPU = make_machine("CPU_test")
A100 = make_machine("A100_cc80_py312_cu129_x86_64", (8, 0), 80 * 2**30)
H100 = make_machine("H100_cc90_py312_cu129_x86_64", (9, 0), 80 * 2**30)
RTX5080 = make_machine("RTX5080_cc120_py312_cu129_x86_64", (12, 0), 16 * 2**30)


def _cells(text: str):
    return expand(parse_matrix(textwrap.dedent(text), "test.yaml"))


def test_presets_ship_and_load():
    assert {"smoke", "paper"} <= set(preset_names())
    for name in preset_names():
        matrix, source = load_matrix(name)
        assert source == name and matrix.blocks
        cells = expand(matrix)
        assert len({c.cell_id for c in cells}) == len(cells)


def test_paper_matrix_covers_section_7():
    cells = expand(load_matrix("paper")[0])
    by_task = Counter(c.task for c in cells)
    gemm = [c for c in cells if c.task == "kernel-gemm"]
    model = [c for c in gemm if c.params["mode"] == "model"]
    # 5 models x 4 layers x (dense + 8 patterns) x 2 dtypes x 9 M, once on cuBLASLt +
    # cuSPARSELt and once on CUTLASS (dense + 2:4)
    assert len(model) == 2 * 5 * 4 * 9 * 2 * 9
    square = [c for c in gemm if c.params["mode"] == "square"]
    assert len(square) == 9 * 5 * 9 + 9 * 2 * 9  # all five dtypes; CUTLASS's INT8 and FP8
    assert all(c.params["M"] == c.params["N"] == c.params["K"] for c in square)
    dense = {c.params["backend"] for c in gemm if c.params["sparsity"] == "dense"}
    assert dense == {"cublaslt", "cutlass"}  # the reports take the faster per shape
    assert {c.params["dtype"] for c in gemm if c.params["backend"] == "cutlass"} == {"int8", "fp8"}
    # 4 models x (INT8/FP8 x (engine dense + vLLM dense + 4 patterns) + bf16 engine) x M
    assert by_task["e2e-prefill"] == 4 * (2 * (2 + 4) + 1) * 8
    assert by_task["e2e-decode"] == 4 * (2 * (2 + 4) + 1) * 4
    e2e = [c for c in cells if c.task.startswith("e2e-")]
    assert {c.params["backend"] for c in e2e if c.params["sparsity"] != "dense"} == {"engine"}
    assert {c.params["sparsity"] for c in e2e if c.params["dtype"] == "bf16"} == {"dense"}
    prefill = next(c for c in cells if c.task == "e2e-prefill")
    assert set(prefill.params) == {"model", "dtype", "backend", "sparsity", "M"}
    layer = next(
        c for c in model if c.params["model"] == "Qwen2.5-7B" and c.params["layer"] == "down"
    )
    assert (layer.params["N"], layer.params["K"]) == (3584, 18944)
    assert by_task["kernel-quant"] > 0 and by_task["tune"] > 0


def test_smoke_has_cpu_cells_and_gpu_cells():
    cells = expand(load_matrix("smoke")[0])
    cpu = [c for c in cells if not c.needs_gpu]
    gemm = [c for c in cpu if c.task == "kernel-gemm"]
    assert gemm and all(c.params["backend"] == "cpu-ref" for c in gemm)
    assert all(c.params["N"] <= 4096 and c.params["M"] <= 512 for c in gemm)
    # Square cells are square: M = N = K (the report's square tables are keyed by M).
    square = [c for c in cells if c.task == "kernel-gemm" and c.params["mode"] == "square"]
    assert all(c.params["M"] == c.params["N"] == c.params["K"] for c in square)
    # Small quant-kernel cells run under the Triton interpreter; the GPU-size ones do not.
    quant = [c for c in cells if c.task == "kernel-quant"]
    assert 12 <= sum(not c.needs_gpu for c in quant) <= 16
    assert any(c.needs_gpu for c in quant)
    assert {c.task for c in cpu} == {"kernel-gemm", "kernel-quant"}
    assert {c.task for c in cells} == {"kernel-gemm", "kernel-quant", "e2e-prefill", "e2e-decode"}


def test_yaml_keeps_pattern_names_as_strings():
    assert load_yaml("[2_4, 6:8, 2_inf, 12, 1.5]") == ["2_4", "6:8", "2_inf", 12, 1.5]
    cells = _cells(
        """
        blocks:
          - task: kernel-gemm
            axes: {mode: square, backend: cpu-ref, dtype: int8, sparsity: [6:8, 2_4], M: 64}
        """
    )
    assert [c.params["sparsity"] for c in cells] == ["2_8", "2_4"]


def test_cell_id_is_stable_and_defined_by_the_parameters():
    params = {"mode": "square", "M": 64, "N": 64, "K": 64, "dtype": "int8"}
    assert cell_id("kernel-gemm", params) == cell_id("kernel-gemm", dict(reversed(params.items())))
    assert cell_id("kernel-gemm", params) != cell_id("kernel-gemm", {**params, "M": 128})
    assert cell_id("kernel-gemm", params) != cell_id("kernel-quant", params)
    first = [c.cell_id for c in expand(load_matrix("smoke")[0])]
    assert first == [c.cell_id for c in expand(load_matrix("smoke")[0])]


def test_target_spread_is_set_per_matrix_or_block_and_is_no_part_of_the_cell_id():
    text = """
        target_spread: 0.05
        blocks:
          - task: noop
            axes: {action: ok, index: [0]}
          - task: noop
            target_spread: 0.2
            axes: {action: ok, index: [1]}
    """
    cells = _cells(text)
    assert [c.target_spread for c in cells] == [0.05, 0.2]
    plain = _cells(text.replace("target_spread: 0.05", "").replace("target_spread: 0.2", ""))
    assert [c.target_spread for c in plain] == [None, None]
    assert [c.cell_id for c in cells] == [c.cell_id for c in plain]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("target_spread: 0\nblocks: [{task: noop}]", "test.yaml: target_spread: Input should be"),
        ("blocks: [{task: noop, target_spread: 1.5}]", "blocks.0.target_spread: Input should be"),
    ],
)
def test_a_target_spread_outside_0_1_is_a_user_error(text, where):
    with pytest.raises(UserError, match=where):
        parse_matrix(text, "test.yaml")


def test_backends_pair_only_with_sparsities_they_implement():
    cells = _cells(
        """
        blocks:
          - task: kernel-gemm
            axes:
              mode: [square]
              backend: [cublaslt, cusparselt, cpu-ref]
              dtype: [int8]
              sparsity: [dense, 2_8]
              M: [64]
        """
    )
    pairs = {(c.params["backend"], c.params["sparsity"]) for c in cells}
    assert pairs == {
        ("cublaslt", "dense"),
        ("cusparselt", "2_8"),
        ("cpu-ref", "dense"),
        ("cpu-ref", "2_8"),
    }


MALFORMED = {
    "yaml syntax": ("blocks: [ {task: noop", "YAML syntax error"),
    "unknown top key": ("blokcs: []", "blokcs: unknown key"),
    "unknown axis": (
        "blocks: [{task: noop, axes: {actoin: [ok]}}]",
        "blocks.0.axes.actoin: unknown key",
    ),
    "bad dtype": (
        "blocks: [{task: kernel-gemm, axes: {mode: square, backend: cpu-ref, dtype: [int9],"
        " sparsity: dense, M: 64}}]",
        "blocks.0.axes.dtype.0: Input should be 'fp16', 'bf16', 'int8', 'fp8' or 'fp4'",
    ),
    "bad sparsity": (
        "blocks: [{task: kernel-gemm, axes: {mode: square, backend: cpu-ref, dtype: int8,"
        " sparsity: [2_7], M: 64}}]",
        "blocks.0.axes.sparsity.0: Value error, bad sparsity '2_7'",
    ),
    "empty axis": (
        "blocks: [{task: kernel-gemm, axes: {mode: square, backend: cpu-ref, dtype: int8,"
        " sparsity: dense, M: []}}]",
        "blocks.0.axes.M: empty axis: give at least one value",
    ),
    "wrong type": (
        "blocks: [{task: kernel-gemm, axes: {mode: square, backend: cpu-ref, dtype: int8,"
        " sparsity: dense, M: [big]}}]",
        "blocks.0.axes.M.0: Input should be a valid integer",
    ),
    "unknown task": ("blocks: [{task: kernel-gem, axes: {}}]", "'kernel-gemm'"),
    "unknown model": (
        "blocks: [{task: e2e-prefill, axes: {model: Llama9, dtype: int8, backend: cutlass,"
        " sparsity: dense, M: 512}}]",
        "unknown model 'Llama9'",
    ),
    "not a mapping": ("- 1\n- 2\n", "a matrix file is a mapping"),
    "no blocks": ("description: nothing", "blocks: required key is missing"),
    "nothing to run": (
        "blocks: [{task: kernel-gemm, axes: {mode: square, backend: cublaslt, dtype: int8,"
        " sparsity: 2_8, M: 64}}]",
        "expands to no cells",
    ),
    "model mode without model": (
        "blocks: [{task: kernel-gemm, axes: {mode: model, backend: cpu-ref, dtype: int8,"
        " sparsity: dense, M: 64}}]",
        "mode 'model' needs a 'model' axis",
    ),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_matrix_is_a_user_error_naming_file_and_key(kind):
    text, expected = MALFORMED[kind]
    with pytest.raises(UserError) as info:
        parse_matrix(text, "bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml"), message
    assert expected in message, message
    assert "\n" not in message


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"unknown preset 'smoek'; presets: .*smoke"):
        load_matrix("smoek")
    with pytest.raises(UserError, match="does not exist"):
        load_matrix(str(tmp_path / "nope.yaml"))


def test_folder_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    (tmp_path / "smoke").mkdir()  # e.g. a results folder
    monkeypatch.chdir(tmp_path)
    _, source = load_matrix("smoke")
    assert source == "smoke"


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_shards_are_disjoint_and_cover_the_matrix(count):
    cells = expand(load_matrix("paper")[0])
    shards = [shard(cells, i, count) for i in range(count)]
    ids = [c.cell_id for s in shards for c in s]
    assert len(ids) == len(set(ids)) == len(cells)
    assert shards == [shard(cells, i, count) for i in range(count)]  # deterministic
    # A task's shard group (its shard key, else everything but M) never straddles shards:
    # a sparse GEMM cell finds its dense baseline cells in its own shard, and an engine's
    # prefill cells its decode cells.
    owner: dict[str, int] = {}
    for i, s in enumerate(shards):
        for c in s:
            key = get_task(c.task).shard_key(c.params) or c.group_key
            assert owner.setdefault(key, i) == i
    where = {c.cell_id: i for i, s in enumerate(shards) for c in s}
    by_params = {(c.task, json.dumps(c.params, sort_keys=True)): c for c in cells}
    twins = 0
    for c in cells:
        if c.task == "kernel-gemm" and c.params["sparsity"] != "dense":
            dense = {**c.params, "sparsity": "dense", "backend": "cublaslt"}
            twin = by_params.get(("kernel-gemm", json.dumps(dense, sort_keys=True)))
            if twin is not None:
                twins += 1
                assert where[twin.cell_id] == where[c.cell_id]
        if c.task == "e2e-prefill" and c.params["backend"] == "engine":
            decode = by_params.get(
                ("e2e-decode", json.dumps({**c.params, "M": 64}, sort_keys=True))
            )
            if decode is not None:
                assert where[decode.cell_id] == where[c.cell_id]
    assert twins > 1000
    if count > 1:
        assert all(shards)  # every shard has work on the paper matrix


def test_shard_parsing():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


def test_cpu_machine_skips_gpu_cells_with_no_cuda_device():
    cells = apply_rules(expand(load_matrix("smoke")[0]), CPU, load_rules())
    for c in cells:
        if c.needs_gpu and c.task == "kernel-quant":
            assert c.skip_reason == "no CUDA device (too large for the Triton interpreter on CPU)"
        elif c.needs_gpu:
            assert c.skip_reason == "no CUDA device", c.describe()
        else:
            assert c.skip_reason is None


def test_gpu_machine_skips_the_cpu_reference():
    cells = apply_rules(expand(load_matrix("smoke")[0]), H100, load_rules())
    cpu_ref = [c for c in cells if c.params.get("backend") == "cpu-ref"]
    assert cpu_ref and all("without a GPU" in (c.skip_reason or "") for c in cpu_ref)
    gpu = [c for c in cells if c.params.get("backend") in ("cublaslt", "cusparselt")]
    assert gpu and all(c.skip_reason is None for c in gpu)


def test_capability_rules_skip_dtypes_the_gpu_lacks():
    cells = _cells(
        """
        blocks:
          - task: kernel-gemm
            axes: {mode: square, backend: [cublaslt, cusparselt], dtype: [int8, fp8, fp4],
                   sparsity: [dense, 2_4], M: 1024}
        """
    )
    a100 = {
        (c.params["dtype"], c.params["sparsity"]): c.skip_reason
        for c in apply_rules(cells, A100, load_rules())
    }
    assert a100[("int8", "dense")] is None and a100[("int8", "2_4")] is None
    assert "fp8" in a100[("fp8", "dense")] and "8.0" in a100[("fp8", "dense")]
    assert "fp4" in a100[("fp4", "2_4")]
    h100 = {
        (c.params["dtype"], c.params["sparsity"]): c.skip_reason
        for c in apply_rules(cells, H100, load_rules())
    }
    assert h100[("fp8", "2_4")] is None and h100[("fp4", "dense")] is not None


def test_memory_rule_skips_what_cannot_fit_with_predicted_bytes():
    # The seeds' 16 GB RTX 5080: Qwen2.5-14B never fit, Llama3.2-1B ran, Qwen2.5-7B lost its
    # large-M prefill cells. The engine holds every decode sequence at once (no paged
    # cache that queues requests), so its large-batch decode cells are judged on that.
    cells = _cells(
        """
        blocks:
          - task: e2e-prefill
            axes: {model: [Llama3.2-1B, Qwen2.5-7B, Qwen2.5-14B], dtype: int8,
                   backend: engine, sparsity: [dense, 2_10], M: [512, 16384, 65536]}
          - task: e2e-decode
            axes: {model: [Llama3.2-1B, Qwen2.5-7B, Qwen2.5-14B], dtype: [int8, bf16],
                   backend: engine, sparsity: [dense, 2_10], M: [64, 512]}
        """
    )
    rules = load_rules()
    ruled = apply_rules(cells, RTX5080, rules)
    judged = {
        (c.task, c.params["model"], c.params["dtype"], c.params["sparsity"], c.params["M"]): (
            c.skip_reason
        )
        for c in ruled
    }
    usable = 16 * 2**30 * rules.usable_memory_fraction
    for key, reason in judged.items():
        if key[1] == "Qwen2.5-14B":
            assert reason is not None and "predicted memory" in reason, key
        if key[1] == "Llama3.2-1B" and key[4] <= 16384:
            assert reason is None, key
    for c in ruled:  # the verdict is exactly the prediction against the usable share
        assert (predicted_bytes(c, rules) <= usable) == (c.skip_reason is None), c
    assert judged[("e2e-prefill", "Qwen2.5-7B", "int8", "dense", 512)] is None
    assert judged[("e2e-prefill", "Qwen2.5-7B", "int8", "dense", 65536)] is not None
    assert judged[("e2e-decode", "Qwen2.5-7B", "int8", "dense", 64)] is None
    assert judged[("e2e-decode", "Qwen2.5-7B", "int8", "2_10", 512)] is not None
    # bf16 weights are twice the bytes: the bf16 reference of a 7B model does not fit.
    assert judged[("e2e-decode", "Qwen2.5-7B", "bf16", "dense", 64)] is not None
    # An 80 GB card runs all of them.
    assert all(c.skip_reason is None for c in apply_rules(cells, H100, rules))
    reason = judged[("e2e-prefill", "Qwen2.5-14B", "int8", "dense", 512)]
    assert "bytes" in reason and "GiB" in reason


def test_engine_memory_grows_with_M_batch_and_the_int32_accumulator():
    from slidesparse.core.models import get_model
    from slidesparse.engine.sizing import engine_bytes, linear_bytes

    spec = get_model("Qwen2.5-7B")
    pre = [engine_bytes(spec, "int8", "dense", "prefill", m, 0) for m in (512, 4096, 32768)]
    assert pre == sorted(pre) and len(set(pre)) == 3
    dec = [engine_bytes(spec, "fp8", "2_8", "decode", m, 0) for m in (64, 128, 512)]
    assert dec == sorted(dec)
    # INT8 GEMMs write INT32, FP8 bf16: a large INT8 prefill needs more.
    assert engine_bytes(spec, "int8", "dense", "prefill", 32768, 0) > engine_bytes(
        spec, "fp8", "dense", "prefill", 32768, 0
    )
    # Compressed slid weights: 2:4 halves them, the slide grows K by 2(L-2)/L.
    dense = linear_bytes(spec, "int8", "dense")
    assert linear_bytes(spec, "int8", "2_4") < dense < linear_bytes(spec, "int8", "2_inf")
    assert linear_bytes(spec, "bf16", "dense") == 2 * dense


def test_gemm_memory_prediction_grows_with_the_slid_copies():
    cells = _cells(
        """
        blocks:
          - task: kernel-gemm
            axes: {mode: square, backend: [cublaslt, cusparselt], dtype: int8,
                   sparsity: [dense, 2_4, 2_8, 2_inf], M: 16384}
        """
    )
    rules = load_rules()
    sizes = [predicted_bytes(c, rules) for c in cells]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_kernel_cell_ids_are_those_of_stores_written_by_earlier_versions():
    # Sorted kernel-level cell ids of each shipped preset, hashed, as the code before the
    # restructure expanded them (and checked again when the e2e cells moved to the engine,
    # which redefined only those): a store written then resumes now with nothing re-run.
    # Cells of backends added since (CUTLASS) are new cells beside them.
    import hashlib
    import json
    from pathlib import Path

    before = json.loads((Path(__file__).parent / "kernel_cell_ids.json").read_text())
    for preset, want in before.items():
        cells = expand(load_matrix(preset)[0])
        old = [
            c for c in cells if (c.params.get("backend") or "") not in ("cutlass", "cutlass-sparse")
        ]
        ids = sorted(c.cell_id for c in old if not c.task.startswith("e2e-"))
        assert len(ids) == want["count"], preset
        assert hashlib.sha256("\n".join(ids).encode()).hexdigest() == want["sha256"], preset
