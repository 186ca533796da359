"""Architecture definitions: where a family's decoder FFNs are and what shape they have."""

from mote_convert.arch.ffn import FFN_KINDS, FfnKind, get_ffn_kind
from mote_convert.arch.registry import (
    Architecture,
    check_text_model,
    get_architecture,
    list_architectures,
    unsupported_model_types,
)

__all__ = [
    "FFN_KINDS",
    "Architecture",
    "FfnKind",
    "check_text_model",
    "get_architecture",
    "get_ffn_kind",
    "list_architectures",
    "unsupported_model_types",
]
