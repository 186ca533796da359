"""Small JSON files: a size cap, UTF-8, bounded nesting, the top-level kind; side files by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mote_convert.errors import CorruptCheckpointError, InputReadError
from mote_convert.io.jsonfile import SIDE_FILES, JsonFileError, check_side_files, load_json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=50, deadline=None)
@given(value=st.dictionaries(st.text(), JSON, max_size=5))
def test_an_object_reads_back_as_written(tmp_path_factory: pytest.TempPathFactory, value: dict) -> None:
    path = tmp_path_factory.mktemp("j") / "a.json"
    path.write_text(json.dumps(value), encoding="utf-8")
    assert load_json(path, 1 << 20) == value


@pytest.mark.parametrize(
    ("data", "kind", "needle"),
    [
        (b"{not json", dict, "not valid JSON (Expecting property name"),
        (b"", dict, "not valid JSON (Expecting value"),
        (b"[" * 100_000, list, "nested too deeply"),
        (b"\xff\xfe{}", dict, "not UTF-8 text"),
        (b"[1, 2]", dict, "must hold a JSON object, not a list"),
        (b'"text"', dict, "must hold a JSON object, not a string"),
        (b"3", list, "must hold a JSON list, not a number"),
        (b"{}" + b" " * 100, dict, "larger than 64 bytes"),
    ],
)
def test_refusals_say_what_is_wrong(tmp_path: Path, data: bytes, kind: type, needle: str) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(data)
    with pytest.raises(JsonFileError, match=needle.replace("(", r"\(")):
        load_json(path, 64 if needle.startswith("larger") else 1 << 20, kind)


def test_an_unreadable_file_is_an_input_read_error(tmp_path: Path) -> None:
    with pytest.raises(InputReadError):
        load_json(tmp_path, 1 << 20)  # a directory


def test_side_files_are_checked_by_name_and_absent_ones_pass(tmp_path: Path) -> None:
    check_side_files(tmp_path)  # none present
    for name in SIDE_FILES:
        (tmp_path / name).write_text("{}")
    check_side_files(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1]")
    with pytest.raises(CorruptCheckpointError, match=r"tokenizer_config.json: must hold a JSON object, not a list"):
        check_side_files(tmp_path)
