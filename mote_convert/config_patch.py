"""The output's config.json (the source's plus ``"mote"``) and copies of the source's other files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

from mote_convert.io.index import INDEX_FILE

# Weights are rewritten, never copied: safetensors files and their index (ours replace them), and
# other serializations of the same dense weights, which loaders would otherwise pick up.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_SKIPPED_NAMES = {"config.json", INDEX_FILE, "pytorch_model.bin.index.json", ".git", ".cache"}


def write_config(config: Mapping[str, Any], mote: Mapping[str, Any] | None, out_dir: Path) -> None:
    """Write config.json: ``config`` unchanged, with ``"mote"`` set (or removed when None)."""
    patched = dict(config)
    patched.pop("mote", None)
    if mote is not None:
        patched["mote"] = dict(mote)
    (out_dir / "config.json").write_text(json.dumps(patched, indent=2) + "\n")


def auxiliary_files(src_dir: Path) -> list[Path]:
    """The source directory's files that are copied unchanged (tokenizer, processor, templates, ...)."""
    files = []
    for path in sorted(src_dir.rglob("*")):
        rel = path.relative_to(src_dir)
        if any(part in _SKIPPED_NAMES for part in rel.parts) or not path.is_file():
            continue
        if path.name.endswith(_WEIGHT_SUFFIXES) or ".partial-" in rel.parts[0]:
            continue
        files.append(path)
    return files


def copy_auxiliary_files(src_dir: Path, out_dir: Path) -> list[str]:
    """Copy every auxiliary file of ``src_dir`` into ``out_dir``, keeping sub-directories."""
    copied = []
    for path in auxiliary_files(src_dir):
        rel = path.relative_to(src_dir)
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied.append(str(rel))
    return copied
