"""Helpers for tests that read checkpoints back."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open


def read_all(root: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory, by name (tests only: loads all into memory)."""
    index = root / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(root / f), "pt") as handle:
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name).clone()
    return tensors


def file_metadata(root: Path) -> list[dict[str, str]]:
    """The __metadata__ of every safetensors file under root."""
    out = []
    for f in sorted(root.glob("*.safetensors")):
        with safe_open(str(f), "pt") as handle:
            out.append(handle.metadata())
    return out


def raw_bytes(t: torch.Tensor) -> bytes:
    """A tensor's bytes as stored."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def spec_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SPEC section 1 written out plainly: gamma and the ternary codes of a dense weight."""
    gamma = torch.clamp(weight.float().abs().mean(), min=1e-5)
    return torch.clamp(torch.round(weight.float() / gamma), -1, 1), gamma
