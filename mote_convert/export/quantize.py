"""The rest of a MoTE GGUF quantized by llama.cpp's own quantizer, the experts kept as they are.

``export gguf --quantize LEVEL`` gives a file whose attention, embeddings, output layer and shared
experts have the types llama.cpp's quantizer (``llama-quantize``, ``llama_model_quantize``) gives a
dense model at ``LEVEL`` (Q4_0, Q8_0, the K types: its own per-tensor choices, such as Q6_K for the
output at Q4_0), while the routed experts stay TQ2_0 / TQ1_0 (or their exact Q4_0 fallback), bit for
bit: a tensor override per expert tensor names its present type, and llama.cpp copies a tensor whose
type is already the one asked for. The quantizer runs from llama-cpp-python (an optional dependency).

Run on a MoTE file without those overrides, llama.cpp's quantizer refuses ("requantizing from type
tq2_0 is disabled"); docs/deploy.md gives the ``llama-quantize --tensor-type`` line that keeps them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mote_convert.errors import OptionsError, OutputWriteError

# llama.cpp's quantization levels (llama_ftype) an export offers: those that need no importance matrix
LEVELS = (
    "q8_0",
    "q6_k",
    "q5_k_m",
    "q5_k_s",
    "q5_1",
    "q5_0",
    "q4_k_m",
    "q4_k_s",
    "q4_1",
    "q4_0",
    "q3_k_l",
    "q3_k_m",
    "q3_k_s",
    "q2_k",
)


def check_level(level: str) -> str:
    """``level`` in lower case, or an options error listing the known ones."""
    name = level.lower()
    if name not in LEVELS:
        raise OptionsError(f"unknown quantization level {level!r}; known: {', '.join(LEVELS)}")
    return name


def require_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or an options error that says how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise OptionsError(
            "--quantize runs llama.cpp's own quantizer, from llama-cpp-python: pip install 'mote-convert[llamacpp]'"
        ) from None
    return llama_cpp


@contextmanager
def _captured_log(llama_cpp: Any) -> Iterator[list[str]]:
    """llama.cpp's log lines while the block runs, kept instead of printed (the library never
    prints); llama-cpp-python's own log callback is set back afterwards."""
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def keep(level: int, text: bytes, user_data: Any) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def quantize_file(source: Path, out: Path, level: str, keep: Mapping[str, int], *, threads: int = 0) -> None:
    """llama.cpp's quantizer from ``source`` to ``out`` at ``level``; the tensors named in ``keep``
    (exact names -> their GGML type) are written in that type, which is the one they have: copied."""
    llama_cpp = require_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{check_level(level).upper()}")
    params.nthread = threads
    overrides = (llama_cpp.llama_model_tensor_override * (len(keep) + 1))()
    patterns = [f"^{name.replace('.', '[.]')}$".encode() for name in keep]  # regexes, anchored: this tensor only
    for slot, (pattern, ggml_type) in zip(overrides, zip(patterns, keep.values(), strict=True), strict=False):
        slot.pattern, slot.type = pattern, ggml_type
    overrides[len(keep)].pattern = None  # the list's end
    params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    with _captured_log(llama_cpp) as log:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        said = [line.strip() for line in log if "failed" in line or "error" in line.lower()]
        raise OutputWriteError(f"{out}: llama.cpp's quantizer stopped ({said[-1] if said else f'return code {rc}'})")
