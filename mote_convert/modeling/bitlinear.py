"""The BitNet b1.58 linear of docs/method.md, in a packed mode and a train mode.

Both modes compute ``out = (x_q @ T^T) * gamma / s_x (+ bias)`` in float32. With |x_q| <= 128 and T in
{-1, 0, 1}, ``x_q @ T^T`` is a sum of integers below 2^24 for any in_features under 131072, so it is
exact in float32 and the two modes agree to the rounding of the final scaling.

* packed: ``weight_packed`` (uint8, 2 bits per weight) and ``weight_scale`` (gamma) are buffers;
  ``forward`` hands them to the kernel layer (:mod:`mote_convert.kernels`), which multiplies int8
  activations by the packed codes directly: no decoded weight exists at any time.
* train: ``weight`` is the latent float parameter; gamma and T are recomputed from it every forward,
  and both quantizers pass gradients straight through (STE, :mod:`mote_convert.quant.ste`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mote_convert.errors import FormatError
from mote_convert.kernels import absmean_scale, quantize_pack, ternary_codes, ternary_linear
from mote_convert.quant.packing import packed_rows, unpack_ternary
from mote_convert.quant.ste import ternary_linear_ste
from mote_convert.quant.ternary import fixed_point_latent

PACKED = "packed"
TRAIN = "train"
MODES = (PACKED, TRAIN)


class KeepFloat32(nn.Module):
    """A module whose tensors named in ``FLOAT32`` stay float32 through ``.to(dtype)``, ``.half()``
    and the like: device moves apply, dtype casts are undone (the router and the scales are float32
    whatever dtype the model runs in). The Parameter objects stay the same, so optimizers keep them."""

    FLOAT32: tuple[str, ...] = ()
    # Turned off (mote_convert.modeling.distributed.release_float32) for an engine that must hold
    # every trainable parameter in one low precision, with float32 master weights of its own.
    keep_float32: bool = True

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202 - torch's signature
        super()._apply(fn, recurse)
        if not self.keep_float32:
            return self
        for name in self.FLOAT32:
            tensor = getattr(self, name, None)
            if (
                isinstance(tensor, torch.Tensor)
                and tensor.is_floating_point()
                and tensor.dtype != torch.float32
                and not tensor.is_meta
            ):
                if isinstance(tensor, nn.Parameter):
                    tensor.data = tensor.data.to(torch.float32)
                else:
                    self._buffers[name] = tensor.to(torch.float32)
        return self


class Float32Linear(KeepFloat32, nn.Linear):
    """``nn.Linear`` kept in float32 (the router): its parameters through dtype casts, and its
    product under autocast and under engines that hand it a lower-precision copy of its weight."""

    FLOAT32 = ("weight", "bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            bias = self.bias.to(torch.float32) if self.bias is not None else None
            return F.linear(x.to(torch.float32), self.weight.to(torch.float32), bias)


class TernaryLinear(KeepFloat32):
    """A ternary-weight, INT8-activation linear layer (a routed expert's projection)."""

    FLOAT32 = ("weight_scale",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool,
        mode: str,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise FormatError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        self.in_features = in_features
        self.out_features = out_features
        self.mode = mode
        if mode == PACKED:
            rows = packed_rows(out_features)
            self.register_buffer("weight_packed", torch.zeros(rows, in_features, dtype=torch.uint8, device=device))
            self.register_buffer("weight_scale", torch.ones(1, dtype=torch.float32, device=device))
        else:
            self.weight = nn.Parameter(torch.zeros(out_features, in_features, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, mode={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == PACKED:
            # the kernel layer: integer products on the packed codes, no decoded weight (mote_convert.kernels)
            return ternary_linear(x, self.weight_packed, self.weight_scale, self.out_features, self.bias)
        # Exact integer products in float32 whatever autocast would choose (bf16 would round them);
        # gamma from the kernel layer, bit-identical to the reference and to what packing computes.
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = ternary_linear_ste(x, self.weight, absmean_scale(self.weight), ternary_codes)
            if self.bias is not None:
                out = out + self.bias.to(torch.float32)
        return out.to(x.dtype)

    # -- conversions between the two stored forms --------------------------------------------------

    def convert(self, mode: str, dtype: torch.dtype | None = None) -> None:
        """Switch in place to ``mode``: packed -> train decodes to the quantizer's fixed point (in
        ``dtype``, default float32), train -> packed quantizes the latent weight."""
        if mode not in MODES:
            raise FormatError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        if mode == self.mode:
            return
        if mode == TRAIN:
            latent = self.latent_state().to(dtype or torch.float32)
            del self.weight_packed, self.weight_scale
            self.mode = TRAIN
            self.weight = nn.Parameter(latent, requires_grad=False)
        else:
            packed, gamma = quantize_pack(self.weight.detach())
            del self.weight
            self.mode = PACKED
            self.register_buffer("weight_packed", packed)
            self.register_buffer("weight_scale", gamma.reshape(1).to(torch.float32))

    def load_packed(self, packed: torch.Tensor, scale: torch.Tensor) -> None:
        """Set the weights from packed codes and gamma (either mode; train mode decodes to the fixed point)."""
        if self.mode == PACKED:
            self.weight_packed = packed.to(torch.uint8)
            self.weight_scale = scale.to(torch.float32).reshape(1)
        else:
            codes = unpack_ternary(packed, self.out_features)
            latent = fixed_point_latent(codes, scale.reshape(()).to(torch.float32), self.weight.dtype)
            self.weight = nn.Parameter(latent.to(self.weight.device), requires_grad=self.weight.requires_grad)

    def load_latent(self, weight: torch.Tensor) -> None:
        """Set the weights from a latent float weight (packed mode quantizes it)."""
        if self.mode == PACKED:
            packed, gamma = quantize_pack(weight)
            self.load_packed(packed, gamma)
        else:
            self.weight = nn.Parameter(weight.to(self.weight.dtype), requires_grad=self.weight.requires_grad)

    def packed_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight_packed, weight_scale [1]) of the current weights."""
        if self.mode == PACKED:
            return self.weight_packed, self.weight_scale
        packed, gamma = quantize_pack(self.weight.detach())
        return packed, gamma.reshape(1)

    def latent_state(self) -> torch.Tensor:
        """The latent weight: the parameter in train mode, the fixed-point decode in packed mode."""
        if self.mode == TRAIN:
            return self.weight.detach()
        codes = unpack_ternary(self.weight_packed, self.out_features)
        return fixed_point_latent(codes, self.weight_scale[0], torch.float32)
