"""Ternary matmul kernels, one registry keyed by name, chosen by device (and CPU features).

A kernel computes ``y[t, o] = sum_k T[o, k] * x_q[t, k]`` as int32, for int8 activations ``x_q``
[tokens, in] and the ternary codes T of a weight stored 2-bit packed (uint8 [ceil(out/4), in], the
layout of docs/format.md). :func:`mote_convert.kernels.ternary_linear` wraps it with the method's
activation quantization and scaling, so every kernel gives the same outputs bit for bit.

* ``reference``: pure torch, decodes the codes and multiplies in float32 (exact: integer sums below
  2^24). The oracle of the tests and the fallback everywhere.
* ``cpu``: a C++ operator (``torch.ops.mote.ternary_matmul``) with AVX-512 VNNI, AVX2 and scalar
  paths chosen by the CPU's features at run time, built on first use by ``torch.utils.cpp_extension``
  and cached; no decoded weight is ever materialised.
* ``triton``: a Triton kernel for CUDA tensors, where triton and a GPU are there.

``MOTE_KERNEL=reference|cpu|triton`` forces one (for benchmarks and tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mote_convert.errors import MoteError

MatmulFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
# The fused form: (x [T, in] any float dtype, packed, scale float32 [1], out) -> float32 [T, out], the
# activation quantization and the scaling included, bit-identical to the unfused composition.
LinearFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
# Fused quantize-and-pack: (weight [out, in]) -> (uint8 packed, float32 gamma), bit-identical to
# mote_convert.quant.packing.quantize_pack, or None where the kernel does not take the weight's dtype.
PackFn = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor] | None"]
# gamma alone: (weight [out, in]) -> float32 0-d gamma, bit-identical to
# mote_convert.quant.ternary.absmean_scale, or None where the kernel does not take the weight's dtype.
GammaFn = Callable[[torch.Tensor], "torch.Tensor | None"]
# The train mode's codes: (weight [out, in], gamma float32 0-d, out float32 [out, in]) -> bool, True
# when it wrote clamp(round(W / gamma), -1, 1) into ``out`` (False: the weight's dtype is not taken).
CodesFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], bool]
# The product with the expert chosen on the device: (x_q int8 [T, in], the experts' packed tensors,
# expert int64 [1] on the device, out) -> int32 [T, out], without reading ``expert`` on the host.
IndexedFn = Callable[[torch.Tensor, Sequence[torch.Tensor], torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class Kernel:
    """One implementation: its name, the devices it serves, and whether it can run here."""

    name: str
    devices: tuple[str, ...]
    available: Callable[[], bool]
    matmul: MatmulFn
    priority: int  # higher wins when several are available for a device
    linear: LinearFn | None = None  # a fused whole linear, where the kernel has one
    pack: PackFn | None = None  # a fused quantize-and-pack, where the kernel has one
    gamma: GammaFn | None = None  # a fast absmean scale, where the kernel has one
    codes: CodesFn | None = None  # float32 ternary codes in one pass, where the kernel has them
    indexed: IndexedFn | None = None  # the expert picked by a device tensor, where the kernel can


KERNELS: dict[str, Kernel] = {}


def register_kernel(
    name: str,
    devices: tuple[str, ...],
    priority: int,
    available: Callable[[], bool] = lambda: True,
    linear: LinearFn | None = None,
    pack: PackFn | None = None,
    gamma: GammaFn | None = None,
    codes: CodesFn | None = None,
    indexed: IndexedFn | None = None,
) -> Callable[[MatmulFn], MatmulFn]:
    """Decorator: register ``fn(x_q int8 [T, in], packed uint8 [R, in], out) -> int32 [T, out]``
    (and optionally its fused whole-linear, quantize-and-pack, absmean-scale, codes and
    device-indexed forms)."""

    def wrap(fn: MatmulFn) -> MatmulFn:
        KERNELS[name] = Kernel(name, devices, available, fn, priority, linear, pack, gamma, codes, indexed)
        return fn

    return wrap


def get_kernel(name: str) -> Kernel:
    """A kernel by name; an unknown name lists the known ones."""
    try:
        return KERNELS[name]
    except KeyError:
        raise MoteError(f"unknown kernel {name!r}; known: {', '.join(sorted(KERNELS))}") from None


def select_kernel(device: torch.device) -> Kernel:
    """The fastest available kernel for tensors on ``device`` (``MOTE_KERNEL`` overrides)."""
    forced = os.environ.get("MOTE_KERNEL")
    if forced:
        return get_kernel(forced)
    candidates = [k for k in KERNELS.values() if device.type in k.devices and k.available()]
    return max(candidates, key=lambda k: k.priority)


@register_kernel("reference", ("cpu", "cuda", "mps", "xpu"), priority=0)
def reference_matmul(x_q: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """Decode the codes and multiply in float32: exact, since every partial sum is an integer
    below 2^24 for in_features up to 131072."""
    from mote_convert.quant.packing import unpack_ternary

    codes = unpack_ternary(packed, out_features, torch.float32)
    return (x_q.to(torch.float32) @ codes.t()).to(torch.int32)
