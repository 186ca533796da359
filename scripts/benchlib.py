"""What the benchmark scripts share: units, timing, memory counters, child processes, and the
checkpoints they build, at real model shapes or (``--tiny``) at tiny ones.

A script in this folder imports it as ``import benchlib`` (Python puts a script's own folder first on
``sys.path``). Run as a program, this module is the entry point of a child process:

    python scripts/benchlib.py MODULE KIND ARGS...

calls ``MODULE.child_KIND(*ARGS)`` and prints its result, a JSON object, with the child's peak
resident set (``peak_rss``) added.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

MiB = 2**20
GiB = 2**30
GB = 1e9
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Shapes:
    """A decoder's shapes: enough to build a checkpoint that costs what the real model costs."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int


# Published configurations (llava-hf/llava-1.5-7b-hf's Vicuna-7B, Qwen/Qwen2-0.5B); layer counts are
# the benchmarks' (a few layers of a 7B model already make a checkpoint over 1 GB).
LLAVA_7B = Shapes(hidden=4096, intermediate=11008, layers=2, heads=32, kv_heads=32, vocab=32064)
QWEN2_05B = Shapes(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2, vocab=151936)
# Qwen/Qwen2.5-1.5B: rows of 1536 and 8960 weights, whole 256-weight blocks (TQ2_0 / TQ1_0 everywhere)
QWEN25_15B = Shapes(hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2, vocab=151936)
# meta-llama/Llama-3.2-1B's shapes and RoPE base; without its RoPE scaling, which llama.cpp's deepseek
# architecture does not read (docs/deploy.md), and which costs nothing in a decode step
LLAMA32_1B = Shapes(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, vocab=128256)
# Llama-2-7B / LLaVA-1.5-7B's language model, every layer: built in GPU memory by bench_gpu.py
LLAMA2_7B = Shapes(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000)
# --tiny: the same code paths in seconds, so that no script can rot unnoticed (tests/scripts).
# Heads of 32 dimensions: llama.cpp's CPU attention wants at least that.
TINY_LLAVA = Shapes(hidden=64, intermediate=160, layers=2, heads=2, kv_heads=2, vocab=512)
TINY_QWEN = Shapes(hidden=64, intermediate=128, layers=2, heads=2, kv_heads=1, vocab=512)


