"""Benchmark: greedy decoding of a Qwen2-0.5B-shaped model, MoTE packed against dense, tokens/s and memory.

The checkpoints are ``benchlib.causal_lm_checkpoints`` (Qwen2-0.5B shapes: hidden 896, intermediate 4864,
24 layers, bf16; and its up-cycled MoTE output, 4 packed experts on every layer). Each model runs in
its own child process: load, one warm-up ``generate``, then the peak-RSS counter is reset and
``generate`` (greedy, a 16-token prompt, ``--new-tokens`` new tokens) is timed ``--repeats`` times.
The children alternate dense / MoTE; best of N. Targets (issue 11): MoTE tokens/s >= 0.75x dense; the
peak RSS while generating at most the dense model's plus the packed experts' bytes (no decoded
weight copies).

    python scripts/bench_generate.py --workdir /tmp/mote-bench
"""

from __future__ import annotations

import time
from pathlib import Path

import benchlib
from benchlib import MiB


def child_generate(kind: str, path: str, new_tokens: str, repeats: str) -> dict:
    import torch

    import mote_convert

    if kind == "dense":
        model = benchlib.dense_model(path)
    else:
        model = mote_convert.load_model(path, mode="packed")
    vocab = model.config.get_text_config().vocab_size
    prompt = torch.randint(0, min(1000, vocab), (1, 16), generator=torch.Generator().manual_seed(0))
    n = int(new_tokens)
    kwargs = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
    with torch.no_grad():
        model.generate(prompt, **kwargs)  # warm-up (and the kernel's first use)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak of generate alone
        times = []
        for _ in range(int(repeats)):
            t0 = time.perf_counter()
            out = model.generate(prompt, **kwargs)
            times.append(time.perf_counter() - t0)
    assert out.shape[1] == 16 + n
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    resident = sum(t.numel() * t.element_size() for t in tensors.values())
    experts = sum(t.numel() * t.element_size() for name, t in tensors.items() if ".experts." in name)
    routers = sum(t.numel() * t.element_size() for name, t in tensors.items() if ".router." in name)
    return {
        "tokens_per_s": n / min(times),
        "resident": resident,
        "expert_bytes": experts,
        "router_bytes": routers,
        "rss_by_kind": rss_by_kind(Path(path)),
    }


def rss_by_kind(checkpoint: Path) -> dict[str, int]:
    """This process's resident bytes now, by what they are (/proc/self/smaps): the checkpoint's
    mapped weights, code and data of shared libraries (torch's, the kernel's, ...), and anonymous
    memory (heap, Python objects, activations)."""
    kinds: dict[str, int] = {"weights": 0, "libraries": 0, "anonymous": 0}
    kind = "anonymous"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            name = fields[5] if len(fields) > 5 else ""
            kind = (
                "weights"
                if name.startswith(str(checkpoint.resolve()))
                else "libraries"
                if name.startswith("/")
                else "anonymous"
            )
        elif fields and fields[0] == "Rss:":
            kinds[kind] += int(fields[1]) * 1024
    return kinds


def run(kind: str, path: Path, new_tokens: int, repeats: int) -> dict:
    # the child resets its peak-RSS counter after the warm-up: the peak run_child reads is generate's
    return benchlib.run_child("bench_generate", "generate", kind, path, new_tokens, repeats)


def main() -> None:
    parser = benchlib.arguments(__doc__, repeats=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.tiny:
        args.new_tokens, args.repeats, args.rounds = 4, 1, 1
    dense, mote = benchlib.causal_lm_checkpoints(args.workdir, args.tiny)
    rows: dict[str, list[dict]] = {"dense": [], "mote": []}
    for _ in range(args.rounds):  # alternate, so both see the same machine state
        rows["dense"].append(run("dense", dense, args.new_tokens, args.repeats))
        rows["mote"].append(run("packed", mote, args.new_tokens, args.repeats))
    best = {k: max(v, key=lambda r: r["tokens_per_s"]) for k, v in rows.items()}
    peak = {k: min(r["peak_rss"] for r in v) for k, v in rows.items()}
    print(f"{'model':<12} {'tokens/s':>9} {'resident':>9} {'peak RSS in generate':>21}")
    for kind in ("dense", "mote"):
        print(
            f"{kind:<12} {best[kind]['tokens_per_s']:>9.2f} {best[kind]['resident'] / MiB:>8.0f}M {peak[kind] / MiB:>20.0f}M"
        )
    ratio = best["mote"]["tokens_per_s"] / best["dense"]["tokens_per_s"]
    added = best["mote"]["expert_bytes"] + best["mote"]["router_bytes"]
    print("resident after generate, MoTE minus dense, by kind (/proc/self/smaps):")
    for kind, dense_bytes in best["dense"]["rss_by_kind"].items():
        print(f"  {kind:<10} {(best['mote']['rss_by_kind'][kind] - dense_bytes) / MiB:+8.2f} MiB")
    print(
        f"  added tensors: packed experts {best['mote']['expert_bytes'] / MiB:.2f} MiB + routers "
        f"{best['mote']['router_bytes'] / MiB:.2f} MiB = {added / MiB:.2f} MiB (a decoded copy of even one expert "
        f"projection would add its weights' bytes at 1-4 bytes each to 'anonymous')"
    )
    bound = peak["dense"] + best["mote"]["expert_bytes"]
    print(
        f"MoTE / dense tokens/s = {ratio:.2f} (target >= 0.75); MoTE peak RSS {peak['mote'] / MiB:.0f} MiB vs "
        f"dense peak + packed experts {bound / MiB:.0f} MiB ({'within' if peak['mote'] <= bound else 'over'} by "
        f"{abs(peak['mote'] - bound) / MiB:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
