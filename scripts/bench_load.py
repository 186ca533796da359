"""Benchmark: ``load_model`` against the dense model's ``from_pretrained``, time and peak memory.

Two checkpoints, built once in ``--workdir`` (random weights, real shapes):

* Qwen2-0.5B-shaped (hidden 896, intermediate 4864, 24 layers, vocab 151936, bf16), a plain LM;
* LLaVA-1.5-7B-shaped (hidden 4096, intermediate 11008, 2 decoder layers, float16, about 1.4 GB),
  ``benchlib.build_llava`` (the upcycle benchmark's checkpoint).

Each is up-cycled with the defaults (4 packed experts, every layer). Then, each in a fresh child
process, interleaved, best of N: the dense model's ``from_pretrained`` on the dense checkpoint, and
``mote_convert.load_model(mode="packed")`` on the MoTE one (and ``mode="train"`` for scale). A child
reports the load's wall time, its resident set before the load, its peak (VmHWM) after, and the
model's resident bytes (parameters and buffers). Targets (issue 10): time <= 1.3x dense; the load's
peak growth (peak - RSS before the load) <= the model's resident bytes + 10%.

    python scripts/bench_load.py --workdir /tmp/mote-bench
"""

from __future__ import annotations

import time
from pathlib import Path

import benchlib
from benchlib import MiB


def child_load(kind: str, path: str) -> dict:
    import torch  # noqa: F401  (imported before the baseline: the load's growth is the model's)

    import mote_convert

    before = benchlib.vm_rss()
    t0 = time.perf_counter()
    if kind == "dense":
        model = benchlib.dense_model(path)
    else:
        model = mote_convert.load_model(path, mode=kind)
    seconds = time.perf_counter() - t0
    resident = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return {"seconds": seconds, "rss_before": before, "resident": resident}


def run(kind: str, path: Path) -> dict:
    return benchlib.run_child("bench_load", "load", kind, path)


def main() -> None:
    args = benchlib.arguments(__doc__, repeats=3).parse_args()
    import mote_convert

    if args.tiny:
        args.repeats = 1
    qwen, _ = benchlib.causal_lm_checkpoints(args.workdir, args.tiny)
    llava = benchlib.llava_checkpoint(args.workdir, args.tiny)
    for dense in (qwen, llava):
        if not dense.with_name(dense.name + "-mote").exists():
            mote_convert.upcycle(dense, dense.with_name(dense.name + "-mote"))

    print(f"{'checkpoint':<22} {'load':<13} {'seconds':>8} {'resident':>9} {'peak-before':>11} {'growth/resident':>15}")
    summary = []
    for dense in (qwen, llava):
        mote = dense.with_name(dense.name + "-mote")
        rows: dict[str, list[dict]] = {"dense": [], "packed": [], "train": []}
        for _ in range(args.repeats):  # interleaved: every variant sees the same machine state
            rows["dense"].append(run("dense", dense))
            rows["packed"].append(run("packed", mote))
            rows["train"].append(run("train", mote))
        best = {k: min(v, key=lambda r: r["seconds"]) for k, v in rows.items()}
        for kind, r in best.items():
            growth = max(x["peak_rss"] - x["rss_before"] for x in rows[kind])
            print(
                f"{dense.name:<22} {kind + (' (MoTE)' if kind != 'dense' else ''):<13} {r['seconds']:>8.2f} "
                f"{r['resident'] / MiB:>8.0f}M {growth / MiB:>10.0f}M {growth / r['resident']:>15.2f}"
            )
        ratio = best["packed"]["seconds"] / best["dense"]["seconds"]
        growth = max(x["peak_rss"] - x["rss_before"] for x in rows["packed"]) / best["packed"]["resident"]
        summary.append(
            f"{dense.name}: load_model(packed) / dense from_pretrained time = {ratio:.2f} (target <= 1.3); "
            f"peak growth / resident = {growth:.2f} (target <= 1.10)"
        )
    print("\n".join(summary))


if __name__ == "__main__":
    main()
