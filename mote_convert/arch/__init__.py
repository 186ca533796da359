"""Architecture definitions: where a family's decoder FFNs are and what shape they have."""

from mote_convert.arch.ffn import FFN_KINDS, FfnKind, get_ffn_kind
from mote_convert.arch.registry import Architecture, get_architecture, list_architectures

__all__ = ["FFN_KINDS", "Architecture", "FfnKind", "get_architecture", "get_ffn_kind", "list_architectures"]
