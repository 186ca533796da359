"""The GPU paths on a CUDA device (the ``gpu`` group; skipped where there is none).

``scripts/gpu_check.sh`` runs this group and the GPU benchmark in one command. Oracles: the
reference kernel and exact integer products for the kernels, the CPU model for loading, generating
and the training step, ``load_model(mode="packed")`` for ``pack``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mote_convert
from mote_convert.modeling.load import mote_blocks
from tests.helpers import train_args, training_setup

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]
CUDA = torch.device("cuda")
ROOT = Path(__file__).resolve().parents[2]
RECIPE = """\
learning_rate: 3.0e-3
max_steps: 8
global_batch_size: 8
per_device_batch_size: 4
save_steps: 8
bf16: true
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return training_setup(tmp_path_factory.mktemp("gpu"), RECIPE)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


@pytest.mark.parametrize(("n_out", "n_in"), [(11008, 4096), (4096, 11008), (37, 300), (130, 64)])
@pytest.mark.parametrize("tokens", [1, 3, 8, 16, 64, 512])
def test_triton_kernels_equal_the_exact_product(n_out: int, n_in: int, tokens: int) -> None:
    from mote_convert.kernels import get_kernel, ternary_linear, ternary_linear_indexed, triton_kernel
    from mote_convert.quant.packing import pack_ternary

    g = torch.Generator(device=CUDA).manual_seed(n_out + tokens)
    codes = [torch.randint(-1, 2, (n_out, n_in), generator=g, device=CUDA, dtype=torch.int8) for _ in range(3)]
    packed = [pack_ternary(c) for c in codes]
    x = torch.randint(-128, 128, (tokens, n_in), generator=g, device=CUDA, dtype=torch.int8)
    exact = (x.double() @ codes[1].double().t()).long()  # integers below 2^53: exact in float64
    assert torch.equal(triton_kernel.launch(x, packed[1], n_out).long(), exact)
    xf = torch.randn(tokens, n_in, generator=g, device=CUDA).to(torch.bfloat16)
    scales = [torch.rand(1, generator=g, device=CUDA) + 0.01 for _ in codes]
    want = ternary_linear(xf, packed[1], scales[1], n_out, kernel="reference")
    assert torch.equal(ternary_linear(xf, packed[1], scales[1], n_out, kernel="triton"), want)
    if tokens <= triton_kernel.GEMV_TOKENS:
        index = torch.tensor([1], device=CUDA)
        assert torch.equal(triton_kernel.launch_indexed(x, packed, index, n_out).long(), exact)
        got = ternary_linear_indexed(xf, packed, scales, index, n_out, kernel=get_kernel("triton"))
        assert torch.equal(got, want)


@pytest.mark.parametrize("device_map", ["cuda", "auto"])
def test_load_model_on_the_gpu_computes_the_cpu_model(setup: dict[str, Path], device_map: str) -> None:
    from mote_convert.kernels import select_kernel

    assert select_kernel(CUDA).name == "triton"
    cpu = mote_convert.load_model(setup["mote"], dtype=torch.float32)
    gpu = mote_convert.load_model(setup["mote"], dtype=torch.float32, device_map=device_map)
    assert {p.device.type for p in gpu.parameters()} == {"cuda"}
    assert all(b.router.weight.dtype == torch.float32 for b in mote_blocks(gpu))
    ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = cpu(input_ids=ids).logits
        got = gpu(input_ids=ids.to(CUDA)).logits.cpu()
    # float32 on both; an activation whose int8 rounding lands on the other side moves a logit a little
    assert _cosine(got, want) > 0.9999
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.95


