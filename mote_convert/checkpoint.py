"""Opening a model directory: ``config.json`` (bounded, a JSON object), its ``model_type``, the
architecture it names, and the validated ``mote`` section of a MoTE checkpoint. Every command starts
here; the tensors' headers are :func:`mote_convert.io.index.load_index`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mote_convert.arch import Architecture, check_text_model, get_architecture
from mote_convert.errors import FormatError, InputNotFoundError, UnsupportedArchitectureError
from mote_convert.format import MoteConfig
from mote_convert.io.jsonfile import JsonFileError, load_json

MAX_CONFIG_BYTES = 16 << 20


def read_config(root: str | Path) -> dict[str, Any]:
    """Read a checkpoint directory's config.json."""
    root = Path(root)
    if not root.exists():
        raise InputNotFoundError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise InputNotFoundError(f"{root}: not a directory (give a Hugging Face checkpoint directory)")
    path = root / "config.json"
    if not path.is_file():
        raise InputNotFoundError(f"{root}: no config.json (not a Hugging Face checkpoint directory)")
    try:
        config = load_json(path, MAX_CONFIG_BYTES)
    except JsonFileError as exc:
        raise InputNotFoundError(f"{path}: {exc}; not a model config") from None
    return config


def model_type_of(config: Mapping[str, Any], root: Path | str) -> str:
    """config.json's ``model_type``, which must be a string."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise UnsupportedArchitectureError(f"{root}: config.json's model_type is {model_type!r}, expected a string")
    return model_type


def read_mote_config(root: Path | str) -> tuple[dict[str, Any], Architecture, MoteConfig]:
    """A MoTE checkpoint's config.json, architecture and validated ``mote`` section (FormatError if
    it has none or it is invalid: the same validation ``inspect`` reports problem by problem)."""
    config = read_config(root)
    arch = get_architecture(model_type_of(config, root))
    text = arch.text_config_of(config)
    num_layers = text.get(arch.num_layers_key)
    mote = MoteConfig.parse(
        config.get("mote"), root, arch=arch, num_layers=num_layers if isinstance(num_layers, int) else None
    )
    return config, arch, mote


def dense_architecture(config: Mapping[str, Any], root: str | Path) -> Architecture:
    """The architecture of a dense source's config.json; a MoTE or unsupported one is an error.

    Checked from config.json alone, before any weight file is opened.
    """
    if "mote" in config:
        raise FormatError(f"{root} is already a MoTE checkpoint (config.json has a 'mote' section)")
    arch = get_architecture(model_type_of(config, root))
    check_text_model(arch, config)
    return arch
