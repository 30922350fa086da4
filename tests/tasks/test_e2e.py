"""Tasks e2e-prefill / e2e-decode: their cells, setup sharing, skips and modelled cost."""

import json
import re
import textwrap
from pathlib import Path

import pytest

from slidesparse.core.errors import Unsupported
from slidesparse.run.matrix import expand, parse_matrix
from slidesparse.tasks import TaskContext, get_task


def _cells(text: str):
    return expand(parse_matrix(textwrap.dedent(text), "test.yaml"))


def test_points_keep_only_meaningful_backend_dtype_pattern_combinations():
    cells = _cells(
        """
        blocks:
          - task: e2e-prefill
            axes: {model: Llama3.2-1B, dtype: [int8, fp8, bf16], backend: [engine, cutlass],
                   sparsity: [dense, 2_8], M: 512}
        """
    )
    got = {(c.params["dtype"], c.params["backend"], c.params["sparsity"]) for c in cells}
    assert got == {
        ("int8", "engine", "dense"),
        ("int8", "engine", "2_8"),
        ("int8", "cutlass", "dense"),
        ("fp8", "engine", "dense"),
        ("fp8", "engine", "2_8"),
        ("fp8", "cutlass", "dense"),
        ("bf16", "engine", "dense"),
    }


@pytest.mark.parametrize("backend", ["cublaslt", "cusparselt"])
def test_the_vllm_plugin_backends_are_gone(backend):
    from slidesparse.core.errors import UserError

    with pytest.raises(UserError, match="engine"):
        _cells(
            f"""
            blocks:
              - task: e2e-decode
                axes: {{model: Llama3.2-1B, dtype: int8, backend: {backend},
                        sparsity: dense, M: 64}}
            """
        )
    source = Path(__file__).parents[2] / "slidesparse"
    assert not any("vllm_plugin" in p.read_text() for p in source.rglob("*.py"))


def test_prefill_and_decode_of_one_engine_share_a_setup_group():
    from slidesparse.run.pool import _setup_groups

    cells = _cells(
        """
        blocks:
          - task: e2e-prefill
            axes: {model: Llama3.2-1B, dtype: int8, backend: engine, sparsity: [dense, 2_8],
                   M: [512, 1024]}
          - task: e2e-decode
            axes: {model: Llama3.2-1B, dtype: int8, backend: engine, sparsity: [dense, 2_8],
                   M: [64]}
          - task: noop
            axes: {count: 2}
        """
    )
    groups = _setup_groups(cells)
    assert len(groups) == 3  # dense engine, 2_8 engine, noop
    sizes = sorted(len(g) for g in groups.values())
    assert sizes == [2, 3, 3]
    for g in list(groups.values())[:2]:
        assert {c.task for c in g} == {"e2e-prefill", "e2e-decode"}


def test_engine_cells_skip_without_a_gpu_and_vllm_cells_without_vllm(tmp_path):
    ctx = TaskContext(device="cpu", gpu_tag="CPU_x", cache_dir=tmp_path)
    params = {"model": "Llama3.2-1B", "dtype": "int8", "sparsity": "2_8", "M": 512}
    with pytest.raises(Unsupported, match="no CUDA device"):
        get_task("e2e-prefill").fn({**params, "backend": "engine"}, ctx)
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(Unsupported, match="vLLM is not installed"):
            get_task("e2e-decode").fn({**params, "sparsity": "dense", "backend": "cutlass"}, ctx)


def test_linear_backend_follows_dtype_and_pattern():
    from slidesparse.tasks.e2e import linear_backend

    assert linear_backend("bf16", "dense") == "bf16"
    assert linear_backend("int8", "dense") == "w8a8"
    assert linear_backend("fp8", "2_10") == "slidesparse"


def test_cost_model_grows_with_M_and_setup_is_counted_once_per_engine():
    spec = get_task("e2e-prefill")
    p = {"model": "Qwen2.5-7B", "dtype": "int8", "backend": "engine", "sparsity": "2_8"}
    setups, cells = zip(*(spec.cost({**p, "M": m}) for m in (512, 8192, 65536)), strict=True)
    assert len(set(setups)) == 1 and list(cells) == sorted(cells) and cells[0] > 0
    assert spec.cost({**p, "backend": "cutlass", "sparsity": "dense", "M": 512}) is None
    dec = get_task("e2e-decode").cost({**p, "M": 64})
    assert dec[1] > cells[0]  # 4 requests x 256 steps outweigh a few prefill forwards


def test_plan_estimates_a_fresh_gpu_from_the_cost_model(tmp_path, monkeypatch, capsys):
    from slidesparse.cli import main

    machine = tmp_path / "machine.json"
    record = {"gpu_tag": "H100_cc90_py312_cu129_x86_64", "cc": [9, 0], "gpu_count": 1}
    machine.write_text(json.dumps({**record, "memory_bytes": 80 * 2**30}))
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        textwrap.dedent(
            """
            blocks:
              - task: e2e-prefill
                axes: {model: Llama3.2-1B, dtype: int8, backend: engine,
                       sparsity: [dense, 2_8], M: [1024, 4096]}
              - task: noop
                axes: {count: 2}
            """
        )
    )
    monkeypatch.setenv("SLIDESPARSE_RESULTS", str(tmp_path / "results"))
    code = main(["plan", "--preset", str(matrix), "--machine", str(machine)])
    out = capsys.readouterr().out
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("estimated time:"))
    assert re.search(
        r"\(4 cells from the cost model, good to about 2x: \S+-\S+; \+2 cells without", line
    ), line
    assert not (tmp_path / "results").exists()  # plan only reads


def test_a_checkpoint_folder_is_a_model_of_the_e2e_cells(tmp_path):
    from slidesparse.run.rules import load_rules, predicted_bytes

    folder = tmp_path / "ckpt"
    folder.mkdir()
    cfg = {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "tie_word_embeddings": True,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(cfg))
    cells = _cells(
        f"""
        blocks:
          - task: e2e-prefill
            axes: {{model: [{folder}, Llama3.2-1B], dtype: int8, backend: engine,
                    sparsity: 2_8, M: 4096}}
        """
    )
    by_model = {c.params["model"]: c for c in cells}
    assert str(folder.resolve()) in by_model  # kept as an absolute path
    rules = load_rules()
    # the folder has Llama3.2-1B's shapes: the same memory and cost predictions
    a, b = by_model[str(folder.resolve())], by_model["Llama3.2-1B"]
    assert predicted_bytes(a, rules) == predicted_bytes(b, rules)
    spec = get_task("e2e-prefill")
    assert spec.cost(a.params) == spec.cost(b.params)
    from slidesparse.core.errors import UserError

    with pytest.raises(UserError, match="unknown model '/no/such/folder'"):
        _cells(
            """
            blocks:
              - task: e2e-decode
                axes: {model: /no/such/folder, dtype: int8, backend: engine,
                       sparsity: dense, M: 64}
            """
        )
