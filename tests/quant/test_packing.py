"""2-bit packing: exact inverses, the SPEC layout, transformers' BitNet pair as the oracle."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.integrations.bitnet import pack_weights, unpack_weights

from mote_convert.errors import TernaryInputError
from mote_convert.quant import code_counts, pack_ternary, packed_rows, quantize_pack, ternarize, unpack_ternary

# transformers compiles unpack_weights with torch.compile; the plain function is the same oracle
# without a C++ build in every test run.
hf_unpack = getattr(unpack_weights, "_torchdynamo_orig_callable", unpack_weights)


@st.composite
def ternary_codes(draw: st.DrawFn) -> torch.Tensor:
    rows = draw(st.integers(1, 37))
    cols = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 2, (rows, cols), generator=g, dtype=torch.int8)


@settings(max_examples=200, deadline=None)
@given(ternary_codes())
def test_unpack_inverts_pack(codes: torch.Tensor) -> None:
    packed = pack_ternary(codes)
    assert packed.dtype == torch.uint8
    assert packed.shape == (packed_rows(codes.shape[0]), codes.shape[1])
    assert torch.equal(unpack_ternary(packed, codes.shape[0]), codes)


@settings(max_examples=200, deadline=None)
@given(ternary_codes())
def test_layout_matches_transformers_bitnet(codes: torch.Tensor) -> None:
    packed = pack_ternary(codes)
    decoded = hf_unpack(packed, dtype=torch.float32)[: codes.shape[0]]
    assert torch.equal(decoded, codes.float())
    assert torch.equal(pack_weights(codes.clone().to(torch.int64)), packed)


def test_layout_bits_by_hand() -> None:
    # rows 0..5 with R = 2: row j*R + r sits in bits 2j..2j+1 of packed row r; code = t + 1.
    codes = torch.tensor([[-1], [0], [1], [1], [0], [-1]], dtype=torch.int8)
    packed = pack_ternary(codes)
    assert packed.tolist() == [[0b00_01_10_00], [0b00_00_10_01]]


@settings(max_examples=50, deadline=None)
@given(ternary_codes())
def test_every_code_in_range_and_padding_zero(codes: torch.Tensor) -> None:
    packed = pack_ternary(codes)
    rows = codes.shape[0]
    planes = [(packed >> (2 * j)) & 3 for j in range(4)]
    assert all(int(p.max()) <= 2 for p in planes)
    flat = torch.cat(planes)  # row j*R + r
    assert bool((flat[rows:] == 0).all())  # padding rows are bits 00


def test_pack_rejects_bad_input() -> None:
    with pytest.raises(TernaryInputError, match=r"\{-1, 0, 1\}"):
        pack_ternary(torch.tensor([[2, 0]], dtype=torch.int8))
    with pytest.raises(TernaryInputError, match="integer dtype"):
        pack_ternary(torch.zeros(4, 4))
    with pytest.raises(TernaryInputError, match="2-D"):
        pack_ternary(torch.zeros(4, dtype=torch.int8))


def test_unpack_rejects_bad_input() -> None:
    with pytest.raises(TernaryInputError, match="uint8"):
        unpack_ternary(torch.zeros(1, 4, dtype=torch.int8), 4)
    with pytest.raises(TernaryInputError, match="rows"):
        unpack_ternary(torch.zeros(2, 4, dtype=torch.uint8), 4)
    with pytest.raises(TernaryInputError, match="0b11"):
        unpack_ternary(torch.full((1, 4), 0b11, dtype=torch.uint8), 4)
    with pytest.raises(TernaryInputError, match="2-D"):
        unpack_ternary(torch.zeros(4, dtype=torch.uint8), 4)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 70),
    st.integers(1, 40),
    st.integers(0, 2**31 - 1),
    st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
)
def test_quantize_pack_equals_ternarize_then_pack(rows: int, cols: int, seed: int, dtype: torch.dtype) -> None:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)).to(dtype)
    codes, gamma = ternarize(w)
    workspace = torch.full((rows * cols + 5,), float("nan"))
    for chunk in (1, 7, 1 << 18):  # block boundaries and a reused workspace must not change a bit
        for ws in (None, workspace):
            packed, g2 = quantize_pack(w, chunk_elements=chunk, workspace=ws)
            assert torch.equal(g2, gamma)
            assert torch.equal(packed, pack_ternary(codes))


@settings(max_examples=100, deadline=None)
@given(ternary_codes())
def test_code_counts_match_the_codes(codes: torch.Tensor) -> None:
    counts, padding = code_counts(pack_ternary(codes), codes.shape[0])
    assert counts == [int((codes == t).sum()) for t in (-1, 0, 1)] + [0]
    assert padding == 0


def test_code_counts_report_invalid_codes_and_dirty_padding() -> None:
    codes = torch.zeros(6, 3, dtype=torch.int8)  # R = 2: planes 0..2 real (rows 0-5), plane 3 padding
    packed = pack_ternary(codes)
    packed[0, 0] |= 0b11 << 2  # row 2 (plane 1, packed row 0) -> 0b11
    packed[1, 2] |= 0b10 << 6  # plane 3 is padding (rows 6, 7)
    counts, padding = code_counts(packed, 6)
    assert counts == [0, 17, 0, 1]
    assert padding == 1
    with pytest.raises(TernaryInputError):
        code_counts(packed, 9)
