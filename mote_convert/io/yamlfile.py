"""YAML files read safely: ``safe_load`` semantics, a size cap, no aliases, bounded nesting.

Recipes come from users; a few hundred bytes of YAML aliases ("billion laughs") or deep nesting
would otherwise take minutes or overflow the stack. Nothing mote-convert reads needs an alias.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mote_convert.io.bounded import read_bounded

MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32


class YamlFileError(ValueError):
    """The file is not YAML this tool accepts (the caller turns it into its own error kind)."""


class _LimitedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses aliases and nesting deeper than :data:`MAX_YAML_DEPTH`."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise YamlFileError(f"YAML aliases are not allowed (line {mark.line + 1})")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlFileError(f"nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(path: Path) -> Any:
    """Parse a YAML file with the limits above. Raises :class:`YamlFileError` for content it refuses,
    :class:`~mote_convert.errors.InputReadError` when the file cannot be read."""
    data = read_bounded(path, MAX_YAML_BYTES)
    if data is None:
        raise YamlFileError(f"larger than {MAX_YAML_BYTES} bytes")
    try:
        return yaml.load(data, Loader=_LimitedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise YamlFileError(f"not valid YAML ({exc})") from None
    except RecursionError:
        raise YamlFileError("nested too deeply") from None
