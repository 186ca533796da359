"""Every benchmark script runs, at tiny shapes (``--tiny``), and prints the figure its docs quote: a
benchmark that is only run by hand before a release rots between releases."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
NOT_BENCHMARKS = {"benchlib.py", "mutants.py"}  # the shared helpers; the mutation check (CI runs it)

# script -> a line its output must have: the figure docs/ and the README quote from it
FIGURES = {
    "bench_upcycle": r"ratio \(plain read time / upcycle time\) = \d+\.\d\d",
    "bench_load": r"load_model\(packed\) / dense from_pretrained time = \d+\.\d\d",
    "bench_generate": r"MoTE / dense tokens/s = \d+\.\d\d",
    "bench_inspect": r"--stats, hot cache: \d+ MB/s; plain read: \d+ MB/s",
    "bench_plan": r"upcycle --dry-run, whole command = \d+\.\d\d s first time",
    "bench_moe_layer": r"= 2\.0\d+ bits per weight",
    "bench_train": r"MoTE train step / dense train step: \d+\.\d\dx",
    "bench_gguf": r"MoTE TQ1_0 \+ Q4_0 shared +\d+\.\dM",
    "gguf_sizes": r"\| dense Q4_0 \| \d+\.\d\d GiB \| 0\.\d\d \|",
    "train_memory": r"\| ZeRO-3 bf16, per GPU \(8 GPUs\) \| \d+\.\d GiB \|",
    "bench_vllm": r"MoTE / dense served tokens/s = \d+\.\d\d",
    "bench_gpu": r"\| MoTE layer \(packed, 4 experts, top-1\) \| 1 \| [\d.]+ \| [\d.]+ \| \d+\.\d\d \|",
}
NEEDS = {"bench_gguf": "llama_cpp", "bench_vllm": "vllm"}  # bench_vllm: also in the vllm group
TAKES_WORKDIR = {
    "bench_upcycle",
    "bench_load",
    "bench_generate",
    "bench_inspect",
    "bench_gguf",
    "bench_vllm",
    "bench_plan",
    "gguf_sizes",
}


def test_every_script_has_a_smoke_run() -> None:
    scripts = {p.stem for p in SCRIPTS.glob("*.py") if p.name not in NOT_BENCHMARKS}
    assert scripts == set(FIGURES), "add the new script to FIGURES (and give it --tiny)"


def test_scripts_share_one_helper_module() -> None:
    """No script reaches into another through sys.path, or defines its own units."""
    for path in SCRIPTS.glob("*.py"):
        text = path.read_text()
        assert "sys.path" not in text or path.name == "benchlib.py", path.name
        if path.name != "benchlib.py":
            assert not re.search(r"^(MiB|GiB|GB)\s*=\s*\d", text, re.M), path.name


@pytest.mark.benchmarks
@pytest.mark.parametrize("script", sorted(FIGURES))
def test_benchmark_runs_tiny(script: str, tmp_path: Path) -> None:
    if script in NEEDS and importlib.util.find_spec(NEEDS[script]) is None:
        pytest.skip(f"{NEEDS[script]} is not installed")
    cmd = [sys.executable, str(SCRIPTS / f"{script}.py"), "--tiny"]
    if script in TAKES_WORKDIR:
        cmd += ["--workdir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(FIGURES[script], proc.stdout), proc.stdout[-3000:]


@pytest.mark.benchmarks
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    """scripts/gpu_check.sh --dry-run: the gpu group is collected and skipped on this CPU, and the GPU
    benchmark's table is written, through the Triton kernel in Triton's interpreter."""
    pytest.importorskip("triton")
    out = tmp_path / "check"
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "gpu_check.sh"), "--dry-run", str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = (out / "report.md").read_text()
    assert proc.stdout.strip() == report.strip()
    assert re.search(r"## gpu tests \(exit code 0\)", report) and re.search(r"\b(2\d|3\d) skipped\b", report), report
    assert "kernel: triton" in report and re.search(FIGURES["bench_gpu"], report), report
