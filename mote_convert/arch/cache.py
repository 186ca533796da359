"""Discovered architectures remembered on disk, so that a command on a model seen before does not
import transformers' modeling code again (the imports cost seconds; discovery itself milliseconds).

One JSON file per (transformers version, config.json) under ``$MOTE_CONVERT_CACHE`` (default
``$XDG_CACHE_HOME/mote-convert`` or ``~/.cache/mote-convert``), in ``architectures/``. A file that
cannot be read or parsed is ignored and rewritten; a cache that cannot be written is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from mote_convert.arch.ffn import get_ffn_kind
from mote_convert.arch.registry import Architecture

FORMAT = 1


def cache_dir() -> Path:
    """Where discovered architectures are remembered."""
    root = os.environ.get("MOTE_CONVERT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mote-convert"
    )
    return Path(root) / "architectures"


def cache_key(config_json: str) -> str:
    """The file name of a config.json's architecture: its text and the transformers that read it."""
    version = metadata.version("transformers")
    return hashlib.sha256(f"{FORMAT}\0{version}\0{config_json}".encode()).hexdigest()


def load(key: str) -> Architecture | None:
    """The remembered architecture, or None."""
    try:
        data: dict[str, Any] = json.loads((cache_dir() / f"{key}.json").read_text())
        data["ffn_kind"] = get_ffn_kind(data["ffn_kind"])
        for name in ("model_types", "ffn_prefixes", "vision_prefixes", "projector_prefixes"):
            data[name] = tuple(data[name])
        if data["ffn_layers"] is not None:
            data["ffn_layers"] = tuple(data["ffn_layers"])
        if set(data) != {f.name for f in fields(Architecture)}:
            return None
        return Architecture(**data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    except Exception:  # noqa: BLE001  (an unknown FFN kind, a damaged file: rediscover)
        return None


def store(key: str, arch: Architecture) -> None:
    """Remember an architecture (written beside its place, then renamed; failures are ignored)."""
    data = asdict(arch) | {"ffn_kind": arch.ffn_kind.name}
    path = cache_dir() / f"{key}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
