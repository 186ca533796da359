"""The GPU kernel: the ternary int8 product in Triton, on the stored 2-bit layout.

One program computes a [BLOCK_T tokens, 4 x BLOCK_R outputs] tile: for each K block it loads the
int8 activations and the packed bytes once, extracts the four 2-bit fields (codes + 1, four output
rows per byte) and accumulates four int8 x int8 -> int32 ``tl.dot`` products; the ``sum(q)``
correction is subtracted at the end. Exact integer arithmetic: the same int32 values as the
reference. Correctness is tested on the CPU with Triton's interpreter (``TRITON_INTERPRET=1``);
speed needs an NVIDIA GPU (``scripts/bench_moe_layer.py`` on one).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from typing import Any

import torch

from mote_convert.kernels.registry import register_kernel

BLOCK_T, BLOCK_R, BLOCK_K = 16, 32, 64


def available() -> bool:
    """Triton installed and a CUDA device present (checked without importing triton)."""
    return importlib.util.find_spec("triton") is not None and torch.cuda.is_available()


@lru_cache(maxsize=1)
def _kernel() -> Any:
    """The jitted kernel, defined on first use (importing triton costs start-up time nobody else pays)."""
    import triton
    import triton.language as tl

    @triton.jit
    def ternary_matmul_kernel(
        x_ptr, w_ptr, y_ptr, tokens, k_len, rows, out_features, BT: tl.constexpr, BR: tl.constexpr, BK: tl.constexpr
    ):
        t = tl.program_id(0) * BT + tl.arange(0, BT)
        r = tl.program_id(1) * BR + tl.arange(0, BR)
        a0 = tl.zeros((BT, BR), dtype=tl.int32)
        a1 = tl.zeros((BT, BR), dtype=tl.int32)
        a2 = tl.zeros((BT, BR), dtype=tl.int32)
        a3 = tl.zeros((BT, BR), dtype=tl.int32)
        xsum = tl.zeros((BT,), dtype=tl.int32)
        for k0 in range(0, k_len, BK):
            k = k0 + tl.arange(0, BK)
            x = tl.load(
                x_ptr + t[:, None] * k_len + k[None, :], mask=(t[:, None] < tokens) & (k[None, :] < k_len), other=0
            )
            w = tl.load(
                w_ptr + r[:, None] * k_len + k[None, :], mask=(r[:, None] < rows) & (k[None, :] < k_len), other=0
            )
            xsum += tl.sum(x.to(tl.int32), axis=1)
            a0 += tl.dot(x, tl.trans((w & 3).to(tl.int8)))
            a1 += tl.dot(x, tl.trans(((w >> 2) & 3).to(tl.int8)))
            a2 += tl.dot(x, tl.trans(((w >> 4) & 3).to(tl.int8)))
            a3 += tl.dot(x, tl.trans(((w >> 6) & 3).to(tl.int8)))
        ok = (t[:, None] < tokens) & (r[None, :] < rows)
        base = y_ptr + t[:, None] * out_features
        o0 = r
        tl.store(base + o0[None, :], a0 - xsum[:, None], mask=ok & (o0[None, :] < out_features))
        o1 = rows + r
        tl.store(base + o1[None, :], a1 - xsum[:, None], mask=ok & (o1[None, :] < out_features))
        o2 = 2 * rows + r
        tl.store(base + o2[None, :], a2 - xsum[:, None], mask=ok & (o2[None, :] < out_features))
        o3 = 3 * rows + r
        tl.store(base + o3[None, :], a3 - xsum[:, None], mask=ok & (o3[None, :] < out_features))

    return triton, ternary_matmul_kernel


def launch(x_q: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """int32 [T, out] = x_q (int8 [T, in]) times the codes of ``packed`` (uint8 [ceil(out/4), in])."""
    triton, kernel = _kernel()
    x_q, packed = x_q.contiguous(), packed.contiguous()
    tokens, k_len = x_q.shape
    rows = packed.shape[0]
    if packed.shape[1] != k_len or (out_features + 3) // 4 != rows:
        raise ValueError(f"packed {tuple(packed.shape)} does not fit x {tuple(x_q.shape)} and {out_features} outputs")
    y = torch.empty((tokens, out_features), dtype=torch.int32, device=x_q.device)
    grid = (triton.cdiv(tokens, BLOCK_T), triton.cdiv(rows, BLOCK_R))
    kernel[grid](x_q, packed, y, tokens, k_len, rows, out_features, BT=BLOCK_T, BR=BLOCK_R, BK=BLOCK_K)
    return y


@register_kernel("triton", ("cuda",), priority=10, available=available)
def triton_matmul(x_q: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """The Triton kernel on CUDA tensors."""
    return launch(x_q, packed, out_features)
