"""MoTE as a transformers quantization method: ``from_pretrained`` builds and loads MoTE models itself.

``MoteQuantizationConfig(mode="packed" | "train")`` and ``MoteHfQuantizer`` are registered with
transformers' public ``register_quantization_config`` / ``register_quantizer`` under the name
``"mote"`` when this module is imported (``mote_convert.load_model`` does). Then::

    LlavaForConditionalGeneration.from_pretrained(path, quantization_config=MoteQuantizationConfig("train"))

reads ``config.json["mote"]``, checks the checkpoint's MoTE tensors from their headers (the checks
``inspect`` makes: a missing, misshapen or surplus router, expert or shared-expert tensor is an
error naming it, before anything loads), replaces each MoE layer's FFN with a :class:`MoTEBlock`
on the meta device, and lets transformers load every tensor (dense, shared experts, routers,
experts) in its one pass, with its usual device_map / dtype / offloading handling and its
missing / unexpected / mismatched-key reporting. The experts are built in the checkpoint's storage
format, so their tensors load under their on-disk names; after loading they are converted in
place to the requested mode (packed codes decode to the quantizer's fixed point for training,
latent weights quantize for packed inference).

The surgery is :mod:`mote_convert.modeling.integration`'s; this module is the ``HfQuantizer`` on top.
No ``quantization_config`` is written to ``config.json`` on save (stock transformers, without this
package, loads a MoTE output as the dense model); ``save_pretrained`` writes the experts in the
format ``config.json["mote"]["expert_format"]`` states, with ``mote_format`` safetensors metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
from transformers.utils.quantization_config import QuantizationConfigMixin

from mote_convert.check import require_sound
from mote_convert.checkpoint import mote_config_of
from mote_convert.errors import FormatError
from mote_convert.format import SAFETENSORS_METADATA, ExpertFormat, get_codec
from mote_convert.io.index import load_index
from mote_convert.modeling.bitlinear import MODES, PACKED, TRAIN
from mote_convert.modeling.integration import expert_state_dict, finish_blocks, replace_ffns

QUANT_METHOD = "mote"
# The storage format each mode keeps in memory (and save_pretrained writes by default).
MODE_FORMAT = {PACKED: ExpertFormat.PACKED_2BIT, TRAIN: ExpertFormat.LATENT}
FORMAT_MODE = {fmt: mode for mode, fmt in MODE_FORMAT.items()}
# Checkpoint keys (glob patterns) kept float32 whatever dtype the model loads in.
FLOAT32_KEYS = ("router.weight", "weight_scale")


class MoteQuantizationConfig(QuantizationConfigMixin):
    """How to load a MoTE checkpoint: ``mode="packed"`` (2-bit experts, inference) or ``"train"``
    (latent experts, QAT). The MoTE structure itself comes from ``config.json["mote"]``."""

    def __init__(self, mode: str = PACKED, **kwargs: Any) -> None:
        if mode not in MODES:
            raise FormatError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        self.quant_method = QUANT_METHOD
        self.mode = mode

    def to_dict(self) -> dict[str, Any]:
        return {"quant_method": QUANT_METHOD, "mode": self.mode}


class MoteHfQuantizer(HfQuantizer):
    """Builds MoTE blocks before the weights load and converts experts to the requested mode after."""

    requires_calibration = False
    quantization_config: MoteQuantizationConfig

    def validate_environment(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to check: MoTE needs no extra package or device."""

    def _process_model_before_weight_loading(self, model: nn.Module, **kwargs: Any) -> None:
        config = model.config
        where = getattr(config, "name_or_path", "") or "the checkpoint"
        config_dict = config.to_dict()
        arch, mote = mote_config_of(config_dict, where)  # the one parse of the mote section
        files = kwargs.get("checkpoint_files") or []
        if files:  # refuse, naming them, what inspect would report, before anything loads
            root = Path(files[0]).parent
            require_sound(root, load_index(root), config_dict, arch, mote)
        self.mote = mote
        # in-memory block path -> P, as the checkpoint names it
        self.checkpoint_prefixes = replace_ffns(model, arch, mote, FORMAT_MODE[mote.expert_format], kwargs.get("dtype"))
        model._keep_in_fp32_modules_strict = set(getattr(model, "_keep_in_fp32_modules_strict", None) or ()) | set(
            FLOAT32_KEYS
        )

    def _process_model_after_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        mode = self.quantization_config.mode
        finish_blocks(model, self.mote, mode, self.checkpoint_prefixes)
        model.config.mote = self.mote.with_format(MODE_FORMAT[mode]).to_dict()
        return model

    def postprocess_model(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        # Unlike the base class, no quantization_config stays in model.config (from_pretrained put it
        # there): a saved MoTE checkpoint is declared by config.json["mote"] alone, which stock
        # transformers ignores, so it loads an output as the dense model.
        if "quantization_config" in vars(model.config):
            del model.config.quantization_config
        for module in model.modules():
            if hasattr(module, "config") and hasattr(module.config, "_is_quantized"):
                module.config._is_quantized = True
        return self._process_model_after_weight_loading(model, **kwargs)

    def get_state_dict_and_metadata(self, model: nn.Module) -> tuple[dict[str, torch.Tensor] | None, dict[str, str]]:
        """What ``save_pretrained`` writes: the experts in the format ``config.mote`` states (re-encoded
        where that differs from the mode in memory), and the MoTE safetensors metadata."""
        metadata = dict(SAFETENSORS_METADATA)
        fmt = ExpertFormat.parse(model.config.mote["expert_format"])
        if fmt is MODE_FORMAT[self.quantization_config.mode]:
            return None, metadata  # save_pretrained's own state_dict holds exactly these tensors
        return expert_state_dict(model, get_codec(fmt)), metadata

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return True

    @property
    def is_qat_trainable(self) -> bool:
        return True


def register() -> None:
    """Register the config and the quantizer with transformers (once; importing this module does)."""
    if QUANT_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(QUANT_METHOD)(MoteQuantizationConfig)
    if QUANT_METHOD not in AUTO_QUANTIZER_MAPPING:
        register_quantizer(QUANT_METHOD)(MoteHfQuantizer)


register()

__all__ = ["MoteHfQuantizer", "MoteQuantizationConfig", "register"]
