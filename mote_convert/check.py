"""The checks of a MoTE checkpoint: what ``inspect`` reports and every other command refuses.

From safetensors headers (names, dtypes, shapes, the files' metadata, completeness against
``config.json["mote"]``) plus the small float32 tensors (expert scales, routers), read with
exact-size positioned reads. Each problem names its tensor, file or ``config.json`` key.
:func:`require_sound` turns problems into one :class:`~mote_convert.errors.CheckFailedError`;
:func:`check_expert_values` checks one expert tensor's values as a command streams it (a latent
weight must be finite, packed codes must never be 0b11), so that what ``inspect --stats`` counts is
refused by ``pack``, ``export gguf`` and ``load_model`` alike.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from mote_convert.arch import Architecture
from mote_convert.errors import CheckFailedError, CorruptCheckpointError, read_error
from mote_convert.format import (
    BIAS,
    EXPERT_NAME,
    ExpertCodec,
    MoteConfig,
    Problem,
    check_file_metadata,
    codec_of_suffix,
    config_key,
    expert_base,
    get_codec,
    is_int,
    router_name,
)
from mote_convert.io.dtypes import FLOAT_DTYPES
from mote_convert.io.index import CheckpointIndex, TensorInfo

if TYPE_CHECKING:
    import torch

_key = config_key
# The routers' dtype in the format; ``pack`` also takes a training engine's bf16 / fp16 copy, and widens it.
ROUTER_DTYPES = ("F32",)


def int_or_none(mapping: Mapping[str, Any] | None, *keys: str) -> int | None:
    for key in keys:
        value = (mapping or {}).get(key)
        if is_int(value):
            return value
    return None


def _expect(
    index: CheckpointIndex, name: str, dtype: str | None, shape: tuple[int, ...] | None, problems: list[Problem]
) -> TensorInfo | None:
    """Check one required tensor; a tensor in an unreadable file is left to the file's problem."""
    if name in index.unreadable:
        return None
    info = index.tensors.get(name)
    if info is None:
        problems.append(Problem(name, "missing"))
        return None
    if (dtype is not None and info.dtype != dtype) or (shape is not None and info.shape != shape):
        want = " ".join(x for x in (dtype, str(list(shape)) if shape is not None else None) if x)
        problems.append(Problem(name, f"is {info.dtype} {list(info.shape)}, expected {want}"))
        return None
    return info


def _check_tensors(
    config: Mapping[str, Any],
    arch: Architecture,
    mote: MoteConfig,
    index: CheckpointIndex,
    router_dtypes: tuple[str, ...],
) -> tuple[list[Problem], list[tuple[int, int, str, TensorInfo, int]]]:
    """Check every tensor the format requires of the MoE layers, and that no other MoTE tensor
    exists. Returns problems and the experts' primary tensors as (layer, expert, proj, info, out)."""
    problems: list[Problem] = []
    experts: list[tuple[int, int, str, TensorInfo, int]] = []
    n = mote.num_experts
    codec = get_codec(mote.expert_format)
    hidden = int_or_none(arch.text_config_of(config), arch.hidden_size_key)
    expected: set[str] = set()
    for layer, prefix in mote.layer_prefixes.items():
        names = {name: m for name in _names_under(index, prefix) if (m := EXPERT_NAME.match(name))}
        found = {int(m["expert"]) for m in names.values()}
        if found and found != set(range(n)):
            surplus = sorted(name for name, m in names.items() if int(m["expert"]) >= n)
            example = f" ({surplus[0]})" if surplus else ""
            problems.append(
                Problem(_key("num_experts"), f"is {n}, but {prefix} holds experts {_ranges(sorted(found))}{example}")
            )
        router = router_name(prefix)
        expected.add(router)
        info = _expect(index, router, None, (n, hidden) if hidden is not None else None, problems)
        if info is not None and info.dtype not in router_dtypes:
            problems.append(
                Problem(router, f"is {info.dtype} {list(info.shape)}, expected {' or '.join(router_dtypes)}")
            )
        for proj in mote.projections:
            shared = _expect(index, f"{prefix}.{proj}.weight", None, None, problems)
            if shared is not None and (len(shared.shape) != 2 or shared.dtype not in FLOAT_DTYPES):
                problems.append(
                    Problem(
                        shared.name, f"shared expert weight must be 2-D float, is {shared.dtype} {list(shared.shape)}"
                    )
                )
                shared = None
            bias = index.tensors.get(f"{prefix}.{proj}.{BIAS}")
            for i in range(n):
                base = expert_base(prefix, i, proj)
                info = None
                for part in codec.parts(shared.dtype, shared.shape) if shared is not None else _nominal_parts(codec):
                    name = f"{base}.{part.suffix}"
                    expected.add(name)
                    # a latent weight may be of any float dtype: training keeps it float32 beside a bf16 model
                    dtype = part.dtype if shared is not None and not codec.copies_source else None
                    checked = _expect(index, name, dtype, part.shape if shared is not None else None, problems)
                    if checked is not None and codec.copies_source and checked.dtype not in FLOAT_DTYPES:
                        problems.append(Problem(name, f"latent expert weight must be float, is {checked.dtype}"))
                        checked = None
                    if part.suffix == codec.primary:
                        info = checked
                if info is not None and shared is not None:
                    experts.append((layer, i, proj, info, shared.shape[0]))
                if bias is not None:
                    expected.add(f"{base}.{BIAS}")
                    _expect(index, f"{base}.{BIAS}", bias.dtype, bias.shape, problems)
    problems += _unexpected(index, arch, config, mote, expected)
    return problems, experts


