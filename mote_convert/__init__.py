"""mote-convert: turn a dense LLaVA-style checkpoint into a Mixture of Ternary Experts (MoTE) one.

Public API (docs/usage.md, docs/training.md)::

    mote_convert.upcycle(model_path, out_path, num_experts=4, top_k=1, layers="all", latent=False, ...)
    mote_convert.pack(in_path, out_path)
    mote_convert.inspect_checkpoint(path)            # -> InspectionReport; .to_dict() is JSON-ready
    model = mote_convert.load_model(path, mode="packed" | "train", dtype=None, device=None)
    mote_convert.save_model(model, out_path, expert_format="packed-2bit" | "latent")
    mote_convert.aux_loss(model)
    mote_convert.generate(path, "prompt", image=None, max_new_tokens=64)   # -> Generation (greedy)

Header-only work (``inspect``, planning, a dry run) never imports torch, which costs more than a
second of start-up: the modeling API (``load_model``, ``save_model``, ``aux_loss``) is imported on
first use, and the conversions import their tensor work when they execute.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mote_convert.errors import MoteError
from mote_convert.inspection import inspect_checkpoint
from mote_convert.options import UpcycleOptions
from mote_convert.pack import pack
from mote_convert.upcycle import plan_upcycle, upcycle
from mote_convert.version import __version__

_EXPORTS = {name: "mote_convert.modeling.load" for name in ("aux_loss", "load_model", "save_model")}
_EXPORTS["MoteQuantizationConfig"] = "mote_convert.modeling.quantizer"  # registers the "mote" method
_EXPORTS["generate"] = "mote_convert.generation"

__all__ = [
    "MoteError",
    "MoteQuantizationConfig",
    "UpcycleOptions",
    "__version__",
    "aux_loss",
    "generate",
    "inspect_checkpoint",
    "load_model",
    "pack",
    "plan_upcycle",
    "save_model",
    "upcycle",
]

if TYPE_CHECKING:
    from mote_convert.generation import generate
    from mote_convert.modeling.load import aux_loss, load_model, save_model
    from mote_convert.modeling.quantizer import MoteQuantizationConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
