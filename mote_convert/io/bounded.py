"""Small files (configs, recipes, indexes, tokenizers) read with a size cap.

A path given as a config may be anything (a device, a multi-GB file renamed): never read more than
the cap allows, and name the file when the read fails.
"""

from __future__ import annotations

from pathlib import Path

from mote_convert.errors import read_error


def read_bounded(path: Path, limit: int) -> bytes | None:
    """A small file's bytes (a config, a recipe), or None when it is larger than ``limit``.

    Never reads more than ``limit + 1`` bytes, whatever the file; a failed read is an
    :class:`~mote_convert.errors.InputReadError` naming the path.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise read_error(path, exc) from None
    return data if len(data) <= limit else None
