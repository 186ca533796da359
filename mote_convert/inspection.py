"""``inspect``: what a checkpoint holds, what it costs in memory, and whether it is sound.

Reads safetensors headers, plus the 4-byte expert scales of a packed MoTE checkpoint; ``stats=True``
also reads every routed-expert tensor to count its codes. For a dense checkpoint the report adds what
``upcycle`` would produce with the given options, from the upcycle plan itself (nothing written).

Problems (a damaged or inconsistent checkpoint) are collected, not raised, each naming the tensor,
file or config key; a report with problems is a failed check (``report.ok`` is False, the CLI exits
non-zero). Bad input that leaves nothing to inspect (no such path, no config.json, an unsupported
model_type) raises the usual :class:`~mote_convert.errors.MoteError`.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from mote_convert.arch import Architecture, get_architecture
from mote_convert.errors import CorruptCheckpointError, MoteError, read_error
from mote_convert.format import (
    BIAS,
    EXPERT_NAME,
    MAX_LAYERS,
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
from mote_convert.io.index import CheckpointIndex, TensorInfo, load_index
from mote_convert.memory import ROUTED_EXPERTS, ROUTERS, Comparison, Layout, MemoryTable, compare, memory_table
from mote_convert.options import UpcycleOptions
from mote_convert.plan import ConversionPlan, build_upcycle_plan, model_type_of, read_config

DENSE = "dense"
MOTE = "mote"
REPORT_VERSION = 1

# Called with the bytes of each expert tensor read for ``stats`` and the bytes all of them hold.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelInfo:
    """The model as config.json and the headers describe it."""

    model_type: str
    architecture: str
    text_model_type: str | None
    num_layers: int | None
    hidden_size: int | None
    intermediate_size: int | None
    vision_model_type: str | None
    vision_num_layers: int | None
    vision_hidden_size: int | None
    dtype: str | None  # the dtype holding most bytes of the dense (non-MoTE) tensors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model_type": self.model_type,
            "architecture": self.architecture,
            "text_model_type": self.text_model_type,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "vision_tower": None
            if self.vision_model_type is None
            else {
                "model_type": self.vision_model_type,
                "num_layers": self.vision_num_layers,
                "hidden_size": self.vision_hidden_size,
            },
            "dtype": self.dtype,
        }


@dataclass(frozen=True)
class MoteInfo:
    """The MoE part: from config.json["mote"] (a MoTE checkpoint) or the upcycle plan (a dense one)."""

    num_experts: int
    top_k: int
    moe_layers: tuple[int, ...]
    expert_format: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "moe_layers": list(self.moe_layers),
            "expert_format": self.expert_format,
        }


@dataclass(frozen=True)
class FileInfo:
    """One safetensors file: its size on disk and the tensors it holds."""

    file: str
    bytes: int
    tensors: int
    tensor_bytes: int
    readable: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "file": self.file,
            "bytes": self.bytes,
            "tensors": self.tensors,
            "tensor_bytes": self.tensor_bytes,
            "readable": self.readable,
        }


@dataclass(frozen=True)
class ExpertStats:
    """Code shares and gamma of one routed-expert projection (``stats=True``)."""

    layer: int
    expert: int
    projection: str
    tensor: str
    minus: int  # codes -1
    zero: int  # codes 0
    plus: int  # codes +1
    invalid: int  # 0b11 fields (packed) - never written by a sound converter
    padding_nonzero: int  # padding fields that are not 0b00 (packed)
    gamma: float | None

    @property
    def codes(self) -> int:
        """All code fields of the real rows."""
        return self.minus + self.zero + self.plus + self.invalid

    def share(self, count: int) -> float:
        """A count as a share of all codes."""
        return count / self.codes if self.codes else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "layer": self.layer,
            "expert": self.expert,
            "projection": self.projection,
            "tensor": self.tensor,
            "counts": {"-1": self.minus, "0": self.zero, "+1": self.plus, "invalid": self.invalid},
            "shares": {
                "-1": round(self.share(self.minus), 6),
                "0": round(self.share(self.zero), 6),
                "+1": round(self.share(self.plus), 6),
            },
            "padding_nonzero": self.padding_nonzero,
            "gamma": self.gamma,
        }


@dataclass(frozen=True)
class InspectionReport:
    """Everything ``inspect`` says about a checkpoint; :meth:`to_dict` is the documented JSON."""

    path: Path
    kind: str  # DENSE or MOTE
    model: ModelInfo
    mote: MoteInfo | None  # a MoTE checkpoint's, or for a dense one the planned
    files: tuple[FileInfo, ...]
    memory: MemoryTable  # of the tensors in the files
    planned: MemoryTable | None  # dense only: of the tensors upcycle would write
    comparison: Comparison | None
    problems: tuple[Problem, ...]
    stats: tuple[ExpertStats, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # dense only: the upcycle options used

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; the keys are documented in docs/inspect-json.md."""
        return {
            "report_version": REPORT_VERSION,
            "path": str(self.path),
            "kind": self.kind,
            "ok": self.ok,
            "model": self.model.to_dict(),
            "mote": None if self.mote is None else self.mote.to_dict(),
            "upcycle_options": dict(self.options) if self.kind == DENSE else None,
            "files": [f.to_dict() for f in self.files],
            "memory": self.memory.to_dict(),
            "planned_memory": None if self.planned is None else self.planned.to_dict(),
            "comparison": None if self.comparison is None else self.comparison.to_dict(),
            "problems": [p.to_dict() for p in self.problems],
            "stats": None if self.stats is None else [s.to_dict() for s in self.stats],
        }