def arguments(doc: str | None, *, workdir: bool = True, repeats: int | None = None) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--tiny`` (tiny shapes, one repeat: a smoke run), and where
    it has them, ``--workdir`` and ``--repeats``."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and one repeat: checks the script runs")
    if workdir:
        parser.add_argument("--workdir", type=Path, default=Path("/tmp/mote-bench"))
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats, help="best of this many runs")
    return parser


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Fastest of ``repeats`` runs of ``fn``, in seconds (the machine is shared and noisy)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved_best(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest time of each callable after one warm-up each, the callables interleaved so that every
    one sees the same machine state."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def vm_hwm() -> int:
    """This process's peak resident set size in bytes (Linux /proc)."""
    # Unlike getrusage's ru_maxrss, which Linux carries over from the parent across fork and exec,
    # the high-water mark belongs to the child's own address space.
    return _proc_status("VmHWM")


def vm_rss() -> int:
    """This process's resident set size now, in bytes (Linux /proc)."""
    return _proc_status("VmRSS")


def run_child(module: str, kind: str, *args: object) -> dict:
    """Run ``module.child_<kind>(*args)`` in a fresh interpreter. Returns its result with the child's
    peak RSS (``peak_rss``) and the wall time of the whole process (``process_s``: interpreter start
    and imports included, as a user runs a command)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / "benchlib.py"), module, kind, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{module}.child_{kind}{args} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def tensor_bytes(shape: tuple[int, ...], itemsize: int) -> int:
    n = itemsize
    for d in shape:
        n *= d
    return n


def build_llava(root: Path, shapes: Shapes, shard_size: str = "1GB") -> Path:
    """Write a LLaVA checkpoint with these language-model shapes (random float16 weights, a tiny CLIP
    vision tower with its real key names) in shards of at most ``shard_size``, with transformers'
    config."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlavaConfig

    from mote_convert.options import parse_size

    text = LlamaConfig(
        hidden_size=shapes.hidden,
        intermediate_size=shapes.intermediate,
        num_hidden_layers=shapes.layers,
        num_attention_heads=shapes.heads,
        num_key_value_heads=shapes.kv_heads,
        vocab_size=shapes.vocab,
    )
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=64,
    )
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=shapes.vocab - 64,
        dtype="float16",
        architectures=["LlavaForConditionalGeneration"],
    )
    root.mkdir(parents=True)
    config.save_pretrained(root)

    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.float16)

    h, i, kv = shapes.hidden, shapes.intermediate, shapes.hidden // shapes.heads * shapes.kv_heads
    layout: dict[str, tuple[int, ...]] = {
        "language_model.model.embed_tokens.weight": (shapes.vocab, h),
        "language_model.lm_head.weight": (shapes.vocab, h),
        "language_model.model.norm.weight": (h,),
        "multi_modal_projector.linear_1.weight": (h, vision.hidden_size),
        "multi_modal_projector.linear_1.bias": (h,),
        "multi_modal_projector.linear_2.weight": (h, h),
        "multi_modal_projector.linear_2.bias": (h,),
    }
    for layer in range(shapes.layers):
        p = f"language_model.model.layers.{layer}"
        layout |= {
            f"{p}.self_attn.q_proj.weight": (h, h),
            f"{p}.self_attn.k_proj.weight": (kv, h),
            f"{p}.self_attn.v_proj.weight": (kv, h),
            f"{p}.self_attn.o_proj.weight": (h, h),
            f"{p}.mlp.gate_proj.weight": (i, h),
            f"{p}.mlp.up_proj.weight": (i, h),
            f"{p}.mlp.down_proj.weight": (h, i),
            f"{p}.input_layernorm.weight": (h,),
            f"{p}.post_attention_layernorm.weight": (h,),
        }
    for name, t in CLIPVisionModel(vision).state_dict().items():
        layout["vision_tower." + name.removeprefix("vision_model.")] = tuple(t.shape)

    cap = parse_size(shard_size)
    shards: list[dict[str, tuple[int, ...]]] = [{}]
    size = 0
    for name in sorted(layout):
        nbytes = tensor_bytes(layout[name], 2)
        if size + nbytes > cap and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = layout[name]
        size += nbytes
    weight_map = {}
    for n, shard in enumerate(shards):
        file = f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: rand(*s) for k, s in shard.items()}, root / file, metadata={"format": "pt"})
        weight_map.update({k: file for k in shard})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return root


