"""Benchmark: header-only ``inspect`` of the upcycle benchmark's checkpoint, against reading its bytes.

Uses the LLaVA-1.5-7B-shaped float16 checkpoint of ``scripts/bench_upcycle.py`` (2 decoder layers,
about 1.4 GB in 2 shards; built if missing) and its upcycled MoTE output, then measures, best of N:

* ``inspect_checkpoint`` in the library, on the dense source (index + upcycle plan + report) and on
  the MoTE output (index + every check + the 4-byte scales);
* the whole command, ``mote-convert inspect PATH --json``, in a fresh process (interpreter start and
  imports included), beside ``python -c "import torch"`` for what the imports alone cost;
* a plain read of every tensor of the MoTE output (what a data-reading check would cost);
* ``inspect --stats`` (reads and counts every routed-expert tensor) against a plain read of the same
  expert tensors (file reads into fresh buffers), interleaved, best of N: the bar is plain-read speed.

    python scripts/bench_inspect.py --workdir /tmp/mote-bench
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Callable

import benchlib
from benchlib import best_of


def command(*args: str) -> Callable[[], object]:
    """A callable that runs a command line and checks it succeeded."""
    return lambda: subprocess.run(args, check=True, capture_output=True)


def main() -> None:
    args = benchlib.arguments(__doc__, repeats=5).parse_args()
    if args.tiny:
        args.repeats = 1

    import mote_convert
    from mote_convert.inspection import inspect_checkpoint

    src = benchlib.llava_checkpoint(args.workdir, args.tiny)
    out = src.with_name(src.name + "-mote")
    if not out.exists():
        mote_convert.upcycle(src, out)
    cli = shutil.which("mote-convert") or "mote-convert"

    dense = inspect_checkpoint(src)
    mote = inspect_checkpoint(out)
    assert dense.ok and mote.ok, (dense.problems, mote.problems)
    rows = {
        "library, dense source (+ upcycle plan)": best_of(args.repeats, lambda: inspect_checkpoint(src)),
        "library, MoTE output (+ checks, scales)": best_of(args.repeats, lambda: inspect_checkpoint(out)),
        "command, dense source": best_of(args.repeats, command(cli, "inspect", str(src), "--json")),
        "command, MoTE output": best_of(args.repeats, command(cli, "inspect", str(out), "--json")),
        "python -c 'import torch' (for scale)": best_of(args.repeats, command(sys.executable, "-c", "import torch")),
    }

    def plain_read() -> None:
        from safetensors import safe_open

        for f in sorted(out.glob("*.safetensors")):
            with safe_open(str(f), "pt") as handle:
                for name in handle.keys():
                    handle.get_tensor(name).clone()

    read_s = best_of(min(args.repeats, 3), plain_read)
    rows["plain read of every MoTE tensor (for scale)"] = read_s

    index = mote_convert.inspection.load_index(out)
    experts = sorted((t for t in index if ".experts." in t.name), key=lambda t: (t.file, t.offset))
    expert_bytes = sum(t.nbytes for t in experts)

    def read_experts() -> None:
        """A plain read of every expert tensor's bytes (file reads into fresh buffers, file order)."""
        for file_name in sorted({t.file for t in experts}):
            with open(out / file_name, "rb", buffering=0) as fh:
                for t in (t for t in experts if t.file == file_name):
                    fh.seek(t.offset)
                    fh.read(t.nbytes)

    def evict() -> None:
        """Drop the output's pages from the page cache (clean pages: no privilege needed)."""
        for f in out.glob("*.safetensors"):
            fd = os.open(f, os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)

    times: dict[str, list[float]] = {"stats hot": [], "read hot": [], "stats cold": [], "read cold": []}
    for _ in range(args.repeats):  # interleaved: every variant sees the same machine state
        for label, fn in (("stats", lambda: inspect_checkpoint(out, stats=True)), ("read", read_experts)):
            evict()
            times[f"{label} cold"].append(best_of(1, fn))
            times[f"{label} hot"].append(best_of(1, fn))
    mb = expert_bytes / 1e6
    rows[f"library, MoTE output --stats, cold cache ({mb:.0f} MB of experts)"] = min(times["stats cold"])
    rows["plain read of the same expert tensors, cold cache"] = min(times["read cold"])
    rows["library, MoTE output --stats, hot cache"] = min(times["stats hot"])
    rows["plain read of the same expert tensors, hot cache"] = min(times["read hot"])

    print(
        f"dense source: {dense.memory.total.bytes / 1e9:.2f} GB in {len(dense.files)} files; "
        f"MoTE output: {mote.memory.total.bytes / 1e9:.2f} GB in {len(mote.files)} files, "
        f"{sum(1 for _ in mote.memory.components if _.tensors)} components"
    )
    print(f"{'what':<46} {'seconds':>8}")
    for what, seconds in rows.items():
        print(f"{what:<46} {seconds:8.3f}")
    print(
        f"MoTE output, library inspect vs plain read: {read_s / rows['library, MoTE output (+ checks, scales)']:.0f}x faster"
    )
    for cache in ("cold", "hot"):
        st, rd = min(times[f"stats {cache}"]), min(times[f"read {cache}"])
        print(
            f"--stats, {cache} cache: {mb / st:.0f} MB/s; plain read: {mb / rd:.0f} MB/s; stats time / read time {st / rd:.2f}"
        )
    print("target: header-only inspect under 1 s; --stats at plain-read speed")


if __name__ == "__main__":
    main()
