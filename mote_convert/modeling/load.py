"""load_model / save_model / aux_loss: MoTE checkpoints in ordinary transformers model classes.

``load_model`` lets transformers build the source's model class and load every dense tensor (the shared
experts included, under their ordinary names; the weights are allocated once, on the meta device
first), then swaps each MoE layer's FFN module for a :class:`MoTEBlock` and loads its router and
experts from the files, strictly, through ``config.json["mote"]["layer_prefixes"]``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from mote_convert.errors import FormatError
from mote_convert.format import (
    BIAS,
    SAFETENSORS_METADATA,
    ExpertCodec,
    ExpertFormat,
    MoteConfig,
    check_file_metadata,
    expert_base,
    get_codec,
    router_name,
)
from mote_convert.io.dtypes import safetensors_dtype
from mote_convert.io.index import CheckpointIndex, load_index
from mote_convert.io.reader import TensorReader
from mote_convert.io.writer import StagedOutput, TensorSpec, plan_shards, write_shards
from mote_convert.modeling.bitlinear import MODES, PACKED, TRAIN, TernaryLinear
from mote_convert.modeling.block import MoTEBlock
from mote_convert.options import DEFAULT_MAX_SHARD_SIZE, parse_size
from mote_convert.plan import read_mote_config

_HOOK_ATTR = "_mote_aux_hook"


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """from_pretrained reports the expert tensors as unexpected: expected here, so not shown."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _model_class(config: dict[str, Any]) -> type:
    import transformers

    names = config.get("architectures") or []
    for name in names:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise FormatError(f"config.json names no transformers model class this version has (architectures: {names})")


def mote_blocks(model: nn.Module) -> list[MoTEBlock]:
    """Every MoTE block of a model, in module order."""
    return [m for m in model.modules() if isinstance(m, MoTEBlock)]


