"""The Triton (GPU) kernel equals the reference, run on the CPU by Triton's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import torch
from mote_convert.kernels import get_kernel, ternary_linear, ternary_linear_indexed, triton_kernel
from mote_convert.quant.packing import pack_ternary

g = torch.Generator().manual_seed(0)
# (out, in, tokens): odd rows, K across blocks; GEMV (<= 8 tokens) with K split over programs
# (1030: 5 splits of one step; 4100: 6 splits of 3 steps, the last short) and every tile of the
# tiled kernel (9, 40, 200 tokens)
cases = [(1, 1, 1), (37, 45, 5), (64, 1030, 1), (64, 4100, 1), (130, 64, 8), (33, 200, 9), (257, 513, 40), (70, 300, 200)]
kernels = set()
for out, inp, tokens in cases:
    codes = torch.randint(-1, 2, (out, inp), generator=g, dtype=torch.int8)
    x = torch.randint(-128, 128, (tokens, inp), generator=g, dtype=torch.int8)
    x[0, :3] = -128
    plan = triton_kernel.plan_launch(tokens, inp, (out + 3) // 4, x.device)
    kernels.add((plan.kernel, plan.grid[1] > 1 and plan.blocks.get("STEPS", 1) > 1))
    got = triton_kernel.launch(x, pack_ternary(codes), out)
    assert got.dtype == torch.int32 and torch.equal(got.long(), x.long() @ codes.long().t()), (out, inp, tokens)
assert kernels == {("gemv", False), ("gemv", True), ("tiled", False)}, kernels

# the expert chosen by a device tensor: the same int32 values, and ternary_linear_indexed the same
# bits as ternary_linear of that expert (with biases)
experts = [torch.randint(-1, 2, (37, 300), generator=g, dtype=torch.int8) for _ in range(3)]
packed = [pack_ternary(c) for c in experts]
scales = [torch.rand(1, generator=g) + 0.01 for _ in experts]
biases = [torch.randn(37, generator=g) for _ in experts]
for tokens in (1, 3):
    xq = torch.randint(-128, 128, (tokens, 300), generator=g, dtype=torch.int8)
    xf = torch.randn(tokens, 300, generator=g).to(torch.bfloat16)
    for e in range(3):
        index = torch.tensor([e])
        assert torch.equal(triton_kernel.launch_indexed(xq, packed, index, 37).long(), xq.long() @ experts[e].long().t())
        want = ternary_linear(xf, packed[e], scales[e], 37, biases[e], kernel="reference")
        got = ternary_linear_indexed(xf, packed, scales, index, 37, biases, kernel=get_kernel("triton"))
        assert got.dtype == torch.bfloat16 and torch.equal(got, want), (tokens, e)
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
