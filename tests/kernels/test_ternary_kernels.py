"""Every kernel equals the reference: int32 accumulations bit for bit, outputs after scaling too."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mote_convert.errors import MoteError
from mote_convert.kernels import KERNELS, get_kernel, select_kernel, ternary_linear
from mote_convert.kernels import cpu as cpu_kernel
from mote_convert.quant.packing import pack_ternary, quantize_pack

FAST = [name for name, k in KERNELS.items() if name != "reference" and "cpu" in k.devices and k.available()]
# every path this CPU can run (AVX-512 VNNI implies AVX2 here)
PATHS = ["auto", "scalar"] + {"avx512vnni": ["avx2", "avx512vnni"], "avx2": ["avx2"]}.get(cpu_kernel.best_path(), [])


def test_the_compiled_kernel_is_built_here() -> None:
    """CI has a compiler: the C++ path must be what runs, and the CPU default."""
    assert "cpu" in FAST and select_kernel(torch.device("cpu")).name == "cpu"
    assert cpu_kernel.best_path() in ("avx512vnni", "avx2", "scalar")


@settings(max_examples=60, deadline=None)
@given(
    out=st.integers(1, 70),  # rows not a multiple of 4
    inp=st.sampled_from(
        [1, 7, 31, 32, 33, 63, 64, 65, 95, 129, 1023, 1056, 1057]
    ),  # around the 32- and 64-byte vectors and the 1024-byte block
    tokens=st.sampled_from([1, 2, 3, 4, 5, 8, 17]),  # around the 4-token blocks of the VNNI path
    seed=st.integers(0, 2**16),
)
def test_integer_products_equal_the_reference(out: int, inp: int, tokens: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-1, 2, (out, inp), generator=g, dtype=torch.int8)
    packed = pack_ternary(codes)
    x_q = torch.randint(-128, 128, (tokens, inp), generator=g, dtype=torch.int8)
    x_q[0, : min(inp, 5)] = -128  # the extremes
    expected = x_q.to(torch.int64) @ codes.to(torch.int64).t()
    assert torch.equal(get_kernel("reference").matmul(x_q, packed, out).to(torch.int64), expected)
    for name in FAST:
        for path in PATHS:
            got = (
                torch.ops.mote.ternary_matmul(x_q, packed, out, path)
                if name == "cpu"
                else get_kernel(name).matmul(x_q, packed, out)
            )
            assert got.dtype == torch.int32 and torch.equal(got.to(torch.int64), expected), (name, path)


@settings(max_examples=30, deadline=None)
@given(
    out=st.integers(1, 50),
    inp=st.sampled_from([3, 32, 40, 129]),
    lead=st.sampled_from([(1,), (5,), (2, 3), (1, 1)]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_ternary_linear_equals_the_reference(
    out: int, inp: int, lead: tuple, dtype: torch.dtype, bias: bool, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    packed, gamma = quantize_pack(torch.randn(out, inp, generator=g))
    x = (torch.randn(*lead, inp, generator=g) * 3).to(dtype)
    b = torch.randn(out, generator=g).to(dtype) if bias else None
    ref = ternary_linear(x, packed, gamma.reshape(1), out, b, kernel="reference")
    assert ref.dtype == dtype and ref.shape == (*lead, out)
    for name in FAST:
        assert torch.equal(ternary_linear(x, packed, gamma.reshape(1), out, b, kernel=name), ref), name


def test_large_batch_and_many_threads() -> None:
    g = torch.Generator().manual_seed(1)
    packed, gamma = quantize_pack(torch.randn(517, 2050, generator=g))
    x = torch.randn(130, 2050, generator=g)
    ref = ternary_linear(x, packed, gamma, 517, kernel="reference")
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        try:
            for name in FAST:
                assert torch.equal(ternary_linear(x, packed, gamma, 517, kernel=name), ref)
        finally:
            torch.set_num_threads(2)


def test_kernel_choice_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTE_KERNEL", "reference")
    assert select_kernel(torch.device("cpu")).name == "reference"
    monkeypatch.setenv("MOTE_KERNEL", "fastest")
    with pytest.raises(MoteError, match="unknown kernel 'fastest'; known: cpu, reference"):
        select_kernel(torch.device("cpu"))
    with pytest.raises(RuntimeError, match="do not fit"):
        torch.ops.mote.ternary_matmul(torch.zeros(1, 4, dtype=torch.int8), torch.zeros(2, 4, dtype=torch.uint8), 3)


def test_no_compiler_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    """A failed build warns once and leaves the reference as the CPU kernel: never a crash."""
    from torch.utils import cpp_extension

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003
        raise RuntimeError("no C++ compiler found")

    cpu_kernel.load.cache_clear()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # no cached build: load() must build
    monkeypatch.setattr(cpp_extension, "load", broken)
    try:
        with pytest.warns(RuntimeWarning, match="could not be built .*no C\\+\\+ compiler"):
            assert select_kernel(torch.device("cpu")).name == "reference"
        assert select_kernel(torch.device("cpu")).name == "reference"  # cached: no second warning
        packed, gamma = quantize_pack(torch.randn(9, 12))
        ternary_linear(torch.randn(2, 12), packed, gamma, 9)
    finally:
        cpu_kernel.load.cache_clear()
        monkeypatch.undo()
        assert cpu_kernel.load()


def test_a_cached_build_loads_without_cpp_extension() -> None:
    """A finished build is loaded directly in a new process: cpp_extension (and setuptools) are not
    imported, and the build directory is keyed by the source, so an edited source builds anew.
    Finished is our marker naming the library, whatever cpp_extension's lock file does (torch 2.14
    leaves it in place); a library without the marker goes through cpp_extension, which marks it."""
    assert cpu_kernel.load()
    directory = cpu_kernel.build_directory()
    library, marker = directory / f"{cpu_kernel.NAME}.so", directory / cpu_kernel.MARKER
    assert library.is_file() and marker.is_file()
    code = (
        "import sys; from mote_convert.kernels import cpu; assert cpu.load(); "
        "print('torch.utils.cpp_extension' in sys.modules)"
    )

    def cpp_extension_imported() -> bool:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
        return out.stdout.strip() == "True"

    (directory / "lock").touch()  # as torch 2.14's advisory lock file stays after its build
    try:
        assert not cpp_extension_imported()
    finally:
        (directory / "lock").unlink()  # up to torch 2.13 a lock file means a build is running: load() waits
    marker.unlink()
    assert cpp_extension_imported() and marker.is_file()  # checked by cpp_extension, then marked
    assert not cpp_extension_imported()


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 300),
    cols=st.sampled_from([1, 7, 64, 1000, 16384, 16385]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_fused_gamma_and_pack_equal_the_reference(rows: int, cols: int, dtype: torch.dtype, seed: int) -> None:
    """gamma (eight block chains side by side in C++) and the packed codes, bit for bit; sizes span
    partial blocks, partial groups of eight blocks and many groups."""
    from mote_convert.kernels import absmean_scale
    from mote_convert.kernels import quantize_pack as fused_quantize_pack
    from mote_convert.quant.ternary import absmean_scale as reference_gamma

    g = torch.Generator().manual_seed(seed)
    w = (
        torch.randn(rows, cols, generator=g)
        * torch.rand(rows, 1, generator=g)
        * 10.0 ** torch.randint(-3, 3, (1,), generator=g)
    ).to(dtype)
    assert torch.equal(absmean_scale(w), reference_gamma(w))
    packed, gamma = fused_quantize_pack(w)
    ref_packed, ref_gamma = quantize_pack(w)
    assert torch.equal(gamma, ref_gamma) and torch.equal(packed, ref_packed)


def test_one_thread_packs_the_same_bits() -> None:
    """The converter's worker packs on its own thread (kernels.one_thread): the same gamma and codes
    as on torch's thread pool; other thread counts are refused by the operator."""
    from mote_convert.kernels import one_thread
    from mote_convert.kernels import quantize_pack as fused_quantize_pack

    w = torch.randn(1000, 16385, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    pooled = fused_quantize_pack(w)
    with one_thread():
        alone = fused_quantize_pack(w)
    assert torch.equal(pooled[0], alone[0]) and torch.equal(pooled[1], alone[1])
    with pytest.raises(RuntimeError, match="threads must be 0"):
        torch.ops.mote.ternary_pack(w, 0.5, 2)
