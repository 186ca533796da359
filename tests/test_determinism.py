"""Output bytes do not depend on the thread count (gamma: float64 sum in a fixed order)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.conftest import tree_digest


def _model(root: Path) -> Path:
    root.mkdir()
    layers, hidden, inter = 2, 512, 2048  # 1M-element weights: reductions large enough to run in parallel
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": layers,
              "hidden_size": hidden, "intermediate_size": inter, "vocab_size": 64}
    (root / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(1)
    tensors = {"model.embed_tokens.weight": torch.randn(64, hidden, generator=g)}
    for i in range(layers):
        p = f"model.layers.{i}.mlp"
        tensors[f"{p}.gate_proj.weight"] = torch.randn(inter, hidden, generator=g).to(torch.bfloat16)
        tensors[f"{p}.up_proj.weight"] = torch.randn(inter, hidden, generator=g) * 0.02
        tensors[f"{p}.down_proj.weight"] = torch.randn(hidden, inter, generator=g).to(torch.float16)
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    return root


def test_outputs_are_byte_identical_across_thread_counts(tmp_path: Path) -> None:
    model = _model(tmp_path / "llama")
    digests = []
    for threads in ("1", "2", "3"):
        out = tmp_path / f"out-{threads}"
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        code = "from mote_convert.cli import main; main()"
        result = subprocess.run([sys.executable, "-c", code, "upcycle", str(model), "-o", str(out)], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        digests.append(tree_digest(out))
    assert digests[0] == digests[1] == digests[2]
