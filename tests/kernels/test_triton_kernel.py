"""The Triton (GPU) kernel equals the reference, run on the CPU by Triton's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import torch
from mote_convert.kernels import triton_kernel
from mote_convert.quant.packing import pack_ternary

g = torch.Generator().manual_seed(0)
cases = [(1, 1, 1), (37, 45, 5), (64, 130, 1), (130, 64, 17), (33, 200, 33)]  # odd rows, K across blocks
for out, inp, tokens in cases:
    codes = torch.randint(-1, 2, (out, inp), generator=g, dtype=torch.int8)
    x = torch.randint(-128, 128, (tokens, inp), generator=g, dtype=torch.int8)
    x[0, :3] = -128
    got = triton_kernel.launch(x, pack_ternary(codes), out)
    assert got.dtype == torch.int32 and torch.equal(got.long(), x.long() @ codes.long().t()), (out, inp, tokens)
print("ok")
"""


def test_triton_kernel_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_triton_serves_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry picks Triton for CUDA tensors exactly when a GPU and triton are there, and never
    for CPU tensors: both answers of torch.cuda.is_available() are tried, whatever this machine has."""
    import torch

    from mote_convert.kernels import KERNELS, select_kernel

    monkeypatch.delenv("MOTE_KERNEL", raising=False)
    assert KERNELS["triton"].devices == ("cuda",)
    for has_gpu in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda has_gpu=has_gpu: has_gpu)
        assert KERNELS["triton"].available() is has_gpu
        assert select_kernel(torch.device("cuda")).name == ("triton" if has_gpu else "reference")
        assert select_kernel(torch.device("cpu")).name != "triton"
