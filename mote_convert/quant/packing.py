"""2-bit packing of ternary codes in the layout of docs/format.md.

The layout is transformers' BitNet one (``transformers.integrations.bitnet``): code = t + 1, and with
R = ceil(out / 4), weight row ``j * R + r`` lives in bits ``2j .. 2j+1`` of packed row ``r``. Rows past
``out`` are zero padding. :func:`pack_ternary` and :func:`unpack_ternary` are exact inverses.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from mote_convert.errors import TernaryInputError
from mote_convert.quant.layout import VALUES_PER_BYTE, packed_rows
from mote_convert.quant.ternary import absmean_of_abs, absmean_scale

__all__ = ["VALUES_PER_BYTE", "code_counts", "pack_ternary", "packed_rows", "quantize_pack", "unpack_ternary"]


def pack_ternary(codes: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """Pack int codes in {-1, 0, 1} of shape [out, in] into uint8 [ceil(out/4), in].

    ``check=False`` skips the value scan for callers whose codes come straight from
    :func:`~mote_convert.quant.ternary.ternary_codes` (clamped by construction).
    """
    if not isinstance(codes, torch.Tensor):
        raise TernaryInputError(f"expected a tensor, got {type(codes).__name__}")
    if codes.dim() != 2:
        raise TernaryInputError(f"expected 2-D codes [out, in], got shape {tuple(codes.shape)}")
    if codes.dtype not in (torch.int8, torch.int16, torch.int32, torch.int64):
        raise TernaryInputError(f"expected a signed integer dtype for codes, got {codes.dtype}")
    if check and codes.numel() and (codes.min().item() < -1 or codes.max().item() > 1):
        raise TernaryInputError("codes must lie in {-1, 0, 1}")
    out_features, in_features = codes.shape
    shifted = _padded_plane_buffer(out_features, in_features, codes.device)
    shifted[:out_features] = (codes + 1).to(torch.uint8)
    return _pack_planes(shifted)


def quantize_pack(
    weight: torch.Tensor, *, chunk_elements: int = 1 << 18, workspace: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternarize a float weight [out, in] and pack it: returns (uint8 packed, float32 gamma).

    Bit-identical to ``pack_ternary(ternary_codes(W, absmean_scale(W)))`` but about twice as fast:
    after gamma, the codes are computed in row blocks of about ``chunk_elements`` values, so each
    block's divide / round / clamp passes stay in cache instead of streaming a float32 copy of the
    whole weight through memory five times.

    ``workspace``, a float32 tensor of at least ``weight.numel()`` elements, is reused for the float32
    copy that gamma is the mean of, instead of a fresh allocation (whose page faults cost more than
    the arithmetic on a large weight). Same values, same contiguous layout: the same gamma, bit for bit.
    """
    if workspace is not None and workspace.dtype == torch.float32 and workspace.numel() >= weight.numel():
        if not weight.is_floating_point() or weight.dim() != 2:
            absmean_scale(weight)  # raises the usual input error
        w32 = workspace.reshape(-1)[: weight.numel()].view(weight.shape).copy_(weight)
        gamma = absmean_of_abs(w32.abs_())
    else:
        gamma = absmean_scale(weight)
    out_features, in_features = weight.shape
    shifted = _padded_plane_buffer(out_features, in_features, weight.device)
    rows = max(1, chunk_elements // max(1, in_features))
    block = torch.empty((min(rows, out_features), in_features), dtype=torch.float32, device=weight.device)
    for r0 in range(0, out_features, rows):
        r1 = min(out_features, r0 + rows)
        b = block[: r1 - r0]
        b.copy_(weight[r0:r1])
        b.div_(gamma).round_().clamp_(-1.0, 1.0).add_(1.0)  # code + 1, in {0, 1, 2}
        shifted[r0:r1].copy_(b)
    return _pack_planes(shifted), gamma


def _padded_plane_buffer(out_features: int, in_features: int, device: torch.device) -> torch.Tensor:
    rows = packed_rows(out_features)
    buf = torch.empty((rows * VALUES_PER_BYTE, in_features), dtype=torch.uint8, device=device)
    buf[out_features:].zero_()  # padding rows decode to bits 00
    return buf


def _pack_planes(shifted: torch.Tensor) -> torch.Tensor:
    """OR the four row planes of a [4R, in] uint8 buffer of codes+1 into [R, in]."""
    rows = shifted.shape[0] // VALUES_PER_BYTE
    planes = shifted.view(VALUES_PER_BYTE, rows, shifted.shape[1])
    packed = planes[0].clone()
    for j in range(1, VALUES_PER_BYTE):
        packed |= planes[j] << (2 * j)
    return packed


def unpack_ternary(packed: torch.Tensor, out_features: int, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """Unpack uint8 [ceil(out/4), in] into codes [out, in] in {-1, 0, 1} of ``dtype``.

    Raises on a shape that does not fit ``out_features`` and on the never-written code 0b11.
    """
    if not isinstance(packed, torch.Tensor):
        raise TernaryInputError(f"expected a tensor, got {type(packed).__name__}")
    if packed.dtype != torch.uint8:
        raise TernaryInputError(f"expected uint8 packed codes, got {packed.dtype}")
    if packed.dim() != 2:
        raise TernaryInputError(f"expected 2-D packed codes, got shape {tuple(packed.shape)}")
    rows = packed_rows(out_features)
    if packed.shape[0] != rows:
        raise TernaryInputError(f"packed codes have {packed.shape[0]} rows; {out_features} output features need {rows}")
    planes = torch.stack([(packed >> (2 * j)) & 0b11 for j in range(VALUES_PER_BYTE)])
    if bool((planes == 0b11).any()):
        raise TernaryInputError("packed codes hold the invalid 2-bit value 0b11")
    codes = planes.view(rows * VALUES_PER_BYTE, packed.shape[1])[:out_features]
    return codes.to(dtype) - 1


def code_counts(packed: torch.Tensor, out_features: int) -> tuple[list[int], int]:
    """Count the 2-bit fields of packed codes without decoding them (for checking a checkpoint).

    Returns ``([n_00, n_01, n_10, n_11], padding_nonzero)``: how often each field value occurs in the
    ``out_features`` real rows (0b00 is -1, 0b01 is 0, 0b10 is +1, 0b11 is invalid), and how many
    fields of the padding rows are not 0b00. Unlike :func:`unpack_ternary` it never raises on 0b11:
    it is for reporting a damaged tensor, not for computing with it.

    One byte histogram per band of packed rows (at most four bands: plane j holds weight rows
    j*R .. j*R+R-1, so a packed row has 4, 3, 2 or 1 real fields), turned into field counts by a
    256-entry table: one pass over the bytes, no per-plane temporaries.
    """
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2:
        raise TernaryInputError(f"expected 2-D uint8 packed codes, got {getattr(packed, 'dtype', type(packed))}")
    rows = packed.shape[0]
    if rows != packed_rows(out_features):
        raise TernaryInputError(
            f"packed codes have {rows} rows; {out_features} output features need {packed_rows(out_features)}"
        )
    real = [min(rows, max(0, out_features - j * rows)) for j in range(VALUES_PER_BYTE)]  # real rows of plane j
    fields = _field_table()  # [256, 4]: field j of byte b
    counts = [0, 0, 0, 0]
    padding_nonzero = 0
    bounds = sorted({0, rows, *real})
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        hist = byte_histogram(packed[lo:hi].reshape(-1))
        for j in range(VALUES_PER_BYTE):
            per_value = torch.zeros(4, dtype=torch.int64).index_add_(0, fields[:, j], hist)
            if hi <= real[j]:
                for code in range(4):
                    counts[code] += int(per_value[code])
            else:
                padding_nonzero += int(per_value[1:].sum())
    return counts, padding_nonzero


_FIELDS: list[torch.Tensor] = []
_POOL: list[ThreadPoolExecutor] = []
_PARALLEL_MIN = 1 << 22  # bytes; below this one thread is as fast


def byte_histogram(data: torch.Tensor) -> torch.Tensor:
    """int64 [256] counts of each byte value of a 1-D uint8 tensor.

    ``torch.bincount`` runs on one thread; a large tensor is split across torch's thread count
    (bincount releases the GIL), about twice as fast on two cores.
    """
    threads = torch.get_num_threads()
    if data.numel() < _PARALLEL_MIN or threads < 2:
        return torch.bincount(data, minlength=256).to(torch.int64)
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mote-histogram"))
    parts = _POOL[0].map(lambda chunk: torch.bincount(chunk, minlength=256), data.chunk(threads))
    return torch.stack(list(parts)).sum(dim=0).to(torch.int64)


def _field_table() -> torch.Tensor:
    if not _FIELDS:
        b = torch.arange(256, dtype=torch.int64)
        _FIELDS.append(torch.stack([(b >> (2 * j)) & 0b11 for j in range(VALUES_PER_BYTE)], dim=1))
    return _FIELDS[0]