def causal_lm(shapes: Shapes, *, llama: bool | None = None, device: str = "cpu", tied: bool = True):  # noqa: ANN201
    """A random bf16 causal LM of these shapes, built on ``device``: Qwen2, or Llama (``llama``; by
    default for Llama-3.2-1B's shapes, with its RoPE base), with tied embeddings unless ``tied`` is false."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    llama = shapes == LLAMA32_1B if llama is None else llama
    config_class, model_class = (LlamaConfig, LlamaForCausalLM) if llama else (Qwen2Config, Qwen2ForCausalLM)
    extra = {"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}} if shapes == LLAMA32_1B else {}
    config = config_class(
        **extra,
        hidden_size=shapes.hidden,
        intermediate_size=shapes.intermediate,
        num_hidden_layers=shapes.layers,
        num_attention_heads=shapes.heads,
        num_key_value_heads=shapes.kv_heads,
        vocab_size=shapes.vocab,
        tie_word_embeddings=tied,
        dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device(device):
        return model_class(config).to(torch.bfloat16)


def build_causal_lm(root: Path, shapes: Shapes) -> Path:
    """Write :func:`causal_lm` of these shapes (random bf16 weights, tied embeddings) to ``root``."""
    causal_lm(shapes).save_pretrained(root)
    return root


CAUSAL_LM_SHAPES = {"qwen2-0.5b": QWEN2_05B, "qwen2.5-1.5b": QWEN25_15B, "llama3.2-1b": LLAMA32_1B}


def causal_lm_checkpoints(workdir: Path, tiny: bool, shapes: str = "qwen2-0.5b") -> tuple[Path, Path]:
    """The Qwen- or Llama-shaped (``shapes``: a key of CAUSAL_LM_SHAPES; or tiny) dense checkpoint in
    ``workdir`` and its up-cycled MoTE output (4 packed experts on every layer), each built if missing."""
    import mote_convert

    shapes, name = (TINY_QWEN, "qwen2-tiny") if tiny else (CAUSAL_LM_SHAPES[shapes], f"{shapes}-shapes")
    dense, mote = workdir / name, workdir / f"{name}-mote"
    workdir.mkdir(parents=True, exist_ok=True)
    if not dense.exists():
        build_causal_lm(dense, shapes)
    if not mote.exists():
        mote_convert.upcycle(dense, mote)
    return dense, mote


def llava_checkpoint(workdir: Path, tiny: bool, layers: int | None = None, shard_size: str | None = None) -> Path:
    """The LLaVA-7B-shaped (or tiny) checkpoint in ``workdir``, built in a child process if missing
    (so that building it leaves no memory behind in this one)."""
    shapes = TINY_LLAVA if tiny else LLAVA_7B
    if layers is not None:
        shapes = replace(shapes, layers=layers)
    shard_size = shard_size or ("64KB" if tiny else "1GB")
    root = workdir / f"llava{'-tiny' if tiny else '7b-shapes'}-{shapes.layers}l"
    if not root.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        run_child("benchlib", "build_llava", root, int(tiny), shapes.layers, shard_size)
    return root


def child_build_llava(root: str, tiny: str, layers: str, shard_size: str) -> dict:
    t0 = time.perf_counter()
    shapes = replace(TINY_LLAVA if int(tiny) else LLAVA_7B, layers=int(layers))
    build_llava(Path(root), shapes, shard_size)
    return {"seconds": time.perf_counter() - t0}


def header_only(root: Path, config: object) -> Path:
    """A checkpoint directory of a transformers config (a config object with ``architectures``)
    whose one safetensors file has a real header and no data: a sparse file, no disk used. Key names
    and shapes are the model's own, from its skeleton on the meta device."""
    import torch
    import transformers

    from mote_convert.io.shards import TensorSpec, encode_header

    cls = getattr(transformers, config.architectures[0])  # type: ignore[attr-defined]
    with torch.device("meta"):
        model = cls._from_config(config)
    from transformers.core_model_loading import revert_weight_conversion

    state = revert_weight_conversion(model, model.state_dict())  # the names save_pretrained writes
    specs = [TensorSpec(name, "BF16", tuple(t.shape)) for name, t in sorted(state.items())]
    root.mkdir(parents=True)
    config.save_pretrained(root)  # type: ignore[attr-defined]
    header = encode_header(specs, {"format": "pt"})
    with open(root / "model.safetensors", "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + sum(s.nbytes for s in specs))
    return root


def dense_model(path: Path | str):  # noqa: ANN201  (a transformers PreTrainedModel)
    """The dense model of a checkpoint directory, loaded by stock transformers (``dtype="auto"``)."""
    from mote_convert.arch import model_class

    config = json.loads((Path(path) / "config.json").read_text())
    return model_class(config).from_pretrained(path, dtype="auto")


def _child_main(argv: list[str]) -> None:
    module, kind, *args = argv
    result = getattr(importlib.import_module(module), "child_" + kind)(*args)
    result["peak_rss"] = vm_hwm()
    print(json.dumps(result))


if __name__ == "__main__":
    _child_main(sys.argv[1:])
