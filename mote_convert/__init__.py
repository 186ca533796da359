"""mote-convert: turn a dense LLaVA-style checkpoint into a Mixture of Ternary Experts (MoTE) one.

Public API (SPEC section 4)::

    mote_convert.upcycle(model_path, out_path, num_experts=4, top_k=1, layers="all", latent=False, ...)
    mote_convert.pack(in_path, out_path)
    model = mote_convert.load_model(path, mode="packed" | "train", dtype=None, device=None)
    mote_convert.save_model(model, out_path, expert_format="packed-2bit" | "latent")
    mote_convert.aux_loss(model)
"""

from mote_convert.errors import MoteError
from mote_convert.modeling.load import aux_loss, load_model, save_model
from mote_convert.options import UpcycleOptions
from mote_convert.pack import pack
from mote_convert.upcycle import plan_upcycle, upcycle

__version__ = "0.1.0"

__all__ = [
    "MoteError",
    "UpcycleOptions",
    "__version__",
    "aux_loss",
    "load_model",
    "pack",
    "plan_upcycle",
    "save_model",
    "upcycle",
]
