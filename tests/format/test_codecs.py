"""The expert-codec registry: specs from headers, encode / decode, and the formats it covers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mote_convert.errors import FormatError
from mote_convert.format import CODECS, ExpertFormat, codec_of_suffix, get_codec
from mote_convert.quant.ternary import ternarize


def test_every_format_has_a_codec_and_suffixes_are_unique() -> None:
    assert set(CODECS) == set(ExpertFormat)
    suffixes = [s for codec in CODECS.values() for s in codec.suffixes]
    assert len(suffixes) == len(set(suffixes))
    assert codec_of_suffix("weight_scale") is get_codec("packed-2bit") and codec_of_suffix("bias") is None
    with pytest.raises(FormatError, match="known: packed-2bit, latent"):
        get_codec("int4")


@settings(max_examples=40, deadline=None)
@given(out=st.integers(1, 33), inp=st.integers(1, 17), seed=st.integers(0, 2**16))
def test_encode_matches_parts_and_decodes_to_the_same_codes(out: int, inp: int, seed: int) -> None:
    weight = torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)
    codes, gamma = ternarize(weight)
    for codec in CODECS.values():
        parts = codec.encode(weight)
        specs = {p.suffix: p for p in codec.parts("BF16", (out, inp))}
        assert set(parts) == set(specs)
        for suffix, tensor in parts.items():
            assert tuple(tensor.shape) == specs[suffix].shape
            assert tensor.numel() * tensor.element_size() == specs[suffix].nbytes
        # decoding gives a latent weight that quantizes to the same codes (packed: also the same gamma)
        again, g = ternarize(codec.decode(parts, out))
        assert torch.equal(again, codes)
        if codec.format is ExpertFormat.PACKED_2BIT:
            assert torch.equal(parts[codec.scale][0], gamma) and torch.allclose(g, gamma, rtol=1e-6)
        stats = codec.code_stats(parts, out)
        assert (stats.minus, stats.zero, stats.plus) == tuple(int((codes == t).sum()) for t in (-1, 0, 1))


def test_weight_params() -> None:
    packed, latent = get_codec("packed-2bit"), get_codec("latent")
    assert packed.weight_params("weight_packed", (3, 10), 9) == 90  # logical rows, not 4 * 3
    assert packed.weight_params("weight_scale", (1,), 9) == 0
    assert latent.weight_params("weight", (9, 10), 9) == 90
