"""A MoTE model on PyTorch's FSDP2 (``fully_shard``), with each router kept float32.

The engines do the distributed work; this module only says how to wrap a MoTE model for FSDP2:

* each router is its own FSDP unit with a float32 policy, so that a bf16 ``MixedPrecisionPolicy``
  on the rest of the model never hands the router a bf16 copy of its weight (routing in float32 is
  part of the method: docs/method.md);
* each decoder layer (the model's ``_no_split_modules`` classes, and every module that holds a MoE
  block) is a unit, then the root model, as FSDP2 expects (children before parents).

Correctness under sharded data parallelism needs nothing else: while autograd records, every
routed expert runs (on no tokens where none chose it), so every rank produces the same set of
gradients to reduce, whatever the routing (see :class:`mote_convert.modeling.block.MoTEBlock`).
DDP and DeepSpeed ZeRO-2/3 take the model as it is; for DeepSpeed's bf16 mode, which holds every
trainable parameter in bf16 (ZeRO-3 requires one dtype) with float32 master weights in its
optimizer, :func:`release_float32` lets it cast the routers too: the master weights that train stay
float32, and the router's logits are still computed in float32 (from the bf16 copy).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mote_convert.modeling.block import MoTEBlock


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules that become FSDP units, children before parents (the root last)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    for sub in model.modules():  # composite models (LLaVA) list them on their sub-models
        names |= set(getattr(sub, "_no_split_modules", None) or ())
    units: list[nn.Module] = []
    for module in reversed(list(model.modules())):  # pre-order reversed: children come first
        if module is model:
            continue
        holds_block = any(isinstance(child, MoTEBlock) for child in module.children())
        if type(module).__name__ in names or holds_block:
            units.append(module)
    units.append(model)
    return units


def fully_shard_mote(model: nn.Module, *, mp_policy: Any = None, **fsdp_kwargs: Any) -> nn.Module:
    """Apply FSDP2's ``fully_shard`` to a MoTE model: routers as float32 units, then decoder layers,
    then the root. ``mp_policy`` (a ``MixedPrecisionPolicy``) and the other keyword arguments
    (``mesh``, ``reshard_after_forward``, ...) go to ``fully_shard`` for every unit but the routers,
    which always get ``param_dtype=reduce_dtype=float32``. Returns the model (sharded in place)."""
    from torch.distributed.fsdp import fully_shard

    shard_routers(model, **fsdp_kwargs)
    policy = {} if mp_policy is None else {"mp_policy": mp_policy}
    for unit in shard_units(model):
        fully_shard(unit, **policy, **fsdp_kwargs)
    return model


def shard_routers(model: nn.Module, **fsdp_kwargs: Any) -> nn.Module:
    """Make each router its own FSDP2 unit with a float32 policy, before an engine shards the rest:
    accelerate's FSDP2 preparation (the Trainer's ``fsdp`` option, ``accelerate launch`` with an FSDP2
    config) leaves modules that are already FSDP units as they are, so its bf16 policy then never
    reaches the routers. Returns the model."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    float32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    for module in model.modules():
        if isinstance(module, MoTEBlock):
            fully_shard(module.router, mp_policy=float32, **fsdp_kwargs)
    return model


def release_float32(model: nn.Module) -> None:
    """Let an engine's dtype cast reach the routers (DeepSpeed bf16); see the module's docstring."""
    from mote_convert.modeling.bitlinear import Float32Linear

    for module in model.modules():
        if isinstance(module, Float32Linear):
            module.keep_float32 = False
