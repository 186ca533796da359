"""The model's skeleton from its config.json: the class transformers loads it as, its config object
(sizes checked first, encoded floats decoded) and the model built on the meta device (every module
and parameter shape, no memory), with transformers' warnings about it silenced."""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from mote_convert.arch.values import MAX_DIM, config_int
from mote_convert.errors import UnsupportedArchitectureError, describe_exception
from mote_convert.format.config import MAX_LAYERS

if TYPE_CHECKING:
    from torch import nn


def model_class(config: Mapping[str, Any]) -> type:
    """The class config.json names in ``architectures``; else the image-text-to-text (then causal LM)
    class transformers' auto mappings give its model_type."""
    import transformers
    from transformers.models.auto import modeling_auto

    names = config.get("architectures") or []
    candidates = [str(n) for n in names] if isinstance(names, list) else []
    for mapping in (
        modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    ):
        name = mapping.get(str(config.get("model_type")))
        if name is not None:
            candidates.append(name)
    for name in candidates:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise UnsupportedArchitectureError(
        f"no transformers model class for model_type {config.get('model_type')!r} "
        f"(architectures: {names}): not an image-text-to-text or causal LM family of transformers "
        f"{transformers.__version__}"
    )


@contextmanager
def quiet() -> Iterator[None]:
    """transformers' warnings about a config or a model built only to be looked at, silenced."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)


def pretrained_config(config: Mapping[str, Any]) -> Any:
    """transformers' config object of a config.json mapping."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise UnsupportedArchitectureError(
            f"unsupported model_type {model_type!r}: transformers {transformers.__version__} does not know it"
        )
    _check_sizes(config, CONFIG_MAPPING[model_type])
    try:
        with quiet():
            return CONFIG_MAPPING[model_type].from_dict(_decoded(dict(config)))
    except Exception as exc:  # a family's own validation: the config.json is not one it accepts
        raise UnsupportedArchitectureError(
            f"transformers refuses this {model_type} config.json: {describe_exception(exc)}"
        ) from None


def text_sub_config(config: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """The language model's part of a config.json mapping, by its key (``text_config``,
    ``llm_config``, ...), or (None, the whole mapping) for a plain language model. Read from the JSON
    alone: no transformers import."""
    for key, value in config.items():
        if re.search("text|llm|language", key) and isinstance(value, Mapping):
            return key, value
    return None, config


def _check_sizes(config: Mapping[str, Any], config_class: type) -> None:
    """The language model's layer count and sizes, where config.json states them, are integers of a
    plausible size: checked before transformers builds anything from them (a layer count of 10**7
    would build ten million layers, even on the meta device)."""
    text_key, text = text_sub_config(config)
    aliases = dict(getattr(config_class, "attribute_map", None) or {})
    for key, high in (("num_hidden_layers", MAX_LAYERS), ("hidden_size", MAX_DIM), ("intermediate_size", MAX_DIM)):
        stored = aliases.get(key, key) if not text_key else key
        if text.get(stored) is not None and not isinstance(text.get(stored), list):  # per-layer lists: the family's
            config_int(text, stored, f"{text_key}.{stored}" if text_key else stored, high=high)


def _decoded(value: Any) -> Any:
    """config.json's encoded non-finite floats (``{"__float__": "Infinity"}``, as transformers writes
    them) as floats: ``from_dict`` takes the decoded form that ``from_pretrained`` reads."""
    if isinstance(value, dict):
        if set(value) == {"__float__"} and isinstance(value["__float__"], str):
            return float(value["__float__"])
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def skeleton(config: Any, cls: type) -> nn.Module:
    """The model built on the meta device: every module and parameter shape, no memory."""
    import torch

    try:
        with quiet(), torch.device("meta"):
            return cls._from_config(config)
    except Exception as exc:  # a family's own constructor: any error means it cannot be built from this config
        raise UnsupportedArchitectureError(
            f"transformers cannot build {cls.__name__} from this config.json: {describe_exception(exc)}"
        ) from None
