"""Ternary linear kernels: the method's BitNet linear on 2-bit packed weights, without decoding them.

:func:`ternary_linear` is what a packed routed expert computes (docs/method.md)::

    s_x = 127 / max(max_j |x_j|, 1e-5);  x_q = clamp(round(x * s_x), -128, 127)    per token
    out = (x_q @ T^T) * gamma / s_x  (+ bias)

with the integer product from the kernel :func:`select_kernel` picks for the device.
"""

from __future__ import annotations

import torch

from mote_convert.kernels import cpu as _cpu  # noqa: F401 - registers the C++ kernel
from mote_convert.kernels import triton_kernel as _triton  # noqa: F401 - registers the GPU kernel
from mote_convert.kernels.registry import KERNELS, Kernel, get_kernel, register_kernel, select_kernel
from mote_convert.quant.ternary import activation_quant

__all__ = ["KERNELS", "Kernel", "get_kernel", "quantize_pack", "register_kernel", "select_kernel", "ternary_linear"]

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
