"""The model surgery of MoTE inside a transformers model (the transformers layout: this module is to
:mod:`mote_convert.modeling.quantizer` what ``integrations/bitnet.py`` is to ``quantizer_bitnet.py``).

Replace each MoE layer's dense FFN with a :class:`MoTEBlock` built in the checkpoint's storage format,
check and convert the loaded experts, set what trains, hook the load-balancing loss into
``outputs.loss``, and give the state dict to save in another expert format. No loading or saving here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mote_convert.arch import Architecture
from mote_convert.check import check_expert_values
from mote_convert.errors import FormatError
from mote_convert.format import BIAS, ExpertCodec, ExpertFormat, MoteConfig, expert_base, get_codec
from mote_convert.modeling.aux_loss import AuxGradCell, probe_loss
from mote_convert.modeling.bitlinear import PACKED, TRAIN, TernaryLinear
from mote_convert.modeling.block import MoTEBlock

_HOOK_ATTR = "_mote_aux_hook"


def mote_blocks(model: nn.Module) -> list[MoTEBlock]:
    """Every MoTE block of a model, in module order."""
    return [m for m in model.modules() if isinstance(m, MoTEBlock)]


def replace_ffns(
    model: nn.Module, arch: Architecture, mote: MoteConfig, stored_mode: str, dtype: Any
) -> dict[str, str]:
    """Swap each MoE layer's FFN module for a MoTE block whose experts hold ``stored_mode``'s tensors
    (the checkpoint's format, so that its tensors load under their names). Returns the in-memory
    path of each block -> its FFN prefix P as the checkpoint names it."""
    prefixes: dict[str, str] = {}
    for layer, prefix in mote.layer_prefixes.items():
        path = arch.module_path_for(layer)
        prefixes[path] = prefix
        ffn = model.get_submodule(path)
        block = make_block(ffn, mote, stored_mode, dtype)
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent), child, block)
    return prefixes


def finish_blocks(model: nn.Module, mote: MoteConfig, mode: str, prefixes: dict[str, str]) -> None:
    """After loading: routers float32, the loaded expert values checked (named as the checkpoint
    names them), experts converted to ``mode``, the trainable flags set, the aux loss hooked in."""
    dtype = float_dtype(model)
    for name, block in model.named_modules():
        if not isinstance(block, MoTEBlock):
            continue
        block.router.float()  # device moves only; float32 already, by the load's dtype plan
        check_values(prefixes.get(name, name), block, mote)
        block.set_mode(mode, dtype)
    set_trainable(model, mode)
    attach_aux_loss(model, mote.router_aux_loss_coef)


def aux_loss(model: nn.Module) -> torch.Tensor | None:
    """The last forward's load-balancing loss L_aux summed over MoE layers (unscaled), or None."""
    losses = [b.last_aux_loss for b in mote_blocks(model) if b.last_aux_loss is not None]
    return torch.stack(losses).sum() if losses else None


def attach_aux_loss(model: nn.Module, coef: float) -> None:
    """Make the model's returned loss include ``coef * L_aux`` whenever it computes a loss.

    The value is added to ``outputs.loss`` by a forward hook on the top model; the gradient is
    carried by the MoE blocks' own autograd graph (:mod:`mote_convert.modeling.aux_loss`), so it is
    right under gradient checkpointing (reentrant or not), gradient accumulation and loss scaling.
    The HF ``Trainer`` (or any loop that backpropagates ``outputs.loss``) trains the routers with
    the load-balancing loss without custom code.
    """
    for handle in getattr(model, _HOOK_ATTR, ()):
        handle.remove()
    cell = AuxGradCell(coef)
    for block in mote_blocks(model):
        block.aux_cell = cell

    def reset(module: nn.Module, args: Any, kwargs: Any) -> None:
        cell.grad = None  # a new forward: no backward has reached its loss yet

    def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        loss = getattr(output, "loss", None)
        extra = aux_loss(module)
        if loss is not None and extra is not None and coef:
            output.loss = probe_loss(loss + coef * extra.detach().to(loss.dtype), cell)
        return output

    setattr(
        model,
        _HOOK_ATTR,
        (
            model.register_forward_pre_hook(reset, with_kwargs=True),
            model.register_forward_hook(hook, with_kwargs=True),
        ),
    )


def expert_state_dict(model: nn.Module, codec: ExpertCodec) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every routed expert stored as ``codec`` stores it (in-memory names)."""
    blocks = {name: m for name, m in model.named_modules() if isinstance(m, MoTEBlock)}
    state = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if not any(name.startswith(f"{b}.experts.") for b in blocks)
    }
    for name, block in blocks.items():
        for i, expert in enumerate(block.experts):
            for proj, linear in expert.named_children():
                if not isinstance(linear, TernaryLinear):
                    continue
                base = expert_base(name, i, proj)
                if linear.mode == PACKED and codec.format is ExpertFormat.PACKED_2BIT:
                    packed, scale = linear.packed_state()  # stored as is: no decode and re-encode
                    parts = {codec.primary: packed, codec.scale: scale}
                else:
                    parts = codec.encode(linear.latent_state())
                state.update({f"{base}.{suffix}": tensor for suffix, tensor in parts.items()})
                if linear.bias is not None:
                    state[f"{base}.{BIAS}"] = linear.bias.detach()
    return state


def check_values(block_name: str, block: MoTEBlock, mote: MoteConfig) -> None:
    """Refuse, naming the tensor, expert values no sound checkpoint holds (the checks of ``pack`` and
    ``export gguf`` as they stream): non-finite latent weights, packed codes holding 0b11. One pass
    over what was just loaded, before any conversion computes with it."""
    codec = get_codec(mote.expert_format)
    for name, module in block.experts.named_modules():
        if not isinstance(module, TernaryLinear):
            continue
        tensor = getattr(module, "weight_packed", None) if codec.scale is not None else getattr(module, "weight", None)
        if tensor is not None and tensor.device.type != "meta":  # an offloaded weight is checked where it is read
            check_expert_values(f"{block_name}.experts.{name}.{codec.primary}", codec, tensor.detach())


def float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's dense weights (the latent experts take it)."""
    counts: dict[torch.dtype, int] = {}
    for p in model.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.__getitem__) if counts else torch.float32


def make_block(ffn: nn.Module, mote: MoteConfig, mode: str, dtype: Any) -> MoTEBlock:
    for proj in mote.projections:
        if not isinstance(getattr(ffn, proj, None), nn.Linear):
            raise FormatError(
                f"{type(ffn).__name__} has no linear {proj!r}; the checkpoint's projections do not fit the model"
            )
    first = getattr(ffn, mote.projections[0])  # every FFN kind leads with an [intermediate, hidden] projection
    weight = first.weight
    return MoTEBlock(
        ffn,
        projections=mote.projections,
        hidden_size=first.in_features,
        num_experts=mote.num_experts,
        top_k=mote.top_k,
        norm_topk_prob=mote.norm_topk_prob,
        mode=mode,
        dtype=weight.dtype if not isinstance(dtype, torch.dtype) else dtype,
    )


def set_trainable(model: nn.Module, mode: str) -> None:
    """Train mode: only routers and routed experts learn. Packed mode leaves the flags as
    from_pretrained set them, as for the dense model (torch's matmul takes another, much slower,
    path for a sliced input against a weight that does not require grad: the last-token lm_head of
    generate copied the whole vocabulary matrix)."""
    if mode != TRAIN:
        return
    for p in model.parameters():
        p.requires_grad_(False)
    for block in mote_blocks(model):
        block.router.weight.requires_grad_(True)
        for p in block.experts.parameters():
            p.requires_grad_(True)
