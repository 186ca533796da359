"""Architectures: where a family's decoder FFNs are and what shape they have, found from the model
itself (``discover``) or, where discovery needs help, from a definition file."""

from mote_convert.arch.discover import discover
from mote_convert.arch.ffn import FFN_KINDS, FfnKind, get_ffn_kind
from mote_convert.arch.lookup import architecture_of, refusal_reason
from mote_convert.arch.registry import Architecture, definitions, unsupported_model_types
from mote_convert.arch.skeleton import model_class

__all__ = [
    "FFN_KINDS",
    "Architecture",
    "FfnKind",
    "architecture_of",
    "definitions",
    "discover",
    "get_ffn_kind",
    "model_class",
    "refusal_reason",
    "unsupported_model_types",
]
