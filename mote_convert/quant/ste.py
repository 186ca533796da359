"""The train-mode BitNet linear as one autograd function: the quantized forward of docs/method.md,
and a backward that treats both quantizers as the identity (the straight-through estimator).

    forward:   out = (x_q @ T^T) * gamma / s_x                 T = clamp(round(W / gamma), -1, 1)
    backward:  dL/dx = (dL/dout) @ (gamma * T)                 as if out = x_dq @ W_dq^T, with
               dL/dW = (dL/dout)^T @ (x_q / s_x)               x_dq = x_q / s_x, W_dq = gamma * T

Written as a function rather than a chain of ``detach`` tricks so that only what the backward needs
is kept: the activation codes as int8 (a quarter of a float copy) and the per-token scales; the
ternary codes are recomputed from the latent weight in the backward instead of holding a float
copy of every expert's weight per layer until then. gamma is a constant of the STE (no gradient).
Pure tensor math: gamma comes from the caller (the kernel layer computes it fast and exactly).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from mote_convert.quant.ternary import activation_quant


def ternary_codes_f32(weight: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """T = clamp(round(W / gamma), -1, 1) as float32 values (W upcast to float32, then divided)."""
    w = weight.detach().to(torch.float32)
    codes = torch.div(w, gamma) if w.data_ptr() == weight.data_ptr() else w.div_(gamma)
    return codes.round_().clamp_(-1.0, 1.0)


# (weight, gamma) -> float32 codes, used at once by the caller (a kernel may return a reused buffer)
CodesFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TernarySTE(torch.autograd.Function):
    """``out`` float32 [tokens, out] of ``x`` [tokens, in] (any float dtype) and a latent weight."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, gamma: torch.Tensor, codes_fn: CodesFn
    ) -> torch.Tensor:
        assert x.dim() == 2 and weight.dim() == 2 and x.shape[1] == weight.shape[1], (x.shape, weight.shape)
        x_q, s_x = activation_quant(x)
        codes = codes_fn(weight, gamma)
        # |x_q| <= 128 and T in {-1, 0, 1}: the float32 product is an exact integer sum (in < 131072)
        out = (x_q @ codes.t()).mul_(gamma / s_x)
        ctx.save_for_backward(x_q.to(torch.int8), s_x, weight, gamma)
        ctx.x_dtype = x.dtype
        ctx.codes_fn = codes_fn
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x_q8, s_x, weight, gamma = ctx.saved_tensors
        grad_out = grad_out.to(torch.float32)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_out @ ctx.codes_fn(weight, gamma)).mul_(gamma).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (grad_out.t() @ x_q8.to(torch.float32).div_(s_x)).to(weight.dtype)
        return grad_x, grad_w, None, None


def ternary_linear_ste(
    x: torch.Tensor, weight: torch.Tensor, gamma: torch.Tensor, codes_fn: CodesFn = ternary_codes_f32
) -> torch.Tensor:
    """The BitNet linear of a latent weight with the STE backward; float32 [..., out] for x [..., in].
    ``codes_fn`` computes T (the kernel layer passes its one-pass form)."""
    lead = x.shape[:-1]
    gamma = gamma.detach().to(torch.float32).reshape(())
    out = TernarySTE.apply(x.reshape(-1, x.shape[-1]), weight, gamma, codes_fn)
    return out.reshape(*lead, weight.shape[0])
