"""BitNet b1.58 quantizers exactly as docs/method.md states them; pure tensors in and out.

gamma  = max(mean(|W|), 1e-5)              one scale per tensor: float64 sum, rounded once to float32
T      = clamp(round(W / gamma), -1, 1)    round half to even (torch.round)
s_x    = 127 / max(max_j |x_j|, 1e-5)      per token, last dimension
x_q    = clamp(round(x * s_x), -128, 127)
"""

from __future__ import annotations

import math

import torch

from mote_convert.errors import TernaryInputError

SCALE_EPS = 1e-5
ACT_EPS = 1e-5
ACT_QMAX = 127.0
ACT_QMIN = -128.0


def _check_float_weight(weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor):
        raise TernaryInputError(f"expected a tensor, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TernaryInputError(f"expected a floating-point weight, got dtype {weight.dtype}")
    if weight.dim() != 2:
        raise TernaryInputError(f"expected a 2-D weight [out, in], got shape {tuple(weight.shape)}")


# gamma's float64 accumulation, fixed so that any implementation can reproduce it bit for bit: |W|
# (row-major) is cut into blocks of SUM_BLOCK elements, each block is summed in float64 from its
# first element to its last (a sequential sum: torch's cumsum here, one loop in the C++ kernel),
# and the block sums are added exactly (math.fsum). The result does not depend on thread count,
# machine or library.
SUM_BLOCK = 16384
_SUM_CHUNK = 64 * SUM_BLOCK  # blocks summed per torch call (bounds the float64 temporary)


def block_sums(abs_flat: torch.Tensor) -> list[float]:
    """Sequential float64 sums of consecutive ``SUM_BLOCK``-element blocks of a 1-D tensor."""
    sums: list[float] = []
    for start in range(0, abs_flat.numel(), _SUM_CHUNK):
        part = abs_flat[start : start + _SUM_CHUNK].to(torch.float64)
        full = part.numel() - part.numel() % SUM_BLOCK
        if full:
            sums += part[:full].view(-1, SUM_BLOCK).cumsum(dim=1)[:, -1].tolist()
        if part.numel() > full:
            sums.append(float(part[full:].cumsum(dim=0)[-1]))
    return sums


def gamma_from_block_sums(sums: list[float], numel: int) -> torch.Tensor:
    """max(fsum(sums) / numel, 1e-5), rounded once to float32 (a 0-d tensor)."""
    if numel == 0:
        return torch.tensor(SCALE_EPS, dtype=torch.float32)
    mean = math.fsum(sums) / numel
    return torch.tensor(mean, dtype=torch.float64).to(torch.float32).clamp_min(SCALE_EPS)


def absmean_scale(weight: torch.Tensor) -> torch.Tensor:
    """Return gamma = max(mean(|W|), 1e-5) as a float32 0-d tensor.

    |W| is summed in float64 (each value upcast exactly), divided by the element count and rounded
    once to float32, so the result does not depend on thread count or reduction order.
    """
    _check_float_weight(weight)
    w = weight if weight.dtype == torch.float64 else weight.to(torch.float32)
    # abs in place only where .to() made a copy: the caller's tensor is never written to
    return absmean_of_abs(w.abs() if w.data_ptr() == weight.data_ptr() else w.abs_())


def absmean_of_abs(abs_weight: torch.Tensor) -> torch.Tensor:
    """gamma from a tensor already holding |W| (float32 or float64), per :func:`absmean_scale`."""
    flat = abs_weight.detach().reshape(-1)  # gamma is a constant of the STE: no graph through it
    return gamma_from_block_sums(block_sums(flat), flat.numel())


def ternary_codes(weight: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Return T = clamp(round(W / gamma), -1, 1) as int8, computed in float32."""
    _check_float_weight(weight)
    codes = weight.to(torch.float32)
    if codes.data_ptr() == weight.data_ptr():
        codes = codes.clone()  # never write into the caller's float32 tensor
    codes.div_(gamma).round_().clamp_(-1.0, 1.0)
    return codes.to(torch.int8)


def ternarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a 2-D float weight to (codes int8 in {-1,0,1}, gamma float32 0-d)."""
    gamma = absmean_scale(weight)
    return ternary_codes(weight, gamma), gamma


def fixed_point_latent(codes: torch.Tensor, gamma: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode codes to the latent weight that re-quantizes to exactly (codes, gamma).

    ``latent = (gamma / mean(|T|)) * T``: its absmean is gamma, so ``round(latent / gamma)`` is T
    again. An all-zero T decodes to zeros (whose re-quantization is all zeros too).
    """
    t = codes.to(torch.float32)
    density = t.abs().mean()
    if density.item() == 0.0:
        return torch.zeros_like(t, dtype=dtype)
    return (t * (gamma.to(torch.float32) / density)).to(dtype)


def activation_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token INT8 absmax quantization: returns (x_q as float values in [-128, 127], s_x).

    ``x_q / s_x`` is the dequantized activation. Computed in float32 whatever x's dtype.
    """
    xf = x.to(torch.float32)
    s_x = ACT_QMAX / xf.abs().amax(dim=-1, keepdim=True).clamp_min(ACT_EPS)
    x_q = (xf * s_x).round_().clamp_(ACT_QMIN, ACT_QMAX)
    return x_q, s_x
