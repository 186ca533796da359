"""Discovered architectures are remembered on disk: a second command on the same model builds no
skeleton, and a damaged cache file is rediscovered, never trusted."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from mote_convert.arch import cache, discover
from tests.families import FAMILIES

discover_module = importlib.import_module("mote_convert.arch.discover")  # the module (the package exports the function)


def _config() -> dict:
    return FAMILIES["llava-qwen2"].config().to_dict() | {"architectures": ["LlavaForConditionalGeneration"]}


def test_a_second_discovery_is_read_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTE_CONVERT_CACHE", str(tmp_path))
    discover_module._remembered.cache_clear()
    first = discover(_config())
    assert len(list((tmp_path / "architectures").glob("*.json"))) == 1

    def no_build(*args: object) -> None:
        raise AssertionError("the skeleton was built again")

    discover_module._remembered.cache_clear()
    monkeypatch.setattr(discover_module, "skeleton", no_build)
    assert discover(_config()) == first


def test_a_damaged_cache_file_is_rediscovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTE_CONVERT_CACHE", str(tmp_path))
    discover_module._remembered.cache_clear()
    want = discover(_config())
    (path,) = (tmp_path / "architectures").glob("*.json")
    for damage in ("{not json", '{"name": "x"}', '{"ffn_kind": "moe"}'):
        path.write_text(damage)
        discover_module._remembered.cache_clear()
        assert cache.load(path.stem) is None
        assert discover(_config()) == want


def test_an_unwritable_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MOTE_CONVERT_CACHE", str(blocker))  # a file where the folder would be
    discover_module._remembered.cache_clear()
    assert discover(_config()).ffn_kind.name == "gated"