def _nominal_parts(codec: ExpertCodec) -> Any:
    """The codec's parts when the dense shape is unknown (names only are checked)."""
    return codec.parts("F32", (4, 4))


def _names_under(index: CheckpointIndex, prefix: str) -> list[str]:
    return [name for name in index.tensors if name.startswith(prefix + ".experts.")]


def _ranges(values: list[int]) -> str:
    return ", ".join(str(v) for v in values) if len(values) <= 6 else f"{values[0]}..{values[-1]} ({len(values)})"


def _unexpected(
    index: CheckpointIndex, arch: Architecture, config: Mapping[str, Any], mote: MoteConfig, expected: set[str]
) -> list[Problem]:
    """MoTE tensors the config does not account for: a layer missing from moe_layers, an expert past
    num_experts, a tensor of another expert format."""
    problems: list[Problem] = []
    moe_prefixes = set(mote.layer_prefixes.values())
    num_layers = arch.num_layers_of(config) or 0
    moe = set(mote.layer_prefixes)
    other_layers = {p: layer for layer in range(num_layers) for p in arch.prefixes_for(layer) if layer not in moe}
    reported_layers: set[int] = set()
    for name in index.tensors:
        if ".experts." not in name and ".router." not in name:
            continue
        prefix = name.split(".experts.", 1)[0] if ".experts." in name else name.split(".router.", 1)[0]
        if prefix in other_layers:
            layer = other_layers[prefix]
            if layer not in reported_layers:
                reported_layers.add(layer)
                problems.append(Problem(_key("moe_layers"), f"omits layer {layer}, but {name} exists"))
            continue
        if prefix not in moe_prefixes or name in expected:
            continue
        m = EXPERT_NAME.match(name)
        if m and int(m["expert"]) >= mote.num_experts:
            continue  # already reported as a num_experts disagreement
        other = codec_of_suffix(m["suffix"]) if m else None
        if other is not None and other.format is not mote.expert_format:
            problems.append(
                Problem(
                    _key("expert_format"),
                    f"is {mote.expert_format.value!r}, but {name} is a {other.format.value} expert tensor",
                )
            )
        else:
            problems.append(Problem(name, "unexpected MoTE tensor (config.json['mote'] does not account for it)"))
    return problems


def check_metadata(index: CheckpointIndex) -> list[Problem]:
    return [p for f, meta in sorted(index.metadata.items()) if (p := check_file_metadata(f, meta)) is not None]


