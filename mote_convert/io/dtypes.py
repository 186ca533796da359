"""safetensors dtype names <-> torch dtypes and item sizes."""

from __future__ import annotations

import torch

from mote_convert.errors import CorruptCheckpointError

TORCH_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
SAFETENSORS_DTYPES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


def itemsize(dtype: str) -> int:
    """Bytes per element of a safetensors dtype name."""
    return torch_dtype(dtype).itemsize


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name."""
    try:
        return TORCH_DTYPES[dtype]
    except KeyError:
        raise CorruptCheckpointError(
            f"unsupported safetensors dtype {dtype!r}; known: {', '.join(TORCH_DTYPES)}"
        ) from None


def safetensors_dtype(dtype: torch.dtype) -> str:
    """The safetensors dtype name of a torch dtype."""
    try:
        return SAFETENSORS_DTYPES[dtype]
    except KeyError:
        raise CorruptCheckpointError(f"dtype {dtype} cannot be stored in safetensors by mote-convert") from None
