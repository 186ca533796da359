"""Pure tensor math of SPEC section 1 and the 2-bit layout of section 2 (no I/O)."""

from mote_convert.quant.packing import pack_ternary, packed_rows, quantize_pack, unpack_ternary
from mote_convert.quant.ternary import (
    absmean_scale,
    activation_quant,
    fixed_point_latent,
    ternarize,
    ternary_codes,
)

__all__ = [
    "absmean_scale",
    "activation_quant",
    "fixed_point_latent",
    "pack_ternary",
    "packed_rows",
    "quantize_pack",
    "ternarize",
    "ternary_codes",
    "unpack_ternary",
]
