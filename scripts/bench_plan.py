"""Benchmark: header-only planning of 7B-shaped checkpoints, discovery included.

``upcycle --dry-run`` reads config.json and the safetensors headers, finds the architecture from the
model itself (the model's skeleton built on the meta device, transformers' key conversion rules),
plans and validates every output tensor, and writes nothing. Checkpoints are header-only (a real
safetensors header, the data a hole in a sparse file: no weights, no disk), with the published
configurations' shapes:

* LLaVA-1.5-7B (Llama-2-7B text model, 32 layers, CLIP ViT-L/14-336);
* Qwen2.5-VL-7B (Qwen2 text model, 28 layers, hidden 3584, intermediate 18944; its default vision tower).

Measured, best of ``--repeats``: in the library, ``plan_upcycle`` with the discovery cache cleared
(so the skeleton is built every time), and discovery alone; and the whole command in a fresh process
(interpreter start and imports included), first with an empty architecture cache (discovery imports
transformers' modeling code: most of the time) and then with the architecture remembered, beside
``python -c "import mote_convert.cli"`` for the package's own imports. Target (the every-family issue):
under 2 s, meta-device construction included.

    python scripts/bench_plan.py [--repeats 5]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib
from benchlib import best_of


def checkpoints(workdir: Path, tiny: bool) -> dict[str, Path]:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, Qwen2_5_VLConfig

    t = benchlib.TINY_LLAVA
    llama = (
        dict(hidden_size=t.hidden, intermediate_size=t.intermediate, num_hidden_layers=t.layers, vocab_size=t.vocab)
        if tiny
        else dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, vocab_size=32064)
    )
    clip = (
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
        if tiny
        else dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
    )
    llava = LlavaConfig(
        text_config=LlamaConfig(**llama, num_attention_heads=4 if tiny else 32),
        vision_config=CLIPVisionConfig(**clip, image_size=336, patch_size=14, projection_dim=768),
        image_token_id=llama["vocab_size"] - 1,
        architectures=["LlavaForConditionalGeneration"],
    )
    qwen_text = (
        dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        if tiny
        else dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
        )
    )
    qwen = Qwen2_5_VLConfig(
        text_config=dict(
            qwen_text, vocab_size=152064, rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24]}
        ),
        vision_config=dict(depth=2, hidden_size=64, out_hidden_size=qwen_text["hidden_size"]) if tiny else {},
        architectures=["Qwen2_5_VLForConditionalGeneration"],
    )
    out = {}
    for name, config in (("LLaVA-1.5-7B", llava), ("Qwen2.5-VL-7B", qwen)):
        root = workdir / f"{name}{'-tiny' if tiny else ''}"
        if not root.exists():
            benchlib.header_only(root, config)
        out[name] = root
    return out


def main() -> None:
    args = benchlib.arguments(__doc__, repeats=5).parse_args()
    if args.tiny:
        args.repeats = 1
    import mote_convert
    from mote_convert.arch.discover import _discover, _remembered
    from mote_convert.checkpoint import read_config

    args.workdir.mkdir(parents=True, exist_ok=True)
    models = checkpoints(args.workdir, args.tiny)
    cli = shutil.which("mote-convert") or "mote-convert"
    imports = best_of(
        args.repeats, lambda: subprocess.run([sys.executable, "-c", "import mote_convert.cli"], check=True)
    )
    print(
        f"{'checkpoint':<16} {'source':>9} {'discovery':>10} {'plan (lib)':>11} {'cmd, cold':>10} {'cmd, warm':>10} "
        f"{'imports':>8}"
    )
    for name, root in models.items():
        config = read_config(root)

        def discover(config: dict = config) -> None:
            _discover(json.dumps(config, sort_keys=True, default=str))  # the skeleton, not the disk cache

        def plan(root: Path = root) -> None:
            _remembered.cache_clear()
            with tempfile.TemporaryDirectory() as empty:
                os.environ["MOTE_CONVERT_CACHE"] = empty
                mote_convert.plan_upcycle(root)

        def command(root: Path = root, cold: bool = True) -> None:
            with tempfile.TemporaryDirectory() as fresh:
                env = os.environ | {"MOTE_CONVERT_CACHE": fresh if cold else str(args.workdir / "cache")}
                cmd = [cli, "upcycle", str(root), "-o", str(args.workdir / "out"), "--dry-run"]
                subprocess.run(cmd, check=True, capture_output=True, env=env)

        size = sum(f.stat().st_size for f in root.glob("*.safetensors"))
        d, p = best_of(args.repeats, discover), best_of(args.repeats, plan)
        cold = best_of(args.repeats, command)
        command(cold=False)  # remember it
        warm = best_of(args.repeats, lambda root=root: command(root, cold=False))
        print(
            f"{name:<16} {size / benchlib.GB:>8.2f}G {d:>9.3f}s {p:>10.3f}s {cold:>9.2f}s {warm:>9.2f}s {imports:>7.2f}s"
        )
        print(
            f"{name}: upcycle --dry-run, whole command = {cold:.2f} s first time, {warm:.2f} s once the architecture "
            f"is remembered (target < 2 s); discovery {d:.3f} s of it"
        )


if __name__ == "__main__":
    main()
