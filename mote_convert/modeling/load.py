"""load_model / save_model / aux_loss: MoTE checkpoints in ordinary transformers model classes.

``load_model`` is a thin wrapper over the source class's ``from_pretrained`` with a
:class:`~mote_convert.modeling.quantizer.MoteQuantizationConfig`: transformers builds the model on
the meta device, the MoTE quantizer swaps in the MoE blocks, and one loading pass reads every tensor
(see :mod:`mote_convert.modeling.quantizer`). What transformers reports as missing, unexpected or
mismatched is an error here, naming the tensors: nothing is ever initialised at random.

``save_model`` is ``save_pretrained`` into a staged directory, in the expert format asked for;
``load_trainable`` loads a training checkpoint's routers and latent experts into a loaded model. The
model surgery itself (blocks, trainable flags, the aux-loss hook) is
:mod:`mote_convert.modeling.integration`'s; its helpers are re-exported here.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from mote_convert.arch import model_class
from mote_convert.checkpoint import one_read_per_file, read_mote_config
from mote_convert.errors import FormatError
from mote_convert.format import MoteConfig, get_codec
from mote_convert.io.index import load_index
from mote_convert.io.source import resolve_model
from mote_convert.io.staging import StagedOutput
from mote_convert.modeling.bitlinear import MODES, PACKED
from mote_convert.modeling.integration import attach_aux_loss, aux_loss, mote_blocks
from mote_convert.modeling.quantizer import MoteHfQuantizer, MoteQuantizationConfig
from mote_convert.options import DEFAULT_MAX_SHARD_SIZE, parse_size


@one_read_per_file()
def load_model(
    path: str | Path,
    mode: str = PACKED,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    *,
    device_map: Any = None,
    **from_pretrained_kwargs: Any,
) -> nn.Module:
    """Load a MoTE checkpoint into its transformers model class with MoTE blocks in its MoE layers.

    ``mode="packed"`` keeps routed experts packed (2 bits per weight) and runs forward / generate;
    ``mode="train"`` gives routed experts latent float parameters trained with the STE, and only
    routers and routed experts require gradients. ``dtype=None`` keeps the checkpoint's dtype;
    routers (and scales) are float32 always. ``device_map``, ``max_memory``, ``offload_folder`` and
    the other ``from_pretrained`` arguments pass through. When the model gets labels, its loss
    includes ``router_aux_loss_coef * L_aux`` of that forward.
    """
    if mode not in MODES:
        raise FormatError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    root = resolve_model(path, from_pretrained_kwargs.pop("revision", None))  # a directory or a Hub repo id
    config, _, _ = read_mote_config(root)  # a dense or malformed checkpoint fails here, by name
    load_index(root)  # and files that do not agree with their index (one inside the directory, every tensor listed)
    cls = model_class(config)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise FormatError(f"unknown dtype {dtype!r}")
    # Mismatched shapes are reported (then refused below, by name) rather than raised as a bare RuntimeError.
    from_pretrained_kwargs.setdefault("ignore_mismatched_sizes", True)
    with quiet_progress():
        model, info = cls.from_pretrained(
            root,
            quantization_config=MoteQuantizationConfig(mode),
            dtype=dtype if dtype is not None else "auto",
            device_map=device_map,
            output_loading_info=True,
            **from_pretrained_kwargs,
        )
    _raise_on_loading_problems(root, info)
    if device is not None:
        model.to(device)
    return model


@contextmanager
def quiet_progress() -> Iterator[None]:
    """transformers' loading and saving progress bars off for the block (the library never prints)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _raise_on_loading_problems(root: Path, info: dict[str, Any]) -> None:
    """transformers' loading report, as one error naming the tensors (it would initialise them at random)."""
    parts = []
    for key, label in (
        ("missing_keys", "missing"),
        ("unexpected_keys", "unexpected"),
        ("mismatched_keys", "of the wrong shape"),
    ):
        found = sorted(str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get(key) or ())
        if found:
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
            parts.append(f"{label}: {shown}")
    if parts:
        raise FormatError(f"{root}: tensors {'; '.join(parts)}")


def save_model(
    model: nn.Module,
    out_path: str | Path,
    expert_format: str = "packed-2bit",
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
) -> Path:
    """Save a model from :func:`load_model` as a MoTE checkpoint in ``expert_format``.

    ``save_pretrained`` into a directory beside ``out_path`` that is renamed when complete; the
    tensor names are the checkpoint's own (transformers maps them back), the experts are encoded
    as ``expert_format`` says.
    """
    codec = get_codec(expert_format)
    if not isinstance(getattr(model, "hf_quantizer", None), MoteHfQuantizer):
        raise FormatError("the model was not loaded as a MoTE model (load it with mote_convert.load_model)")
    raw = model.config.mote
    mote = MoteConfig.parse(raw, "model.config.mote")
    size = parse_size(max_shard_size)
    source = getattr(model, "name_or_path", "") or ""
    protect = (
        (Path(source),) if source and Path(source).exists() else ()
    )  # never written into the checkpoint it came from
    with StagedOutput(Path(out_path), overwrite=overwrite, protect=protect) as staging:
        model.config.mote = mote.with_format(codec.format).to_dict()
        try:
            with quiet_progress():
                model.save_pretrained(staging, max_shard_size=size)
        finally:
            model.config.mote = raw
    return Path(out_path)


def load_trainable(model: nn.Module, root: str | Path) -> int:
    """Load the trainable tensors (routers, latent experts) of the checkpoint at ``root`` into
    ``model``, strictly: each is found under the name ``save_pretrained`` gives it (transformers'
    own key conversion, reversed, as the save applied it) with the model's shape, or nothing is
    loaded and the error names it. Returns the number of tensors loaded."""
    from transformers.core_model_loading import revert_weight_conversion

    from mote_convert.io.reader import TensorReader

    root = Path(root)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise FormatError("the model has no trainable tensors to load (load it with mode='train')")
    on_disk: dict[str, str] = {}
    for name, param in params.items():
        (key,) = revert_weight_conversion(model, {name: param.detach()}).keys()
        on_disk[key] = name
    index = load_index(root)
    for key, name in on_disk.items():
        info = index.tensors.get(key)
        if info is None:
            raise FormatError(f"{root}: not a checkpoint of this model: it has no {key}")
        if tuple(info.shape) != tuple(params[name].shape):
            raise FormatError(
                f"{root}: not a checkpoint of this model: {key} is {list(info.shape)}, "
                f"the model's is {list(params[name].shape)}"
            )
    reader = TensorReader(index)
    with torch.no_grad():
        for key, name in on_disk.items():
            params[name].copy_(reader.read(key))
    return len(on_disk)


# the model-level helpers users reach through this module (and ``mote_convert.aux_loss``)
__all__ = ["attach_aux_loss", "aux_loss", "load_model", "load_trainable", "mote_blocks", "quiet_progress", "save_model"]