def inspect_checkpoint(
    path: str | Path,
    options: UpcycleOptions | None = None,
    *,
    stats: bool = False,
    progress: ProgressFn | None = None,
) -> InspectionReport:
    """Report on a dense or MoTE checkpoint directory (docs/usage.md, ``inspect``).

    ``options`` (num_experts, top_k, layers, ...) apply to a dense checkpoint: the report then shows
    what ``upcycle`` would write with them. ``stats`` reads the routed-expert tensors and counts their
    codes; ``progress(nbytes, total)`` is called after each tensor read for it.
    """
    root = Path(path)
    config = read_config(root)
    arch = get_architecture(model_type_of(config, root))
    errors: list[MoteError] = []
    index = load_index(root, problems=errors)
    problems = [Problem(_error_where(str(e), root), _error_message(str(e), root)) for e in errors]
    files = _file_infos(root, index)
    kind = MOTE if "mote" in config else DENSE
    if kind == MOTE:
        return _inspect_mote(root, config, arch, index, files, problems, stats, progress)
    return _inspect_dense(root, config, arch, index, files, problems, options or UpcycleOptions())


def _error_where(message: str, root: Path) -> str:
    """The file an index error names (its messages start with the path), relative to the checkpoint."""
    head = message.split(":", 1)[0]
    try:
        return str(Path(head).relative_to(root))
    except ValueError:
        return head


def _error_message(message: str, root: Path) -> str:
    return message.split(": ", 1)[1] if ": " in message else message


def _file_infos(root: Path, index: CheckpointIndex) -> tuple[FileInfo, ...]:
    per_file: dict[str, list[int]] = {f: [0, 0] for f in index.files}
    for t in index:
        acc = per_file.setdefault(t.file, [0, 0])
        acc[0] += 1
        acc[1] += t.nbytes
    out = [
        FileInfo(f, (root / f).stat().st_size, n, nbytes, True) for f, (n, nbytes) in sorted(per_file.items())
    ]
    for f in index.bad_files:
        size = (root / f).stat().st_size if (root / f).is_file() else 0
        out.append(FileInfo(f, size, sum(1 for v in index.unreadable.values() if v == f), 0, False))
    return tuple(out)


