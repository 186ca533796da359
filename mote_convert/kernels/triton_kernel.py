"""The GPU kernels: the ternary int8 product in Triton, on the stored 2-bit layout.

Two kernels, chosen by the number of tokens (:func:`plan_launch`):

* **GEMV** (decoding, up to :data:`GEMV_TOKENS` tokens): one program reads a [BR packed rows, K
  slice] block of packed bytes once, extracts the four 2-bit fields (codes + 1, four output rows per
  byte) and multiplies them by the int8 activations elementwise, summing along K in int32. A token
  needs no tensor-core tile (a ``tl.dot`` tile of 16 tokens would waste 15/16 of its work), and
  splitting K across programs (``int32`` atomic adds, exact and order-free) gives enough programs to
  keep every streaming multiprocessor reading memory.
* **tiled** (prefill, training): one program computes a [BT tokens, 4 x BR outputs] tile with four
  int8 x int8 -> int32 ``tl.dot`` products per K block, tiles sized by the number of tokens.

Both subtract the ``sum(q)`` correction (codes are stored as code + 1) and give the same int32 values
as the reference. The GEMV kernel can also take the expert from a device tensor
(:func:`launch_indexed`): a MoE layer's decoding step then picks its expert without reading the
router's choice on the host, so it can be captured in a CUDA graph.

Correctness is tested on the CPU with Triton's interpreter (``TRITON_INTERPRET=1``); speed needs an
NVIDIA GPU (``scripts/gpu_check.sh``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import torch

from mote_convert.kernels.registry import register_kernel

GEMV_TOKENS = 8  # up to this many tokens, the GEMV kernel (each token re-reads the block from cache)
GEMV_ROWS, GEMV_K = 16, 256  # packed rows (64 outputs) x K bytes per step of one GEMV program
# (tokens up to, BT, BR, BK) of the tiled kernel, the first that fits the token count
TILES = ((32, 16, 32, 64), (128, 32, 64, 64), (1 << 62, 64, 64, 64))


def available() -> bool:
    """Triton installed and a CUDA device present (checked without importing triton)."""
    return importlib.util.find_spec("triton") is not None and torch.cuda.is_available()


@dataclass(frozen=True)
class Launch:
    """How one product is launched: the kernel, its grid and its block sizes."""

    kernel: str  # "gemv" or "tiled"
    grid: tuple[int, int, int]
    blocks: dict[str, int]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _programs_wanted(device: torch.device) -> int:
    """Enough programs to keep every SM busy (4 per SM); a fixed count off the GPU (the interpreter)."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 8


def plan_launch(tokens: int, k_len: int, rows: int, device: torch.device) -> Launch:
    """The kernel, grid and blocks for ``tokens`` x ``k_len`` activations against ``rows`` packed rows."""
    if tokens <= GEMV_TOKENS:
        row_blocks = _cdiv(rows, GEMV_ROWS)
        k_steps = _cdiv(k_len, GEMV_K)
        split = max(1, min(k_steps, _cdiv(_programs_wanted(device), row_blocks * tokens)))
        steps_per_split = _cdiv(k_steps, split)
        split = _cdiv(k_steps, steps_per_split)  # no program without work
        return Launch("gemv", (row_blocks, split, tokens), {"BR": GEMV_ROWS, "BK": GEMV_K, "STEPS": steps_per_split})
    _, bt, br, bk = next(tile for tile in TILES if tokens <= tile[0])
    return Launch("tiled", (_cdiv(tokens, bt), _cdiv(rows, br), 1), {"BT": bt, "BR": br, "BK": bk})


