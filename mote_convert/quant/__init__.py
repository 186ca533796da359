"""Pure tensor math of docs/method.md and the 2-bit layout of docs/format.md (no I/O).

Names are imported on first use, so that ``mote_convert.quant.layout`` (shape arithmetic only) can be
used without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "absmean_scale": "ternary",
    "activation_quant": "ternary",
    "fixed_point_latent": "ternary",
    "ternarize": "ternary",
    "ternary_codes": "ternary",
    "code_counts": "packing",
    "pack_ternary": "packing",
    "quantize_pack": "packing",
    "unpack_ternary": "packing",
    "packed_rows": "layout",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
