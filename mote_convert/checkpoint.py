"""Opening a model directory: ``config.json`` (bounded, a JSON object), its ``model_type``, the
architecture it names, and the validated ``mote`` section of a MoTE checkpoint. Every command starts
here; the tensors' headers are :func:`mote_convert.io.index.load_index`'s.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from mote_convert.arch import Architecture, architecture_of
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
        cache = _READS[-1] if _READS else None
        key = str(path.resolve())
        config = cache.get(key) if cache is not None else None
        if config is None:
            config = load_json(path, MAX_CONFIG_BYTES)
            if cache is not None:
                cache[key] = config
    except JsonFileError as exc:
        raise InputNotFoundError(f"{path}: {exc}; not a model config") from None
    return copy.deepcopy(config)  # callers may change their copy


_READS: list[dict[str, dict[str, Any]]] = []


@contextmanager
def one_read_per_file() -> Iterator[None]:
    """Within the block (a command: nested blocks share the outermost), each config.json is read
    once, and every step that opens the checkpoint (a check, a plan, the loader) gets that read."""
    if _READS:
        yield
        return
    _READS.append({})
    try:
        yield
    finally:
        _READS.pop()


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
    arch, mote = mote_config_of(config, root)
    return config, arch, mote


def mote_config_of(config: Mapping[str, Any], root: Path | str) -> tuple[Architecture, MoteConfig]:
    """The architecture and validated ``mote`` section of a config.json already read."""
    model_type_of(config, root)
    arch = architecture_of(config)
    return arch, MoteConfig.parse(config.get("mote"), root, arch=arch, num_layers=arch.num_layers_of(config))


def dense_architecture(config: Mapping[str, Any], root: str | Path) -> Architecture:
    """The architecture of a dense source's config.json; a MoTE or unsupported one is an error.

    Checked from config.json alone, before any weight file is opened.
    """
    if "mote" in config:
        raise FormatError(f"{root} is already a MoTE checkpoint (config.json has a 'mote' section)")
    model_type_of(config, root)
    return architecture_of(config)
