"""Model registry shapes and HF config reading."""

from __future__ import annotations

import json

import pytest

from slidesparse.core.errors import UserError
from slidesparse.core.models import MODELS, get_model, model_from_hf_config, resolve_model

# docs/method.md, "Models": (qkv, o, gate_up, down) as (N, K), layers.
TABLE = {
    "Llama3.2-1B": (((3072, 2048), (2048, 2048), (16384, 2048), (2048, 8192)), 16),
    "Llama3.2-3B": (((5120, 3072), (3072, 3072), (16384, 3072), (3072, 8192)), 28),
    "Qwen2.5-7B": (((4608, 3584), (3584, 3584), (37888, 3584), (3584, 18944)), 28),
    "Qwen2.5-14B": (((7168, 5120), (5120, 5120), (27648, 5120), (5120, 13824)), 48),
    "BitNet-2B": (((3840, 2560), (2560, 2560), (13824, 2560), (2560, 6912)), 30),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_builtin_shapes(name):
    shapes, layers = TABLE[name]
    m = get_model(name)
    assert tuple(m.layers.values()) == shapes and m.num_layers == layers
    assert tuple(m.layers) == ("qkv", "o", "gate_up", "down")


def test_lookup_aliases_and_errors():
    assert get_model("qwen2.5-7b-int8").name == "Qwen2.5-7B"
    assert get_model("Llama3.2-1B-Instruct").name == "Llama3.2-1B"
    with pytest.raises(UserError, match=r"built-in models: Llama3\.2-1B"):
        get_model("GPT-5")


def test_param_counts_are_plausible():
    assert 7.0e9 < MODELS["Qwen2.5-7B"].params < 8.0e9
    assert 14e9 < MODELS["Qwen2.5-14B"].params < 15.5e9
    assert 1.1e9 < MODELS["Llama3.2-1B"].params < 1.4e9


def test_hf_config(tmp_path):
    cfg = {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
    }
    d = tmp_path / "my-qwen"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    m = resolve_model(str(d))
    assert m.name == "my-qwen" and m.layers == get_model("Qwen2.5-7B").layers


def test_hf_config_errors(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        model_from_hf_config(bad)
    bad.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(UserError, match="missing intermediate_size"):
        model_from_hf_config(bad)
    with pytest.raises(UserError, match=r"no such config\.json"):
        model_from_hf_config(tmp_path / "nope.json")
