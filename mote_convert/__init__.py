"""mote-convert: turn a dense LLaVA-style checkpoint into a Mixture of Ternary Experts (MoTE) one.

Public API (SPEC section 4)::

    mote_convert.upcycle(model_path, out_path, num_experts=4, top_k=1, layers="all", latent=False, ...)
"""

from mote_convert.errors import MoteError
from mote_convert.options import UpcycleOptions
from mote_convert.upcycle import plan_upcycle, upcycle

__version__ = "0.1.0"

__all__ = ["MoteError", "UpcycleOptions", "__version__", "plan_upcycle", "upcycle"]