def test_decoding_step_has_no_host_sync_and_replays_as_a_cuda_graph(setup: dict[str, Path]) -> None:
    model = mote_convert.load_model(setup["mote"], dtype=torch.bfloat16, device=CUDA)
    block = mote_blocks(model)[0]
    hidden = block.router.weight.shape[1]
    xs = [
        torch.randn(1, 1, hidden, device=CUDA, dtype=torch.bfloat16, generator=torch.Generator(CUDA).manual_seed(s))
        for s in range(8)
    ]
    with torch.no_grad():
        eager = [block(x) for x in xs]
        with torch.enable_grad():  # the general path, while autograd records: the same bits
            assert all(torch.equal(block(x).detach(), e) for x, e in zip(xs, eager, strict=True))
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            block(xs[0])
        finally:
            torch.cuda.set_sync_debug_mode("default")
        static = xs[0].clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            block(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = block(static)
        chosen = set()
        for x, want in zip(xs, eager, strict=True):
            static.copy_(x)
            graph.replay()
            assert torch.equal(out, want)
            chosen.add(int(block.router(x.reshape(1, -1)).argmax()))
    assert len(chosen) > 1  # the replays picked different experts


def test_generate_bf16_with_an_image_on_the_gpu(setup: dict[str, Path]) -> None:
    from PIL import Image
    from transformers import AutoProcessor

    model = mote_convert.load_model(setup["mote"], dtype=torch.bfloat16, device_map="cuda")
    processor = AutoProcessor.from_pretrained(setup["mote"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.open(setup["data"].parent / "images" / "0.png")
    inputs = processor(text=[prompt], images=[image], return_tensors="pt").to(CUDA)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    generated = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 6
    # greedy decoding is the argmax of a full forward at each step (no cache); in bf16 a cached and an
    # uncached forward may differ in the last bits, so the argmax is compared where it is decisive
    # (and always for the first token, which both compute from the same prompt in the same way)
    prompt_len, decisive = inputs["input_ids"].shape[1], 0
    with torch.no_grad():
        for step in range(6):
            ids = generated[:, : prompt_len + step]
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"])
            top = logits.logits[0, -1].float().topk(2)
            if step == 0 or top.values[0] - top.values[1] > 0.1:
                decisive += 1
                assert top.indices[0] == generated[0, prompt_len + step], step
    assert decisive >= 1


def test_ste_step_in_bf16_autocast_matches_the_cpu_reference() -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    from mote_convert.modeling.bitlinear import TRAIN
    from mote_convert.modeling.block import MoTEBlock

    torch.manual_seed(0)
    dense = LlamaMLP(LlamaConfig(hidden_size=256, intermediate_size=512))
    block = MoTEBlock(
        dense,
        projections=("gate_proj", "up_proj", "down_proj"),
        hidden_size=256,
        num_experts=4,
        top_k=1,
        norm_topk_prob=False,
        mode=TRAIN,
        dtype=torch.float32,
    )
    torch.nn.init.normal_(block.router.weight, std=1.0)  # decisive routing: bf16 does not flip it
    for expert in block.experts:
        for proj in ("gate_proj", "up_proj", "down_proj"):
            getattr(expert, proj).load_latent(getattr(dense, proj).weight.detach() + 0.01 * torch.randn(1))
    dense.requires_grad_(False)
    for p in list(block.experts.parameters()) + [block.router.weight]:
        p.requires_grad_(True)
    x = torch.randn(1, 64, 256)

    def step(device: torch.device, autocast: bool) -> dict[str, torch.Tensor]:
        block.to(device).zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            out = block(x.to(device))
        (out.float().pow(2).mean() + 0.01 * block.last_aux_loss).backward()
        assert block.router.weight.dtype == torch.float32 and block.router.weight.grad.dtype == torch.float32
        return {n: p.grad.detach().cpu().float() for n, p in block.named_parameters() if p.grad is not None}

    want = step(torch.device("cpu"), autocast=False)
    got = step(CUDA, autocast=True)
    assert got.keys() == want.keys() and "router.weight" in got
    for name in want:
        assert _cosine(got[name], want[name]) > 0.99, name


def _train_cli(setup: dict[str, Path], out: Path, *launcher: str) -> subprocess.CompletedProcess:
    cmd = [*launcher, "-m", "mote_convert.cli", *train_args(setup, out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def _trained_model_computes_as_packed(setup: dict[str, Path], out: Path, tmp_path: Path) -> None:
    """The trained output loads on the GPU; ``pack`` of the last latent checkpoint equals it, and
    equals that checkpoint loaded with ``mode="packed"``."""
    checkpoints = sorted((out.parent / f"{out.name}.checkpoints").glob("checkpoint-*"))
    packed = mote_convert.pack(checkpoints[-1], tmp_path / "packed").output
    ids = torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(1)).to(CUDA)
    with torch.no_grad():
        logits = [
            mote_convert.load_model(path, mode="packed", dtype=torch.float32, device=CUDA)(input_ids=ids).logits
            for path in (packed, checkpoints[-1], out)
        ]
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])


def test_train_on_one_gpu_then_pack(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "trained"
    result = _train_cli(setup, out, sys.executable)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8/8 steps" in result.stdout
    _trained_model_computes_as_packed(setup, out, tmp_path)


def test_train_with_fsdp2_through_accelerate_on_one_gpu(setup: dict[str, Path], tmp_path: Path) -> None:
    """accelerate's FSDP2 with one process: the CUDA-only branch (routers as float32 FSDP units)."""
    out = tmp_path / "fsdp2"
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "configs" / "launch" / "fsdp2.yaml"),
        "--num_processes",
        "1",
    ]
    result = _train_cli(setup, out, *launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8/8 steps" in result.stdout
    _trained_model_computes_as_packed(setup, out, tmp_path)
