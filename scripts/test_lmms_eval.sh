#!/usr/bin/env bash
# The lmms_eval test group (lmms-eval scoring MoTE models through its model type "mote"), in an
# environment of its own: lmms-eval imports torchvision, and the package index's torchvision builds
# each pin one torch release (torch 2.14.1 with torchvision 0.29.1: CUDA builds, which run on a CPU
# too), so they go into a virtual environment on top of this one (--system-site-packages: this
# package's other dependencies and pytest as installed), created once and reused.
#
#   bash scripts/test_lmms_eval.sh [PYTEST ARGS]   (LMMS_VENV moves the environment; default .venv-lmms)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LMMS_VENV:-.venv-lmms}"
if [[ ! -x "$venv/bin/python" ]]; then
  python -m venv --system-site-packages "$venv"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# filelock 4 moved the module lmms-eval 0.7.3 imports (filelock._api)
"$venv/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1 "lmms-eval==0.7.3" "filelock<4"
# this package again inside the environment, so that lmms-eval finds its model's entry point there
"$venv/bin/python" -m pip install --quiet --no-deps -e .
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest -m lmms_eval "$@"
