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

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from mote_convert.arch import Architecture, architecture_of
from mote_convert.check import check_metadata, check_mote_tensors, int_or_none
from mote_convert.checkpoint import model_type_of, one_read_per_file, read_config
from mote_convert.errors import MoteError
from mote_convert.format import ExpertCodec, MoteConfig, Problem, get_codec
from mote_convert.io.dtypes import FLOAT_DTYPES
from mote_convert.io.index import CheckpointIndex, TensorInfo, load_index
from mote_convert.io.shards import ProgressFn
from mote_convert.io.source import resolve_model
from mote_convert.memory import ROUTED_EXPERTS, ROUTERS, Layout, compare, memory_table
from mote_convert.options import UpcycleOptions
from mote_convert.plan import ConversionPlan
from mote_convert.report import (
    DENSE,
    MOTE,
    ExpertStats,
    FileInfo,
    InspectionReport,
    ModelInfo,
    MoteInfo,
)
from mote_convert.upcycle_plan import build_upcycle_plan

__all__ = ["DENSE", "MOTE", "InspectionReport", "inspect_checkpoint"]


@one_read_per_file()
def inspect_checkpoint(
    path: str | Path,
    options: UpcycleOptions | None = None,
    *,
    stats: bool = False,
    progress: ProgressFn | None = None,
    revision: str | None = None,
) -> InspectionReport:
    """Report on a dense or MoTE checkpoint (a directory, or a Hub repo id at ``revision``;
    docs/usage.md, ``inspect``).

    ``options`` (num_experts, top_k, layers, ...) apply to a dense checkpoint: the report then shows
    what ``upcycle`` would write with them. ``stats`` reads the routed-expert tensors and counts their
    codes; ``progress(nbytes, total)`` is called after each tensor read for it.
    """
    root = resolve_model(path, revision)
    config = read_config(root)
    model_type_of(config, root)
    arch = architecture_of(config)
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
    out = [FileInfo(f, (root / f).stat().st_size, n, nbytes, True) for f, (n, nbytes) in sorted(per_file.items())]
    for f in index.bad_files:
        size = (root / f).stat().st_size if (root / f).is_file() else 0
        out.append(FileInfo(f, size, sum(1 for v in index.unreadable.values() if v == f), 0, False))
    return tuple(out)


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
        num_layers=int_or_none(text, arch.num_layers_key),
        hidden_size=int_or_none(text, arch.hidden_size_key),
        intermediate_size=int_or_none(text, arch.intermediate_size_key),
        vision_model_type=None if vision is None else str(vision.get("model_type")),
        vision_num_layers=int_or_none(vision, "num_hidden_layers", "depth"),
        vision_hidden_size=int_or_none(vision, "hidden_size", "embed_dim"),
        dtype=dtype_bytes.most_common(1)[0][0] if dtype_bytes else None,
    )


def _layout(arch: Architecture, config: Mapping[str, Any], index: CheckpointIndex, moe: Mapping[int, str]) -> Layout:
    """Component prefixes: MoE layers from ``moe`` (layer -> P), every other decoder layer's FFN
    prefix in the key style the checkpoint uses (the first style that names a tensor of it)."""
    num_layers = arch.num_layers_of(config) or 0
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
            what = "invalid 2-bit codes (0b11)" if codec.scale is not None else "latent weights that are not finite"
            problems.append(Problem(name, f"{c.invalid} {what}"))
        if c.padding_nonzero:
            problems.append(Problem(name, f"{c.padding_nonzero} padding fields past row {out} are not 0b00"))
        found[name] = ExpertStats(
            layer, expert, proj, name, c.minus, c.zero, c.plus, c.invalid, c.padding_nonzero, gamma
        )
        if progress is not None:
            progress(info.nbytes, total)
    order = {proj: i for i, proj in enumerate(dict.fromkeys(e[2] for e in experts))}
    stats = sorted(found.values(), key=lambda s: (s.layer, s.expert, order[s.projection]))
    return stats, problems


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
    mote, section_problems = MoteConfig.check(config["mote"], arch=arch, num_layers=arch.num_layers_of(config))
    problems += section_problems
    problems += check_metadata(index)
    experts: list[tuple[int, int, str, TensorInfo, int]] = []
    scales: dict[str, float] = {}
    # An unreadable file without a shard index hides which tensors it held: checking them would
    # only repeat the file's problem once per tensor.
    tensors_known = not (index.bad_files and not index.sharded)
    codec = get_codec(mote.expert_format) if mote is not None else None
    if mote is not None and tensors_known:
        tensor_problems, experts, scales = check_mote_tensors(config, arch, mote, index)
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
