"""safetensors dtype names <-> torch dtypes and item sizes, and the one description of a tensor
(:class:`TensorSpec`: name, dtype, shape, bytes) that header entries, planned outputs and codec parts
all are.

Item sizes are plain data, so header-only work (index, plan, inspect) never imports torch; the torch
mapping is built on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from mote_convert.errors import CorruptCheckpointError

if TYPE_CHECKING:
    import torch

ITEMSIZES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


def _unknown(dtype: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"unsupported safetensors dtype {dtype!r}; known: {', '.join(ITEMSIZES)}")


def tensor_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor's data: its element count times the dtype's size."""
    n = itemsize(dtype)
    for dim in shape:
        n *= dim
    return n


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as a safetensors header entry states it. A checkpoint's tensor
    (:class:`~mote_convert.io.index.TensorInfo`) adds where its bytes are; a codec's part
    (:class:`~mote_convert.format.codecs.PartSpec`) is named by a suffix."""

    name: str
    dtype: str  # safetensors name: F16, BF16, F32, U8, ...
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data."""
        return tensor_nbytes(self.dtype, self.shape)


def itemsize(dtype: str) -> int:
    """Bytes per element of a safetensors dtype name."""
    try:
        return ITEMSIZES[dtype]
    except KeyError:
        raise _unknown(dtype) from None


@lru_cache(maxsize=1)
def _torch_dtypes() -> dict[str, torch.dtype]:
    import torch

    return {
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


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name."""
    try:
        return _torch_dtypes()[dtype]
    except KeyError:
        raise _unknown(dtype) from None


def safetensors_dtype(dtype: torch.dtype) -> str:
    """The safetensors dtype name of a torch dtype."""
    for name, candidate in _torch_dtypes().items():
        if candidate == dtype:
            return name
    raise CorruptCheckpointError(f"dtype {dtype} cannot be stored in safetensors by mote-convert")
