"""Shared fixtures: tiny LLaVA checkpoints written by transformers' own save_pretrained."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from mote_convert.tiny import build_tiny_llava

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# discovered architectures are remembered in a cache of the test session's own, never the user's
os.environ["MOTE_CONVERT_CACHE"] = tempfile.mkdtemp(prefix="mote-convert-test-cache-")
atexit.register(shutil.rmtree, os.environ["MOTE_CONVERT_CACHE"], True)
torch.set_num_threads(2)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path (to show inputs are never modified)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA (Llama text, CLIP vision), 2 decoder layers, several shards, plus tokenizer-like files."""
    path = build_tiny_llava(tmp_path_factory.mktemp("dense") / "tiny-llava", max_shard_size="100KB")
    (path / "tokenizer_config.json").write_text('{"model_max_length": 256}\n')
    (path / "chat_template.jinja").write_text("{{ messages }}\n")
    (path / "extra").mkdir()
    (path / "extra" / "notes.txt").write_text("kept as is\n")
    return path


@pytest.fixture(scope="session")
def tiny_llava_odd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bf16, 3 layers, intermediate 90: FFN row counts that are not multiples of 4."""
    return build_tiny_llava(
        tmp_path_factory.mktemp("dense-odd") / "tiny-llava-odd",
        hidden_size=48,
        intermediate_size=90,
        num_layers=3,
        dtype=torch.bfloat16,
        max_shard_size="40KB",
    )


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