def load_model(
    path: str | Path,
    mode: str = PACKED,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Load a MoTE checkpoint into its transformers model class with MoTE blocks in its MoE layers.

    ``mode="packed"`` keeps routed experts packed (2 bits per weight) and runs forward / generate;
    ``mode="train"`` gives routed experts latent float parameters trained with the STE, and only
    routers and routed experts require gradients. ``dtype=None`` keeps the checkpoint's dtype;
    routers are float32 always. When the model gets labels, its loss includes
    ``router_aux_loss_coef * L_aux`` of that forward.
    """
    if mode not in MODES:
        raise FormatError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    root = Path(path)
    config, arch, mote = read_mote_config(root)
    index = load_index(root)
    for file, metadata in index.metadata.items():
        problem = check_file_metadata(file, metadata)
        if problem is not None:
            raise FormatError(f"{root}: {problem}")
    cls = _model_class(config)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    with _quiet_transformers():
        model = cls.from_pretrained(root, dtype=dtype if dtype is not None else "auto")
    model_dtype = next(model.parameters()).dtype
    reader = TensorReader(index)
    expected_keys: set[str] = set()
    for layer, prefix in mote.layer_prefixes.items():
        ffn = model.get_submodule(arch.module_path.replace("{layer}", str(layer)))
        block = _make_block(ffn, mote, mode, model_dtype)
        expected_keys |= _load_block(block, prefix, mote, index, reader)
        parent_name, _, child = arch.module_path.replace("{layer}", str(layer)).rpartition(".")
        setattr(model.get_submodule(parent_name), child, block)
    prefixes = tuple(f"{p}." for p in mote.layer_prefixes.values())
    for name in index.tensors:
        if name.startswith(prefixes) and (".experts." in name or ".router." in name) and name not in expected_keys:
            raise FormatError(f"{root}: unexpected MoTE tensor {name}")
    _set_trainable(model, mode)
    attach_aux_loss(model, mote.router_aux_loss_coef)
    if device is not None:
        model.to(device)
    model.config.mote = mote.to_dict()
    return model


def _make_block(ffn: nn.Module, mote: MoteConfig, mode: str, dtype: torch.dtype) -> MoTEBlock:
    projections = mote.projections
    for proj in projections:
        if not isinstance(getattr(ffn, proj, None), nn.Linear):
            raise FormatError(f"{type(ffn).__name__} has no linear {proj!r}; the checkpoint's projections do not fit the model")
    hidden = getattr(ffn, projections[0]).in_features
    with torch.device("meta"):
        return MoTEBlock(
            ffn,
            projections=projections,
            hidden_size=hidden,
            num_experts=mote.num_experts,
            top_k=mote.top_k,
            norm_topk_prob=mote.norm_topk_prob,
            mode=mode,
            dtype=dtype,
        )


def _read_checked(
    index: CheckpointIndex, reader: TensorReader, name: str, shape: tuple[int, ...], dtype: str | None = None
) -> torch.Tensor:
    info = index.tensors.get(name)
    if info is None:
        raise FormatError(f"{index.root}: MoTE tensor {name} is missing")
    if info.shape != shape or (dtype is not None and info.dtype != dtype):
        want = f"{dtype + ' ' if dtype else ''}{list(shape)}"
        raise FormatError(f"{index.root}: MoTE tensor {name} is {info.dtype} {list(info.shape)}, expected {want}")
    return reader.read(name).clone()  # own the memory: the mapped file may be replaced later


def _load_block(block: MoTEBlock, prefix: str, mote: MoteConfig, index: CheckpointIndex, reader: TensorReader) -> set[str]:
    """Load router and experts of one block from the checkpoint; returns the names it read."""
    device = next(p for p in block.parameters() if not p.is_meta).device
    keys = set()
    name = router_name(prefix)
    block.router.weight = nn.Parameter(
        _read_checked(index, reader, name, tuple(block.router.weight.shape), "F32").to(device)
    )
    keys.add(name)
    codec = get_codec(mote.expert_format)
    for i, expert in enumerate(block.experts):
        for proj in mote.projections:
            linear: TernaryLinear = getattr(expert, proj)
            base = expert_base(prefix, i, proj)
            out_f, in_f = linear.out_features, linear.in_features
            shared = index.tensors.get(f"{prefix}.{proj}.weight")
            dense_dtype = shared.dtype if shared is not None else safetensors_dtype(linear.bias.dtype if linear.bias is not None else torch.float32)
            parts = {}
            for part in codec.parts(dense_dtype, (out_f, in_f)):
                parts[part.suffix] = _read_checked(index, reader, f"{base}.{part.suffix}", part.shape, part.dtype).to(device)
                keys.add(f"{base}.{part.suffix}")
            linear.to_empty(device=device)  # built on meta: real storage before the weights are set
            if linear.mode == PACKED and codec.format is ExpertFormat.PACKED_2BIT:
                linear.load_packed(parts[codec.primary], parts[codec.scale])  # kept as stored
            else:
                linear.load_latent(codec.decode(parts, out_f))
            if linear.bias is not None:
                bias = _read_checked(index, reader, f"{base}.{BIAS}", (out_f,))
                linear.bias = nn.Parameter(bias.to(device=device, dtype=linear.bias.dtype))
                keys.add(f"{base}.{BIAS}")
    return keys


def _set_trainable(model: nn.Module, mode: str) -> None:
    if mode != TRAIN:
        return
    for p in model.parameters():
        p.requires_grad_(False)
    for block in mote_blocks(model):
        block.router.weight.requires_grad_(True)
        for p in block.experts.parameters():
            p.requires_grad_(True)


def aux_loss(model: nn.Module) -> torch.Tensor | None:
    """The last forward's load-balancing loss L_aux summed over MoE layers (unscaled), or None."""
    losses = [b.last_aux_loss for b in mote_blocks(model) if b.last_aux_loss is not None]
    return torch.stack(losses).sum() if losses else None


def attach_aux_loss(model: nn.Module, coef: float) -> None:
    """Make the model's returned loss include ``coef * L_aux`` whenever it computes a loss.

    A forward hook on the top model: the HF ``Trainer`` (or any loop) reads ``outputs.loss`` and
    trains the routers with the load-balancing loss without custom code.
    """
    old = getattr(model, _HOOK_ATTR, None)
    if old is not None:
        old.remove()

    def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        loss = getattr(output, "loss", None)
        extra = aux_loss(module)
        if loss is not None and extra is not None and coef:
            output.loss = loss + coef * extra.to(loss.dtype)
        return output

    setattr(model, _HOOK_ATTR, model.register_forward_hook(hook, with_kwargs=True))


def _expert_tensors(block: MoTEBlock, module_prefix: str, codec: ExpertCodec) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i, expert in enumerate(block.experts):
        for name, linear in expert.named_children():
            if not isinstance(linear, TernaryLinear):
                continue
            base = expert_base(module_prefix, i, name)
            if linear.mode == PACKED and codec.format is ExpertFormat.PACKED_2BIT:
                packed, scale = linear.packed_state()  # stored as is: no decode and re-encode
                parts = {codec.primary: packed, codec.scale: scale}
            else:
                parts = codec.encode(linear.latent_state())
            out.update({f"{base}.{suffix}": tensor for suffix, tensor in parts.items()})
            if linear.bias is not None:
                out[f"{base}.{BIAS}"] = linear.bias.detach()
    return out


def save_model(
    model: nn.Module,
    out_path: str | Path,
    expert_format: str = "packed-2bit",
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
) -> Path:
    """Save a model from :func:`load_model` as a MoTE checkpoint in ``expert_format``.

    Tensor names are the model's state-dict names mapped back to the checkpoint's key style by
    transformers; the files are written beside ``out_path`` and renamed when complete.
    """
    from transformers.core_model_loading import revert_weight_conversion

    codec = get_codec(expert_format)
    raw = getattr(model.config, "mote", None)
    if raw is None:
        raise FormatError("the model has no MoTE config (load it with mote_convert.load_model)")
    mote = MoteConfig.parse(raw, "model.config.mote")
    blocks = {name: m for name, m in model.named_modules() if isinstance(m, MoTEBlock)}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if any(name.startswith(f"{b}.experts.") for b in blocks):
            continue
        state[name] = tensor
    for name, block in blocks.items():
        state.update(_expert_tensors(block, name, codec))
    state = revert_weight_conversion(model, state)
    specs = [TensorSpec(n, safetensors_dtype(t.dtype), tuple(t.shape)) for n, t in sorted(state.items())]
    shards = plan_shards(specs, parse_size(max_shard_size))
    out = Path(out_path)
    with StagedOutput(out, overwrite=overwrite) as staging:
        write_shards(staging, shards, SAFETENSORS_METADATA, lambda writer, spec: writer.write(spec.name, state[spec.name]))
        config = model.config
        config.mote = mote.with_format(codec.format).to_dict()
        try:
            config.save_pretrained(staging)
        finally:
            config.mote = raw
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(staging)
    return out


