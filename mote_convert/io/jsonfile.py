"""JSON files read safely: a size cap, UTF-8, bounded nesting, and the top-level kind checked.

Configs, indexes, tokenizers and data files come from users. A malformed one must become one clear
error naming the file, never a ``JSONDecodeError`` traceback from deep inside a library that read it
after us; so every JSON file mote-convert (or a library it calls) reads is loaded through here first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mote_convert.errors import CorruptCheckpointError
from mote_convert.io.bounded import read_bounded

# The JSON files beside a checkpoint's weights that tokenizers and processors are built from
# (transformers' AutoTokenizer / AutoProcessor, gguf's vocabularies): each, where present, must be a
# JSON object. tokenizer.json holds a whole vocabulary, hence the larger cap.
SIDE_FILES: dict[str, int] = {
    "tokenizer.json": 1 << 30,
    "tokenizer_config.json": 64 << 20,
    "special_tokens_map.json": 16 << 20,
    "added_tokens.json": 64 << 20,
    "chat_template.json": 16 << 20,
    "processor_config.json": 16 << 20,
    "preprocessor_config.json": 16 << 20,
    "generation_config.json": 16 << 20,
}


class JsonFileError(ValueError):
    """The file is not JSON this tool accepts (the caller turns it into its own error kind)."""


def load_json(path: Path, limit: int, kind: type = dict) -> Any:
    """Parse the JSON file ``path`` (at most ``limit`` bytes) whose top level must be a ``kind``
    (``dict`` or ``list``). Raises :class:`JsonFileError` for content it refuses, and
    :class:`~mote_convert.errors.InputReadError` when the file cannot be read."""
    import json

    data = read_bounded(path, limit)
    if data is None:
        raise JsonFileError(f"larger than {_size(limit)}")
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise JsonFileError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise JsonFileError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise JsonFileError("not valid JSON (nested too deeply)") from None
    if not isinstance(value, kind):
        raise JsonFileError(f"must hold a JSON {'object' if kind is dict else 'list'}, not {_json_kind(value)}")
    return value


def check_side_files(root: Path) -> None:
    """Refuse, with a :class:`~mote_convert.errors.CorruptCheckpointError` naming the file, a side
    file of :data:`SIDE_FILES` under ``root`` that is not a JSON object: before a library parses it
    and fails with a traceback of its own."""
    for name, limit in SIDE_FILES.items():
        path = root / name
        if path.is_file():
            try:
                load_json(path, limit)
            except JsonFileError as exc:
                raise CorruptCheckpointError(f"{path}: {exc}") from None


def _json_kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _size(limit: int) -> str:
    return f"{limit >> 30} GiB" if limit >= 1 << 30 else f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