def _int_or_none(mapping: Mapping[str, Any] | None, *keys: str) -> int | None:
    for key in keys:
        value = (mapping or {}).get(key)
        if is_int(value):
            return value
    return None


def _num_layers(config: Mapping[str, Any], arch: Architecture) -> int | None:
    """The text model's layer count where it is plausible (loops over it must finish)."""
    n = _int_or_none(arch.text_config_of(config), arch.num_layers_key)
    return n if n is not None and 0 < n <= MAX_LAYERS else None


def _model_info(config: Mapping[str, Any], arch: Architecture, index: CheckpointIndex, layout: Layout) -> ModelInfo:
    text = arch.text_config_of(config)
    vision = config.get(arch.vision_config) if arch.vision_config else None
    vision = vision if isinstance(vision, Mapping) else None
    dtype_bytes: Counter[str] = Counter()
    for t in index:
        component, _ = layout.locate(t.name)
        if t.dtype in FLOAT_DTYPES and component not in (ROUTED_EXPERTS, ROUTERS):
            dtype_bytes[t.dtype] += t.nbytes
    return ModelInfo(
        model_type=str(config.get("model_type")),
        architecture=arch.name,
        text_model_type=text.get("model_type") if isinstance(text.get("model_type"), str) else None,
        num_layers=_int_or_none(text, arch.num_layers_key),
        hidden_size=_int_or_none(text, arch.hidden_size_key),
        intermediate_size=_int_or_none(text, arch.intermediate_size_key),
        vision_model_type=None if vision is None else str(vision.get("model_type")),
        vision_num_layers=_int_or_none(vision, "num_hidden_layers", "depth"),
        vision_hidden_size=_int_or_none(vision, "hidden_size", "embed_dim"),
        dtype=dtype_bytes.most_common(1)[0][0] if dtype_bytes else None,
    )


def _layout(arch: Architecture, config: Mapping[str, Any], index: CheckpointIndex, moe: Mapping[int, str]) -> Layout:
    """Component prefixes: MoE layers from ``moe`` (layer -> P), every other decoder layer's FFN
    prefix in the key style the checkpoint uses (the first style that names a tensor of it)."""
    num_layers = _num_layers(config, arch) or 0
    ffn: dict[str, int] = {}
    names = tuple(index.tensors)
    for layer in range(num_layers):
        if layer in moe:
            continue
        for prefix in arch.prefixes_for(layer):
            if any(n.startswith(prefix + ".") for n in names):
                ffn[prefix] = layer
                break
    return Layout(
        vision_prefixes=arch.vision_prefixes,
        projector_prefixes=arch.projector_prefixes,
        moe_prefixes={p: layer for layer, p in moe.items()},
        ffn_prefixes=ffn,
        projections=arch.ffn_kind.projections,
    )


def _inspect_dense(
    root: Path,
    config: Mapping[str, Any],
    arch: Architecture,
    index: CheckpointIndex,
    files: tuple[FileInfo, ...],
    problems: list[Problem],
    options: UpcycleOptions,
) -> InspectionReport:
    plan: ConversionPlan | None = None
    if not index.unreadable and not problems:
        try:
            plan = build_upcycle_plan(index, config, options)
        except MoteError as exc:
            problems.append(Problem("upcycle plan", str(exc)))
    moe = {m.layer: m.prefix for m in plan.moe_layers} if plan is not None else {}
    layout = _layout(arch, config, index, moe)
    source = _layout(arch, config, index, {})
    planned = comparison = mote = None
    if plan is not None:
        outputs = [e.out for e in plan.entries]
        planned = memory_table(outputs, layout)
        comparison = compare(planned, outputs, layout, options.num_experts)
        mote = MoteInfo(options.num_experts, options.top_k, tuple(moe), str(options.expert_format))
    return InspectionReport(
        path=root,
        kind=DENSE,
        model=_model_info(config, arch, index, source),
        mote=mote,
        files=files,
        memory=memory_table(index, source),
        planned=planned,
        comparison=comparison,
        problems=tuple(problems),
        options={
            "num_experts": options.num_experts,
            "top_k": options.top_k,
            "layers": options.layers.spec,
            "expert_format": options.expert_format,
        },
    )


