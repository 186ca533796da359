"""The train-mode linear's autograd function against the method written out with plain autograd."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mote_convert.kernels import absmean_scale, quantize_pack, ternary_codes, ternary_linear
from mote_convert.quant.ste import ternary_linear_ste
from mote_convert.quant.ternary import absmean_scale as reference_gamma
from mote_convert.quant.ternary import activation_quant


def _oracle(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """out = x_dq @ W_dq^T with both quantizers the identity in the backward (STE), by detach tricks."""
    gamma = reference_gamma(w)
    x32, w32 = x.to(torch.float32), w.to(torch.float32)
    x_q, s_x = activation_quant(x32.detach())
    x_dq = x32 + (x_q / s_x - x32).detach()
    w_dq = w32 + (torch.clamp(torch.round(w32.detach() / gamma), -1, 1) * gamma - w32).detach()
    return x_dq @ w_dq.t()


@settings(max_examples=25, deadline=None)
@given(
    out=st.integers(1, 40),
    inp=st.integers(1, 70),
    tokens=st.integers(0, 9),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
    kernel_codes=st.booleans(),
)
def test_forward_and_gradients_are_the_methods(
    out: int, inp: int, tokens: int, dtype: torch.dtype, seed: int, kernel_codes: bool
) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g).to(dtype).requires_grad_()
    x = torch.randn(tokens, inp, generator=g).to(dtype).requires_grad_()
    w2, x2 = w.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    y = ternary_linear_ste(x, w, absmean_scale(w), *([ternary_codes] if kernel_codes else []))
    y_ref = _oracle(x2, w2)
    assert y.dtype == torch.float32
    # the forward is exactly the packed model's (the kernel layer's) output
    packed, gamma = quantize_pack(w.detach())
    assert torch.equal(y.detach(), ternary_linear(x.detach().float(), packed, gamma.reshape(1), out))
    torch.testing.assert_close(y.detach(), y_ref.detach(), rtol=1e-5, atol=1e-5)
    upstream = torch.randn(tokens, out, generator=g)
    (y * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    assert x.grad.dtype == dtype and w.grad.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(x.grad.float(), x2.grad.float(), **tol)
    torch.testing.assert_close(w.grad.float(), w2.grad.float(), **tol)


def test_no_token_gives_a_zero_weight_gradient() -> None:
    w = torch.randn(5, 8, requires_grad=True)
    ternary_linear_ste(torch.randn(0, 8), w, absmean_scale(w)).sum().backward()
    assert w.grad is not None and torch.equal(w.grad, torch.zeros_like(w))


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 50),
    cols=st.integers(1, 70000 // 50),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_kernel_codes_equal_the_reference(rows: int, cols: int, dtype: torch.dtype, seed: int) -> None:
    from mote_convert.quant.ste import ternary_codes_f32

    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)).to(dtype)
    gamma = absmean_scale(w)
    assert torch.equal(ternary_codes(w, gamma), ternary_codes_f32(w, gamma))
