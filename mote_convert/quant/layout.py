"""Shape arithmetic of the 2-bit layout (docs/format.md): plain integers, no tensors.

Kept apart from :mod:`mote_convert.quant.packing` so that planning and header-only inspection, which
only need packed shapes, do not import torch.
"""

from __future__ import annotations

from mote_convert.errors import TernaryInputError

VALUES_PER_BYTE = 4


def packed_rows(out_features: int) -> int:
    """Rows of the packed tensor for a weight with ``out_features`` rows: ceil(out / 4)."""
    if out_features < 0:
        raise TernaryInputError(f"out_features must be >= 0, got {out_features}")
    return -(-out_features // VALUES_PER_BYTE)
