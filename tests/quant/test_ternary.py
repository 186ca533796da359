"""SPEC section 1 quantizers, against the formulas written out plainly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mote_convert.errors import TernaryInputError
from mote_convert.quant import absmean_scale, activation_quant, fixed_point_latent, ternarize
from tests.helpers import spec_gamma

weights = st.builds(
    lambda r, c, s, scale: torch.randn(r, c, generator=torch.Generator().manual_seed(s)) * scale,
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(0, 2**31 - 1),
    st.sampled_from([1e-7, 1e-3, 1.0, 50.0]),
)


@settings(max_examples=150, deadline=None)
@given(weights)
def test_ternarize_matches_spec(w: torch.Tensor) -> None:
    codes, gamma = ternarize(w)
    ref_gamma = spec_gamma(w)
    ref_codes = torch.clamp(torch.round(w.float() / ref_gamma), -1, 1)
    assert gamma.dtype == torch.float32 and torch.equal(gamma, ref_gamma)
    assert codes.dtype == torch.int8 and torch.equal(codes.float(), ref_codes)
    assert set(codes.unique().tolist()) <= {-1, 0, 1}


def test_round_half_to_even_and_scale_floor() -> None:
    w = torch.tensor([[0.5, -0.5, 1.5, -1.5, 0.0, 3.0]])
    gamma = absmean_scale(w)
    assert gamma.item() == pytest.approx(7.0 / 6.0)
    assert absmean_scale(torch.zeros(2, 2)).item() == pytest.approx(1e-5)
    codes, _ = ternarize(torch.tensor([[1.0, -1.0, 3.0, -3.0]]) * 0.5)  # gamma = 1: W/gamma = +-0.5, +-1.5
    assert codes.tolist() == [[0, 0, 1, -1]]


def test_ternarize_never_writes_its_input() -> None:
    w = torch.randn(8, 8)
    before = w.clone()
    ternarize(w)
    absmean_scale(w)
    assert torch.equal(w, before)


def test_ternarize_rejects_bad_input() -> None:
    with pytest.raises(TernaryInputError, match="floating"):
        ternarize(torch.zeros(2, 2, dtype=torch.int32))
    with pytest.raises(TernaryInputError, match="2-D"):
        ternarize(torch.zeros(2))


@settings(max_examples=100, deadline=None)
@given(weights)
def test_fixed_point_latent_requantizes_to_same_codes(w: torch.Tensor) -> None:
    codes, gamma = ternarize(w)
    latent = fixed_point_latent(codes, gamma)
    codes2, gamma2 = ternarize(latent)
    assert torch.equal(codes2, codes)
    if codes.any():
        torch.testing.assert_close(gamma2, gamma, rtol=1e-6, atol=0)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_activation_quant_matches_spec(tokens: int, dim: int, seed: int) -> None:
    x = torch.randn(tokens, dim, generator=torch.Generator().manual_seed(seed)) * 3
    x_q, s_x = activation_quant(x)
    ref_s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    ref_q = torch.clamp(torch.round(x * ref_s), -128, 127)
    assert torch.equal(s_x, ref_s) and torch.equal(x_q, ref_q)
    assert x_q.abs().max() <= 127
