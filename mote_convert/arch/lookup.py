"""The architecture of a config.json: a refusal with its reason, a definition file
(``configs/architectures/``, where discovery needs help), or else what discovery finds in the model
itself (:mod:`mote_convert.arch.discover`)."""

from __future__ import annotations

from typing import Any, Mapping

from mote_convert.arch.discover import Refusal, discover
from mote_convert.arch.registry import Architecture, definitions, unsupported_model_types
from mote_convert.arch.skeleton import text_sub_config
from mote_convert.errors import UnsupportedArchitectureError


def refusal_reason(model_type: object) -> str | None:
    """Why ``configs/unsupported.yaml`` refuses a model_type (None: it does not)."""
    return unsupported_model_types().get(model_type) if isinstance(model_type, str) else None


def architecture_of(config: Mapping[str, Any]) -> Architecture:
    """Where this model keeps its decoder FFNs; UnsupportedArchitectureError, with the reason, if it
    has none that MoTE can up-cycle. A multimodal model whose language model is refused (LLaVA on
    Mixtral) is refused the same way."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise UnsupportedArchitectureError(f"config.json's model_type is {model_type!r}, expected a string")
    reason = refusal_reason(model_type)
    if reason is not None:
        raise Refusal(model_type, reason)
    definition = definitions().get(model_type)
    if definition is not None:
        _check_text_model(definition, config)
        return definition
    text_key, text = text_sub_config(config)
    reason = refusal_reason(text.get("model_type")) if text_key is not None else None
    if reason is not None:
        raise Refusal(model_type, reason, what=f"{model_type} with a {text.get('model_type')!r} language model")
    return discover(config)


def _check_text_model(arch: Architecture, config: Mapping[str, Any]) -> None:
    if arch.text_config is None:
        return
    text_type = arch.text_config_of(config).get("model_type")
    reason = refusal_reason(text_type)
    if reason is not None:
        raise Refusal(arch.name, reason, what=f"{arch.name} with a {text_type!r} language model")
