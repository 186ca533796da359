"""The C++ CPU kernel: built on first use with ``torch.utils.cpp_extension`` (cached), else absent.

If no compiler is available, or the build fails, one warning says so and the reference kernel is
used: never a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import sys
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch

from mote_convert.errors import MoteError
from mote_convert.kernels.registry import register_kernel

SOURCE = Path(__file__).parent / "csrc" / "ternary_cpu.cpp"
NAME = "mote_ternary_cpu"
MARKER = "built"  # beside the library once it has loaded: see load()
# -fno-trapping-math lets the packing loop vectorize (rounding that raises no floating-point
# exception is the same rounding); results are unchanged.
# -fopenmp: at::parallel_for is a header template that runs its range serially unless the including
# file is compiled with OpenMP. Where torch itself runs on GNU OpenMP (Linux), its symbols resolve to
# torch's own libgomp when the library loads, so torch.set_num_threads governs our loops too.
# No -std: cpp_extension passes the standard torch's headers need (C++17 up to torch 2.13, C++20
# from 2.14, whose headers use concepts); a flag of ours would come after it and win.
_OPENMP = ("-fopenmp",) if sys.platform.startswith("linux") and torch.backends.openmp.is_available() else ()
CFLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", *_OPENMP)
logger = logging.getLogger("mote_convert")


def build_directory() -> Path:
    """Where the build is cached: one directory per source, flags, torch and Python version, under
    ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``, as torch's own)."""
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        repr(CFLAGS).encode(),
        torch.__version__.encode(),
        sys.version.encode(),
        platform.machine().encode(),
    ):
        key.update(part)
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch_extensions"
    )
    return Path(root) / f"{NAME}-{key.hexdigest()[:16]}"


@lru_cache(maxsize=1)
def load() -> bool:
    """Build (or reuse the cached build of) the C++ operator; True when ``torch.ops.mote`` has it."""
    try:
        directory = build_directory()
        library = directory / f"{NAME}.so"
        # A finished build is loaded directly: importing cpp_extension (setuptools with it) and its
        # up-to-date check cost a quarter of a second in every process. Finished means our marker
        # names the library's size and time: cpp_extension's own "lock" file cannot tell (up to torch
        # 2.13 it exists while a build runs; from 2.14 it stays, an advisory lock). Anything else goes
        # through cpp_extension.load, which waits for another process's build (torchrun's ranks).
        finished = _finished(directory, library)
        if finished:
            torch.ops.load_library(str(library))
        else:
            from torch.utils import cpp_extension

            _ninja_on_path()
            directory.mkdir(parents=True, exist_ok=True)
            cpp_extension.load(
                name=NAME,
                sources=[str(SOURCE)],
                extra_cflags=list(CFLAGS),
                build_directory=str(directory),
                is_python_module=False,
                verbose=False,
            )
        torch.ops.mote.ternary_matmul  # noqa: B018 - fails if the library did not register
        if not finished:
            _mark_finished(directory, library)
        return True
    except Exception as exc:  # noqa: BLE001 - any build failure means: use the reference
        warnings.warn(
            f"mote-convert: the C++ ternary kernel could not be built ({type(exc).__name__}: {str(exc)[:200]}); "
            "using the slower pure-torch reference",
            RuntimeWarning,
            stacklevel=2,
        )
        return False


def _stamp(library: Path) -> str:
    stat = library.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}\n"


def _finished(directory: Path, library: Path) -> bool:
    """Whether ``library`` is a build that loaded once: the marker written after it names it."""
    try:
        return (directory / MARKER).read_text() == _stamp(library)
    except OSError:
        return False


def _mark_finished(directory: Path, library: Path) -> None:
    """The marker, written beside its final place and renamed (a reader never sees half of it)."""
    staged = directory / f"{MARKER}.{os.getpid()}.tmp"
    staged.write_text(_stamp(library))
    os.replace(staged, directory / MARKER)


def _ninja_on_path() -> None:
    """cpp_extension runs ``ninja`` from PATH: put the ``ninja`` package's binary there (a pip
    install does not always make it visible, e.g. under pyenv shims)."""
    try:
        import ninja
    except ImportError:
        return
    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def best_path() -> str:
    """``avx512vnni``, ``avx2`` or ``scalar``: the path the operator takes on this CPU (``unavailable``
    without the built operator)."""
    return str(torch.ops.mote.best_path()) if load() else "unavailable"


def cpu_linear(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, out_features: int, path: str = "auto"
) -> torch.Tensor:
    """``torch.ops.mote.ternary_linear``: quantization, integer product and scaling in one call."""
    if not load():
        raise MoteError(
            "the C++ ternary kernel is not available here (see the warning above); use MOTE_KERNEL=reference"
        )
    return torch.ops.mote.ternary_linear(x, packed, scale, out_features, path)


_LOCAL = threading.local()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Within the block, this thread's gamma and packing run on this thread alone (not on torch's
    thread pool): for a worker that packs beside another thread that needs a core, as the
    converter's writer does. Results are the same bits either way."""
    previous = getattr(_LOCAL, "threads", 0)
    _LOCAL.threads = 1
    try:
        yield
    finally:
        _LOCAL.threads = previous


def cpu_gamma(weight: torch.Tensor) -> torch.Tensor | None:
    """gamma from block sums of |W| taken in C++ (float32, bfloat16, float16 weights [out, in])."""
    from mote_convert.quant.ternary import SUM_BLOCK, gamma_from_block_sums

    if weight.dtype not in (torch.float32, torch.bfloat16, torch.float16) or weight.dim() != 2 or not load():
        return None
    sums = torch.ops.mote.absmean_block_sums(weight.detach(), SUM_BLOCK, getattr(_LOCAL, "threads", 0)).tolist()
    return gamma_from_block_sums(sums, weight.numel())


def cpu_pack(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Block sums of |W| and the packed codes in C++ (float32, bfloat16, float16 weights)."""
    gamma = cpu_gamma(weight)
    if gamma is None:
        return None
    return torch.ops.mote.ternary_pack(weight, float(gamma), getattr(_LOCAL, "threads", 0)), gamma


def cpu_codes(weight: torch.Tensor, gamma: torch.Tensor, out: torch.Tensor) -> bool:
    """float32 codes of a float32, bfloat16 or float16 weight into ``out``, in one pass in C++."""
    if weight.dtype not in (torch.float32, torch.bfloat16, torch.float16) or not load():
        return False
    torch.ops.mote.ternary_codes(weight.detach(), float(gamma), out)
    return True


@register_kernel(
    "cpu", ("cpu",), priority=10, available=load, linear=cpu_linear, pack=cpu_pack, gamma=cpu_gamma, codes=cpu_codes
)
def cpu_matmul(x_q: torch.Tensor, packed: torch.Tensor, out_features: int, path: str = "auto") -> torch.Tensor:
    """``torch.ops.mote.ternary_matmul``: int32 [T, out] from int8 [T, in] and packed uint8 codes."""
    if not load():
        raise MoteError(
            "the C++ ternary kernel is not available here (see the warning above); use MOTE_KERNEL=reference"
        )
    return torch.ops.mote.ternary_matmul(x_q, packed, out_features, path)
