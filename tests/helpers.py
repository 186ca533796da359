"""Helpers for tests that read checkpoints back."""

from __future__ import annotations

import json
import math
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


def spec_gamma(weight: torch.Tensor) -> torch.Tensor:
    """gamma as the method states it, written out plainly: the exact float64 sum of |W| (math.fsum),
    divided by the count, rounded once to float32, clamped at 1e-5."""
    values = weight.detach().double().abs().flatten().tolist()
    mean = math.fsum(values) / max(len(values), 1)
    return torch.clamp(torch.tensor(mean, dtype=torch.float64).float(), min=1e-5)


def spec_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The method written out plainly: gamma and the ternary codes of a dense weight."""
    gamma = spec_gamma(weight)
    return torch.clamp(torch.round(weight.float() / gamma), -1, 1), gamma


def assert_one_line_error(result, code: int, needle: str = "") -> str:  # noqa: ANN001 - typer's Result
    """A CLI result that failed as documented: the exit code, one 'error:' line, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    other = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("error:", "warning:", "problem:"))]
    assert all("━" in line for line in other), result.stderr  # only a progress bar besides
    assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return lines[0]


def leftovers(parent: Path) -> list[str]:
    """Staging, lock and set-aside entries a run may leave beside its output (should be none)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and (".partial-" in p.name or ".old-" in p.name or p.name.endswith(".mote-lock")))


def sparse_checkpoint(root: Path, config: dict, specs: list) -> None:
    """A checkpoint whose header is real and whose data is a hole (headers are all inspect reads)."""
    from mote_convert.io.writer import encode_header

    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    header = encode_header(specs, {"format": "pt"})
    with open(root / "model.safetensors", "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + sum(s.nbytes for s in specs))


def save_llama(root: Path, *, layers: int, hidden: int, inter: int, seed: int = 0, dtypes: tuple = ()) -> Path:
    """A plain Llama LM checkpoint of random FFNs (and an embedding), written by safetensors directly:
    sizes no tiny transformers model has, in seconds. ``dtypes`` cycles over gate, up, down."""
    from safetensors.torch import save_file

    root.mkdir()
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": layers,
              "hidden_size": hidden, "intermediate_size": inter, "vocab_size": 64}
    (root / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(seed)
    tensors = {"model.embed_tokens.weight": torch.randn(64, hidden, generator=g)}
    kinds = dtypes or (torch.float32,) * 3
    for i in range(layers):
        p = f"model.layers.{i}.mlp"
        for (name, shape), dtype in zip((("gate_proj", (inter, hidden)), ("up_proj", (inter, hidden)), ("down_proj", (hidden, inter))), kinds, strict=True):
            tensors[f"{p}.{name}.weight"] = torch.randn(*shape, generator=g).to(dtype)
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    return root