# --- MoTE checkpoints -------------------------------------------------------------------------------

_key = config_key


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
    config: Mapping[str, Any], arch: Architecture, mote: MoteConfig, index: CheckpointIndex
) -> tuple[list[Problem], list[tuple[int, int, str, TensorInfo, int]]]:
    """Check every tensor the format requires of the MoE layers, and that no other MoTE tensor
    exists. Returns problems and the experts' primary tensors as (layer, expert, proj, info, out)."""
    problems: list[Problem] = []
    experts: list[tuple[int, int, str, TensorInfo, int]] = []
    n = mote.num_experts
    codec = get_codec(mote.expert_format)
    hidden = _int_or_none(arch.text_config_of(config), arch.hidden_size_key)
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
        _expect(index, router, "F32", (n, hidden) if hidden is not None else None, problems)
        for proj in mote.projections:
            shared = _expect(index, f"{prefix}.{proj}.weight", None, None, problems)
            if shared is not None and (len(shared.shape) != 2 or shared.dtype not in FLOAT_DTYPES):
                problems.append(Problem(shared.name, f"shared expert weight must be 2-D float, is {shared.dtype} {list(shared.shape)}"))
                shared = None
            bias = index.tensors.get(f"{prefix}.{proj}.{BIAS}")
            for i in range(n):
                base = expert_base(prefix, i, proj)
                info = None
                for part in codec.parts(shared.dtype, shared.shape) if shared is not None else _nominal_parts(codec):
                    name = f"{base}.{part.suffix}"
                    expected.add(name)
                    checked = _expect(index, name, part.dtype if shared is not None else None, part.shape if shared is not None else None, problems)
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
    num_layers = _num_layers(config, arch) or 0
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
            problems.append(Problem(_key("expert_format"), f"is {mote.expert_format.value!r}, but {name} is a {other.format.value} expert tensor"))
        else:
            problems.append(Problem(name, "unexpected MoTE tensor (config.json['mote'] does not account for it)"))
    return problems


def _check_metadata(index: CheckpointIndex) -> list[Problem]:
    return [p for f, meta in sorted(index.metadata.items()) if (p := check_file_metadata(f, meta)) is not None]


def _read_small(index: CheckpointIndex, names: list[str], reduce: Callable[[Any], Any]) -> dict[str, Any]:
    """``reduce`` of each of a few small float32 tensors (scales, routers) as numpy arrays.

    Exact-size positioned reads, one open file each: a page fault on a memory map would make the
    kernel read ahead megabytes around each 4-byte scale of a cold checkpoint.
    """
    import numpy as np

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
                    values[name] = reduce(np.frombuffer(data, dtype="<f4").reshape(info.shape))
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
    names = [n for n in names if n in index and index[n].dtype == "F32"]
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


def _expert_stats(
    index: CheckpointIndex,
    codec: ExpertCodec,
    experts: list[tuple[int, int, str, TensorInfo, int]],
    scales: Mapping[str, float],
    progress: ProgressFn | None,
) -> tuple[list[ExpertStats], list[Problem]]:
    """Count the codes of every routed-expert projection, one tensor in memory at a time.

    The tensors are read in file order by a read-ahead thread while the previous one is counted
    (a byte histogram per tensor), so the pass runs at about the speed of a plain read.
    """
    from mote_convert.io.reader import stream_tensors

    total = sum(info.nbytes for *_, info, _ in experts)
    by_name = {info.name: (layer, expert, proj, info, out) for layer, expert, proj, info, out in experts}
    found: dict[str, ExpertStats] = {}
    problems: list[Problem] = []
    for info, tensor in stream_tensors(index, by_name):
        layer, expert, proj, _, out = by_name[info.name]
        name = info.name
        c = codec.code_stats({codec.primary: tensor}, out)
        gamma = c.gamma if codec.scale is None else scales.get(name.removesuffix(codec.primary) + codec.scale)
        if c.invalid:
            problems.append(Problem(name, f"{c.invalid} invalid 2-bit codes (0b11)"))
        if c.padding_nonzero:
            problems.append(Problem(name, f"{c.padding_nonzero} padding fields past row {out} are not 0b00"))
        found[name] = ExpertStats(layer, expert, proj, name, c.minus, c.zero, c.plus, c.invalid, c.padding_nonzero, gamma)
        if progress is not None:
            progress(info.nbytes, total)
    order = {proj: i for i, proj in enumerate(dict.fromkeys(e[2] for e in experts))}
    stats = sorted(found.values(), key=lambda s: (s.layer, s.expert, order[s.projection]))
    return stats, problems


