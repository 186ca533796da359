"""The output's config.json (the source's plus ``"mote"``) and copies of the source's other files.

Which auxiliary files are copied (tokenizer, processor, chat template, generation config, ...):

* regular files inside the model directory (sub-directories included);
* symlinks that resolve to a regular file inside the model directory, or into the blob store of the
  Hugging Face cache repository that the directory is a snapshot of (``hf download`` lays a snapshot
  out as ``models--org--name/snapshots/REV/FILE -> ../../blobs/HASH``).

Anything else (a symlink leading elsewhere, a dangling one, a symlinked directory, a FIFO or device)
is skipped and reported, never followed: upcycling a cloned repository must not copy files from
outside it into an output that may be uploaded. Copies keep the source's permission bits, narrowed
by the umask, and are never wider than the source file.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mote_convert.errors import read_error
from mote_convert.format import MoteConfig
from mote_convert.io.index import INDEX_FILE
from mote_convert.io.shards import create_file, write_text

# Weights are rewritten, never copied: safetensors files and their index (ours replace them), and
# other serializations of the same dense weights, which loaders would otherwise pick up.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_SKIPPED_NAMES = {"config.json", INDEX_FILE, "pytorch_model.bin.index.json", ".git", ".cache"}


@dataclass(frozen=True)
class AuxFile:
    """A file to copy: its name relative to the model directory and the path to read."""

    rel: str
    path: Path


@dataclass(frozen=True)
class SkippedFile:
    """A source entry that is not copied, and why."""

    rel: str
    reason: str

    def __str__(self) -> str:
        return f"{self.rel} ({self.reason})"


def file_mode(path: Path) -> int:
    """Permission bits of a file (following symlinks), for copies that must not be wider."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise read_error(path, exc, "stat") from None


def write_config(config: Mapping[str, Any], mote: MoteConfig | None, out_dir: Path, mode: int = 0o666) -> None:
    """Write config.json: ``config`` unchanged, with ``"mote"`` set (or removed when None)."""
    patched = dict(config)
    patched.pop("mote", None)
    if mote is not None:
        patched["mote"] = mote.to_dict()
    write_text(out_dir / "config.json", json.dumps(patched, indent=2) + "\n", mode)


def _blob_store(root: Path) -> Path | None:
    """``.../models--org--name/blobs`` when ``root`` (resolved) is a snapshot of an HF cache repository."""
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith(("models--", "datasets--", "spaces--")):
        return root.parent.parent / "blobs"
    return None


def auxiliary_files(src_dir: Path) -> tuple[list[AuxFile], list[SkippedFile]]:
    """The source directory's files that are copied unchanged, and the entries skipped (with why)."""
    root = src_dir.resolve()
    blobs = _blob_store(root)
    files: list[AuxFile] = []
    skipped: list[SkippedFile] = []

    def onerror(exc: OSError) -> None:
        raise read_error(exc.filename or src_dir, exc, "list") from None

    for dirpath, dirnames, filenames in os.walk(src_dir, onerror=onerror):  # never follows symlinked dirs
        here = Path(dirpath)
        rel_dir = here.relative_to(src_dir)
        for name in sorted(dirnames):
            if name in _SKIPPED_NAMES or ".partial-" in name or ".old-" in name:
                dirnames.remove(name)
            elif (here / name).is_symlink():
                skipped.append(SkippedFile(str(rel_dir / name), "a symlinked directory; not followed"))
        dirnames.sort()
        for name in sorted(filenames):
            rel = str(rel_dir / name)
            if name in _SKIPPED_NAMES or name.endswith(_WEIGHT_SUFFIXES) or name.endswith(".mote-lock"):
                continue
            path = here / name
            kind = os.lstat(path).st_mode
            if stat.S_ISLNK(kind):
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    skipped.append(SkippedFile(rel, "a dangling or looping symlink"))
                    continue
                inside = target.is_relative_to(root) or (blobs is not None and target.parent == blobs)
                if not inside:
                    skipped.append(SkippedFile(rel, f"a symlink to {target}, outside the model directory"))
                elif not target.is_file():
                    skipped.append(SkippedFile(rel, "a symlink to something that is not a regular file"))
                else:
                    files.append(AuxFile(rel, target))
            elif stat.S_ISREG(kind):
                files.append(AuxFile(rel, path))
            else:
                skipped.append(SkippedFile(rel, "not a regular file"))
    return files, skipped


def copy_auxiliary_files(src_dir: Path, out_dir: Path) -> tuple[list[str], list[SkippedFile]]:
    """Copy every auxiliary file of ``src_dir`` into ``out_dir``, keeping sub-directories.

    Returns the copied names and the skipped entries. Read failures raise ``InputReadError``;
    write failures propagate as ``OSError`` for the staged output to report.
    """
    files, skipped = auxiliary_files(src_dir)
    for aux in files:
        target = out_dir / aux.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # aux.path is a regular file or a symlink's resolved target: one swapped for a symlink
            # since the walk is refused (O_NOFOLLOW)
            src_fd = os.open(aux.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise read_error(src_dir / aux.rel, exc) from None
        with open(src_fd, "rb") as src:
            info = os.fstat(src.fileno())
            if not stat.S_ISREG(info.st_mode):
                skipped.append(SkippedFile(aux.rel, "not a regular file"))
                continue
            with open(create_file(target, stat.S_IMODE(info.st_mode)), "wb") as dst:
                _copy_stream(src, dst, src_dir / aux.rel)
    return [a.rel for a in files if (out_dir / a.rel).exists()], skipped


def _copy_stream(src: Any, dst: Any, src_name: Path) -> None:
    """Copy ``src`` to ``dst``; a failed read names the input, a failed write propagates."""
    while True:
        try:
            chunk = src.read(1 << 20)
        except OSError as exc:
            raise read_error(src_name, exc) from None
        if not chunk:
            return
        dst.write(chunk)