def _as_float32(data: bytes, dtype: str) -> Any:
    """Little-endian F32 / F16 / BF16 bytes as a float32 numpy array (bf16 is float32's high half)."""
    import numpy as np

    if dtype == "BF16":
        return (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(data, dtype="<f2" if dtype == "F16" else "<f4").astype(np.float32)


def _read_small(index: CheckpointIndex, names: list[str], reduce: Callable[[Any], Any]) -> dict[str, Any]:
    """``reduce`` of each of a few small float tensors (scales, routers) as float32 numpy arrays.

    Exact-size positioned reads, one open file each: a page fault on a memory map would make the
    kernel read ahead megabytes around each 4-byte scale of a cold checkpoint.
    """

    values: dict[str, Any] = {}
    for file_name, file_names in _by_file(index, names):
        path = index.root / file_name
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                for name in file_names:
                    info = index[name]
                    data = os.pread(fd, info.nbytes, info.offset)
                    if len(data) != info.nbytes:
                        raise CorruptCheckpointError(f"{path}: {name} ends early (file truncated while reading?)")
                    values[name] = reduce(_as_float32(data, info.dtype).reshape(info.shape))
            finally:
                os.close(fd)
        except OSError as exc:
            raise read_error(path, exc) from None
    return values


def _read_scales(index: CheckpointIndex, names: list[str]) -> dict[str, float]:
    """The 4-byte float32 scales."""
    return _read_small(index, names, lambda a: float(a.reshape(-1)[0]))


def _check_routers(index: CheckpointIndex, mote: MoteConfig) -> list[Problem]:
    """Every router weight finite (a router from an infinite initializer_range is not)."""
    import numpy as np

    names = [router_name(p) for p in mote.layer_prefixes.values()]
    names = [n for n in names if n in index and index[n].dtype in ("F32", "BF16", "F16")]
    bad = _read_small(index, names, lambda a: (int(a.size - np.isfinite(a).sum()), int(a.size)))
    return [Problem(n, f"{k} of {size} router weights are not finite") for n, (k, size) in bad.items() if k]


def _by_file(index: CheckpointIndex, names: list[str]) -> list[tuple[str, list[str]]]:
    """Names grouped by file, each group in file order (reads then sweep each file forward once)."""
    by_file: dict[str, list[str]] = {}
    for name in names:
        by_file.setdefault(index.tensors[name].file, []).append(name)
    return [(f, sorted(group, key=lambda n: index.tensors[n].offset)) for f, group in sorted(by_file.items())]


def _check_scales(scales: Mapping[str, float]) -> list[Problem]:
    problems = []
    for name, value in scales.items():
        if not math.isfinite(value):
            problems.append(Problem(name, f"scale gamma is {value}, not finite"))
        elif value <= 0:
            problems.append(Problem(name, f"scale gamma is {value}; absmean gamma is at least 1e-5"))
    return problems


def check_mote_tensors(
    config: Mapping[str, Any],
    arch: Architecture,
    mote: MoteConfig,
    index: CheckpointIndex,
    router_dtypes: tuple[str, ...] = ROUTER_DTYPES,
) -> tuple[list[Problem], list[tuple[int, int, str, TensorInfo, int]], dict[str, float]]:
    """Every tensor check of a MoTE checkpoint; also the experts' primary tensors and the scales read."""
    codec = get_codec(mote.expert_format)
    problems, experts = _check_tensors(config, arch, mote, index, router_dtypes)
    scales: dict[str, float] = {}
    if codec.scale is not None:
        scale_names = [info.name.removesuffix(codec.primary) + codec.scale for *_, info, _ in experts]
        scale_names = [s for s in scale_names if s in index and index[s].dtype == "F32" and index[s].shape == (1,)]
        scales = _read_scales(index, scale_names)
        problems += _check_scales(scales)
    problems += _check_routers(index, mote)
    return problems, experts, scales


def check_mote_checkpoint(
    index: CheckpointIndex,
    config: Mapping[str, Any],
    arch: Architecture,
    mote: MoteConfig,
    router_dtypes: tuple[str, ...] = ROUTER_DTYPES,
) -> list[Problem]:
    """What ``inspect`` checks of a MoTE checkpoint's files, from headers (plus scales and routers):
    loaders refuse exactly what inspect reports."""
    return check_metadata(index) + check_mote_tensors(config, arch, mote, index, router_dtypes)[0]


def require_sound(
    root: Path,
    index: CheckpointIndex,
    config: Mapping[str, Any],
    arch: Architecture,
    mote: MoteConfig,
    router_dtypes: tuple[str, ...] = ROUTER_DTYPES,
) -> None:
    """Refuse, before a command acts, a checkpoint in which ``inspect`` finds a problem: one error
    naming the first few problems and counting the rest."""
    problems = check_mote_checkpoint(index, config, arch, mote, router_dtypes)
    if problems:
        listed = "; ".join(str(p) for p in problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        )
        raise CheckFailedError(
            f"{root}: not a sound MoTE checkpoint: {listed} (mote-convert inspect lists every problem)"
        )


def check_expert_values(name: str, codec: ExpertCodec, tensor: torch.Tensor) -> None:
    """Refuse the stored weight of one routed-expert projection (``name``: its on-disk name) holding
    values no sound checkpoint holds: a latent weight with a NaN or infinite value (it would pack to
    a non-finite gamma), packed codes holding the never-written 0b11 (the kernels would compute it
    as +2)."""
    if codec.scale is None and tensor.is_floating_point():
        bad = int(tensor.numel() - finite_count(tensor))
        if bad:
            raise CheckFailedError(f"{name}: {bad} of {tensor.numel()} latent weights are not finite")
    elif codec.scale is not None:
        invalid = invalid_code_count(tensor)
        if invalid:
            raise CheckFailedError(f"{name}: {invalid} invalid 2-bit codes (0b11)")


def finite_count(tensor: torch.Tensor, chunk: int = 1 << 22) -> int:
    """Finite values of a float tensor, counted in chunks (the temporaries stay small)."""
    import torch

    flat = tensor.reshape(-1)
    return sum(int(torch.isfinite(flat[i : i + chunk]).sum()) for i in range(0, flat.numel(), chunk))


def invalid_code_count(packed: torch.Tensor, chunk: int = 1 << 20) -> int:
    """The 2-bit fields of packed codes that are 0b11, counted in chunks of bit operations."""
    flat = packed.reshape(-1)
    count = 0
    for start in range(0, flat.numel(), chunk):
        part = flat[start : start + chunk]
        marks = (part & (part >> 1)) & 0x55
        if bool(marks.any()):
            count += sum(int(((marks >> shift) & 1).sum()) for shift in (0, 2, 4, 6))
    return count