@lru_cache(maxsize=1)
def _kernels() -> Any:
    """The jitted kernels, defined on first use (importing triton costs start-up time nobody else pays)."""
    import triton
    import triton.language as tl

    @triton.jit
    def tiled_kernel(
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

    @triton.jit
    def gemv_kernel(
        x_ptr,
        w_ptr,
        offsets_ptr,
        expert_ptr,
        y_ptr,
        k_len,
        rows,
        out_features,
        INDEXED: tl.constexpr,
        BR: tl.constexpr,
        BK: tl.constexpr,
        STEPS: tl.constexpr,
    ):
        r = tl.program_id(0) * BR + tl.arange(0, BR)
        t = tl.program_id(2)
        if INDEXED:  # the expert's bytes: its offset from the first expert's, chosen on the device
            w_ptr = w_ptr + tl.load(offsets_ptr + tl.load(expert_ptr))
        a0 = tl.zeros((BR,), dtype=tl.int32)
        a1 = tl.zeros((BR,), dtype=tl.int32)
        a2 = tl.zeros((BR,), dtype=tl.int32)
        a3 = tl.zeros((BR,), dtype=tl.int32)
        xsum = tl.zeros((BK,), dtype=tl.int32)
        k_first = tl.program_id(1) * STEPS * BK
        for step in range(STEPS):
            k = k_first + step * BK + tl.arange(0, BK)
            x = tl.load(x_ptr + t * k_len + k, mask=k < k_len, other=0).to(tl.int32)
            w = tl.load(
                w_ptr + r[:, None] * k_len + k[None, :], mask=(r[:, None] < rows) & (k[None, :] < k_len), other=0
            )
            w = w.to(tl.int32)
            xsum += x
            a0 += tl.sum((w & 3) * x[None, :], axis=1)
            a1 += tl.sum(((w >> 2) & 3) * x[None, :], axis=1)
            a2 += tl.sum(((w >> 4) & 3) * x[None, :], axis=1)
            a3 += tl.sum(((w >> 6) & 3) * x[None, :], axis=1)
        correction = tl.sum(xsum, axis=0)
        ok = r < rows
        base = y_ptr + t * out_features
        tl.atomic_add(base + r, a0 - correction, mask=ok & (r < out_features))
        tl.atomic_add(base + rows + r, a1 - correction, mask=ok & (rows + r < out_features))
        tl.atomic_add(base + 2 * rows + r, a2 - correction, mask=ok & (2 * rows + r < out_features))
        tl.atomic_add(base + 3 * rows + r, a3 - correction, mask=ok & (3 * rows + r < out_features))

    return triton, tiled_kernel, gemv_kernel


def _check(x_q: torch.Tensor, packed: torch.Tensor, out_features: int) -> None:
    if (
        x_q.dim() != 2
        or packed.dim() != 2
        or packed.shape[1] != x_q.shape[1]
        or (out_features + 3) // 4 != packed.shape[0]
    ):
        raise ValueError(f"packed {tuple(packed.shape)} does not fit x {tuple(x_q.shape)} and {out_features} outputs")


def launch(x_q: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """int32 [T, out] = x_q (int8 [T, in]) times the codes of ``packed`` (uint8 [ceil(out/4), in])."""
    _, tiled, gemv = _kernels()
    x_q, packed = x_q.contiguous(), packed.contiguous()
    _check(x_q, packed, out_features)
    tokens, k_len = x_q.shape
    rows = packed.shape[0]
    plan = plan_launch(tokens, k_len, rows, x_q.device)
    if plan.kernel == "gemv":
        y = torch.zeros((tokens, out_features), dtype=torch.int32, device=x_q.device)
        gemv[plan.grid](x_q, packed, packed, packed, y, k_len, rows, out_features, INDEXED=False, **plan.blocks)
        return y
    y = torch.empty((tokens, out_features), dtype=torch.int32, device=x_q.device)
    tiled[plan.grid[:2]](x_q, packed, y, tokens, k_len, rows, out_features, **plan.blocks)
    return y


# (device, data pointers of the experts' packed tensors) -> int64 byte offsets from the first one
_OFFSETS: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}


def expert_offsets(packed: Sequence[torch.Tensor]) -> torch.Tensor:
    """The experts' byte offsets from the first expert's bytes, as an int64 tensor on their device,
    built once per set of tensors (a CUDA graph keeps the same tensor, and so stays valid, for as long
    as the experts' storage does not move)."""
    key = (str(packed[0].device), tuple(p.data_ptr() for p in packed))
    table = _OFFSETS.get(key)
    if table is None:
        if len(_OFFSETS) > 4096:  # bounded: models reloaded many times in one process
            _OFFSETS.clear()
        first = packed[0].data_ptr()
        table = _OFFSETS[key] = torch.tensor([p.data_ptr() - first for p in packed], dtype=torch.int64).to(
            packed[0].device
        )
    return table


def launch_indexed(
    x_q: torch.Tensor, packed: Sequence[torch.Tensor], expert: torch.Tensor, out_features: int
) -> torch.Tensor:
    """int32 [T, out] = x_q (int8 [T, in], up to :data:`GEMV_TOKENS` tokens) times the codes of
    ``packed[expert]``, with ``expert`` a one-element integer tensor on the device: no host read."""
    _, _, gemv = _kernels()
    x_q = x_q.contiguous()
    if any(not p.is_contiguous() or p.shape != packed[0].shape for p in packed):
        raise ValueError("the experts' packed tensors must be contiguous and of one shape")
    _check(x_q, packed[0], out_features)
    tokens, k_len = x_q.shape
    rows = packed[0].shape[0]
    plan = plan_launch(tokens, k_len, rows, x_q.device)
    if plan.kernel != "gemv":
        raise ValueError(f"launch_indexed takes up to {GEMV_TOKENS} tokens, not {tokens}")
    y = torch.zeros((tokens, out_features), dtype=torch.int32, device=x_q.device)
    offsets = expert_offsets(packed)
    gemv[plan.grid](x_q, packed[0], offsets, expert, y, k_len, rows, out_features, INDEXED=True, **plan.blocks)
    return y


@register_kernel("triton", ("cuda",), priority=10, available=available, indexed=launch_indexed)
def triton_matmul(x_q: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """The Triton kernels on CUDA tensors."""
    return launch(x_q, packed, out_features)
