"""Ternary linear kernels: the method's BitNet linear on 2-bit packed weights, without decoding them.

:func:`ternary_linear` is what a packed routed expert computes (docs/method.md)::

    s_x = 127 / max(max_j |x_j|, 1e-5);  x_q = clamp(round(x * s_x), -128, 127)    per token
    out = (x_q @ T^T) * gamma / s_x  (+ bias)

with the integer product from the kernel :func:`select_kernel` picks for the device.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mote_convert.kernels import cpu as _cpu  # noqa: F401 - registers the C++ kernel
from mote_convert.kernels import triton_kernel as _triton  # noqa: F401 - registers the GPU kernel
from mote_convert.kernels.cpu import one_thread
from mote_convert.kernels.registry import KERNELS, Kernel, get_kernel, register_kernel, select_kernel
from mote_convert.quant.ternary import activation_quant

__all__ = [
    "KERNELS",
    "Kernel",
    "absmean_scale",
    "get_kernel",
    "one_thread",
    "quantize_pack",
    "register_kernel",
    "select_kernel",
    "ternary_codes",
    "ternary_linear",
    "ternary_linear_indexed",
]

# One float32 buffer per device for the train mode's codes, grown to the largest weight seen: the
# codes of a 7B model's FFN weight are 180 MB, and allocating (and faulting in) that much afresh
# twice per weight per step costs more than computing them.
_CODES_WORKSPACE: dict[torch.device, torch.Tensor] = {}


def ternary_codes(weight: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """T = clamp(round(W / gamma), -1, 1) as float32 [out, in], bit-identical to
    :func:`mote_convert.quant.ste.ternary_codes_f32`. Where a kernel computes them, the result is a
    view of a per-device workspace, valid until the next call: use it at once, never keep it."""
    from mote_convert.quant.ste import ternary_codes_f32

    kernel = select_kernel(weight.device)
    if kernel.codes is not None:
        buffer = _CODES_WORKSPACE.get(weight.device)
        if buffer is None or buffer.numel() < weight.numel():
            _CODES_WORKSPACE.pop(weight.device, None)  # free the old one before the new one exists
            buffer = _CODES_WORKSPACE[weight.device] = torch.empty(
                weight.numel(), dtype=torch.float32, device=weight.device
            )
        out = buffer[: weight.numel()].view(weight.shape)
        if kernel.codes(weight, gamma, out):
            return out
    return ternary_codes_f32(weight, gamma)


def absmean_scale(weight: torch.Tensor) -> torch.Tensor:
    """gamma of a float weight [out, in] (float32 0-d), bit-identical to
    :func:`mote_convert.quant.ternary.absmean_scale` (the reference, used where no kernel has it)."""
    from mote_convert.quant import ternary

    kernel = select_kernel(weight.device)
    fast = kernel.gamma(weight) if kernel.gamma is not None else None
    return fast if fast is not None else ternary.absmean_scale(weight)


def quantize_pack(weight: torch.Tensor, workspace: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 packed codes, float32 gamma) of a float weight [out, in], bit-identical to
    :func:`mote_convert.quant.packing.quantize_pack` (the reference, used where no fused kernel runs):
    the C++ kernel sums |W| in the reference's blocks and packs the codes in one pass over W."""
    from mote_convert.quant import packing

    kernel = select_kernel(weight.device)
    fused = kernel.pack(weight) if kernel.pack is not None else None
    return fused if fused is not None else packing.quantize_pack(weight, workspace=workspace)


def ternary_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    out_features: int,
    bias: torch.Tensor | None = None,
    kernel: Kernel | str | None = None,
) -> torch.Tensor:
    """The packed ternary linear of a routed expert, in ``x``'s dtype, for ``x`` of any leading shape."""
    if isinstance(kernel, str):
        kernel = get_kernel(kernel)
    kernel = kernel or select_kernel(x.device)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if kernel.linear is not None and scale.dtype == torch.float32:
        out = kernel.linear(x2, packed, scale.reshape(1), out_features)
    else:
        x_q, s_x = activation_quant(x2)  # float32 values in [-128, 127], exactly the reference's
        acc = kernel.matmul(x_q.to(torch.int8), packed, out_features)
        out = acc.to(torch.float32) * (scale.reshape(()).to(torch.float32) / s_x)
    if bias is not None:
        out = out + bias.to(torch.float32)
    return out.to(x.dtype).reshape(*lead, out_features)


def ternary_linear_indexed(
    x: torch.Tensor,
    packed: Sequence[torch.Tensor],
    scales: Sequence[torch.Tensor],
    expert: torch.Tensor,
    out_features: int,
    biases: Sequence[torch.Tensor] | None = None,
    kernel: Kernel | str | None = None,
) -> torch.Tensor:
    """:func:`ternary_linear` of expert ``expert`` (a one-element integer tensor on ``x``'s device)
    among experts of one shape, the same bits, without reading ``expert`` on the host: a decoding
    step picks its expert on the device and can be captured in a CUDA graph. A kernel with an indexed
    form reads only the chosen expert's bytes; the others multiply a gathered copy of them."""
    if isinstance(kernel, str):
        kernel = get_kernel(kernel)
    kernel = kernel or select_kernel(x.device)
    index = expert.reshape(1).to(torch.int64)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    x_q, s_x = activation_quant(x2)
    if kernel.indexed is not None:
        acc = kernel.indexed(x_q.to(torch.int8), packed, index, out_features)
    else:
        chosen = torch.stack(list(packed)).index_select(0, index)[0]
        acc = kernel.matmul(x_q.to(torch.int8), chosen, out_features)
    scale = torch.cat([s.reshape(1).to(torch.float32) for s in scales]).index_select(0, index)
    out = acc.to(torch.float32) * (scale.reshape(()) / s_x)
    if biases is not None:
        out = out + torch.stack(list(biases)).index_select(0, index)[0].to(torch.float32)
    return out.to(x.dtype).reshape(*lead, out_features)
