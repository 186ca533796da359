"""Output bytes do not depend on the thread count (gamma: float64 sum in a fixed order)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import tree_digest
from tests.helpers import save_llama


def test_outputs_are_byte_identical_across_thread_counts(tmp_path: Path) -> None:
    # 1M-element weights in three dtypes: reductions large enough to run in parallel
    model = save_llama(
        tmp_path / "llama",
        layers=2,
        hidden=512,
        inter=2048,
        seed=1,
        dtypes=(torch.bfloat16, torch.float32, torch.float16),
    )
    digests = []
    for threads in ("1", "2", "3"):
        out = tmp_path / f"out-{threads}"
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        code = "from mote_convert.cli import main; main()"
        result = subprocess.run(
            [sys.executable, "-c", code, "upcycle", str(model), "-o", str(out)], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        digests.append(tree_digest(out))
    assert digests[0] == digests[1] == digests[2]
