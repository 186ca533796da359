#!/usr/bin/env bash
# The GPU check, one command: install what a bare GPU machine lacks, run the `gpu` test group and the
# GPU benchmark at real shapes, and write one short report (OUT_DIR/report.md, printed at the end).
#
#   bash scripts/gpu_check.sh [--dry-run] [OUT_DIR]        (OUT_DIR defaults to gpu-check/)
#
# --dry-run runs the same steps on the CPU at tiny shapes and installs nothing: the gpu group is
# collected and skipped, the benchmark runs the Triton kernel in Triton's interpreter. The test suite
# runs it so that this script cannot rot between the rare times a GPU is at hand.
# Exit code: 0 when the tests, the vLLM group and the benchmark passed, 1 otherwise (the report says which).
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry=1
  shift
fi
out="${1:-gpu-check}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)

if [[ $dry == 0 ]]; then
  # torch with CUDA first (the package index's Linux wheel is a CUDA build), then this package with
  # its gpu extra (triton) and the test tools; what is already installed stays as it is
  if ! python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    python -m pip install --quiet "torch==2.13.0"
  fi
  python -m pip install --quiet -e ".[gpu]" pytest hypothesis pillow
  python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
  bench=(python scripts/bench_gpu.py --out "$out/bench.md")
else
  bench=(env MOTE_KERNEL=triton TRITON_INTERPRET=1 python scripts/bench_gpu.py --tiny --device cpu --out "$out/bench.md")
fi

set +e
timeout 300 python -m pytest -o addopts="" -q -rs -m gpu tests/gpu -p no:cacheprovider >"$out/tests.log" 2>&1
tests_rc=$?
timeout 300 "${bench[@]}" >"$out/bench.log" 2>&1
bench_rc=$?
# a tiny MoTE model served by vLLM on the device (the vllm group: offline, the OpenAI server, an image
# prompt through vLLM's LLaVA), where vLLM is installed or installs; on the CPU (--dry-run) only if there
if [[ $dry == 0 ]] && ! python -c "import vllm" 2>/dev/null; then
  timeout 240 python -m pip install --quiet "vllm>=0.32" openai >"$out/vllm-install.log" 2>&1
fi
if python -c "import vllm" 2>/dev/null; then
  timeout 420 python -m pytest -o addopts="" -q -rs -m vllm tests/serving -p no:cacheprovider >"$out/vllm.log" 2>&1
  vllm_rc=$?
else
  echo "vLLM is not installed here: the vllm group did not run" >"$out/vllm.log"
  vllm_rc=0
fi
set -e

{
  echo "# GPU check$([[ $dry == 1 ]] && echo ' (dry run: CPU, tiny shapes)')"
  echo
  if command -v nvidia-smi >/dev/null; then
    echo "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)"
  fi
  python -c "import torch, sys; print(f'python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}')"
  echo
  echo "## gpu tests (exit code $tests_rc)"
  echo
  tail -n 25 "$out/tests.log"
  echo
  echo "## vLLM serving (exit code $vllm_rc)"
  echo
  tail -n 12 "$out/vllm.log"
  echo
  echo "## benchmark (exit code $bench_rc)"
  echo
  if [[ -s "$out/bench.md" ]]; then cat "$out/bench.md"; else tail -n 25 "$out/bench.log"; fi
  echo
  echo "total: $(($(date +%s) - start)) s"
} >"$out/report.md"
cat "$out/report.md"
[[ $tests_rc == 0 && $bench_rc == 0 && $vllm_rc == 0 ]]