def _check_mote_tensors(
    config: Mapping[str, Any], arch: Architecture, mote: MoteConfig, index: CheckpointIndex
) -> tuple[list[Problem], list[tuple[int, int, str, TensorInfo, int]], dict[str, float]]:
    """Every tensor check of a MoTE checkpoint; also the experts' primary tensors and the scales read."""
    codec = get_codec(mote.expert_format)
    problems, experts = _check_tensors(config, arch, mote, index)
    scales: dict[str, float] = {}
    if codec.scale is not None:
        scale_names = [info.name.removesuffix(codec.primary) + codec.scale for *_, info, _ in experts]
        scale_names = [s for s in scale_names if s in index and index[s].dtype == "F32" and index[s].shape == (1,)]
        scales = _read_scales(index, scale_names)
        problems += _check_scales(scales)
    problems += _check_routers(index, mote)
    return problems, experts, scales


def check_mote_checkpoint(index: CheckpointIndex, config: Mapping[str, Any], arch: Architecture, mote: MoteConfig) -> list[Problem]:
    """What ``inspect`` checks of a MoTE checkpoint's files, from headers (plus scales and routers):
    loaders refuse exactly what inspect reports."""
    return _check_metadata(index) + _check_mote_tensors(config, arch, mote, index)[0]


def _inspect_mote(
    root: Path,
    config: Mapping[str, Any],
    arch: Architecture,
    index: CheckpointIndex,
    files: tuple[FileInfo, ...],
    problems: list[Problem],
    stats: bool,
    progress: ProgressFn | None,
) -> InspectionReport:
    mote, section_problems = MoteConfig.check(config["mote"], arch=arch, num_layers=_num_layers(config, arch))
    problems += section_problems
    problems += _check_metadata(index)
    experts: list[tuple[int, int, str, TensorInfo, int]] = []
    scales: dict[str, float] = {}
    # An unreadable file without a shard index hides which tensors it held: checking them would
    # only repeat the file's problem once per tensor.
    tensors_known = not (index.bad_files and not index.sharded)
    codec = get_codec(mote.expert_format) if mote is not None else None
    if mote is not None and tensors_known:
        tensor_problems, experts, scales = _check_mote_tensors(config, arch, mote, index)
        problems += tensor_problems
    moe = dict(mote.layer_prefixes) if mote is not None else {}
    layout = _layout(arch, config, index, moe)
    memory = memory_table(index, layout)
    expert_stats = None
    if stats:
        expert_stats = []
        if codec is not None:
            expert_stats, stat_problems = _expert_stats(index, codec, experts, scales, progress)
            problems += stat_problems
    info = None if mote is None else MoteInfo(mote.num_experts, mote.top_k, mote.moe_layers, mote.expert_format.value)
    return InspectionReport(
        path=root,
        kind=MOTE,
        model=_model_info(config, arch, index, layout),
        mote=info,
        files=files,
        memory=memory,
        planned=None,
        comparison=compare(memory, index, layout, mote.num_experts) if mote is not None else None,
        problems=tuple(problems),
        stats=None if expert_stats is None else tuple(expert_stats),
    )
