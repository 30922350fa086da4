"""The dtype vocabulary: spellings, byte widths, torch storage types."""

from __future__ import annotations

import pytest

from slidesparse.core.dtypes import BYTES, DTYPES, dtype_name, parse_dtype, torch_dtype
from slidesparse.core.errors import UserError


def test_parse_dtype():
    assert parse_dtype("BF16") == "bf16" and parse_dtype("e4m3") == "fp8"
    with pytest.raises(UserError, match="valid dtypes: fp16, bf16, int8, fp8, fp4"):
        parse_dtype("fp64")


def test_every_dtype_has_a_width_and_round_trips_through_torch():
    for name in (*DTYPES, "int32", "fp32"):
        assert BYTES[name] > 0
        if name != "fp4":
            assert dtype_name(torch_dtype(name)) == name
            assert torch_dtype(name).itemsize == BYTES[name]
    with pytest.raises(UserError, match="unknown dtype"):
        torch_dtype("fp64")
