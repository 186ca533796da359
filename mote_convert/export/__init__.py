"""``mote-convert export gguf``: a checkpoint as llama.cpp GGUF files (docs/deploy.md).

Plan (every key and tensor, from safetensors headers), validate, then stream one tensor at a time
into a file beside the output, renamed into place when complete. The language model goes to one
GGUF (``deepseek`` architecture for a MoTE checkpoint, ``llama`` for a dense one), the vision tower
and projector to an ``mmproj`` GGUF when asked. With a quantization level, llama.cpp's own quantizer
turns the written file into the output, the experts kept (:mod:`mote_convert.export.quantize`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mote_convert.checkpoint import one_read_per_file
from mote_convert.errors import InternalError, OptionsError
from mote_convert.export.gguf_file import GgufPlan, write_gguf
from mote_convert.export.quantize import LEVELS, check_level, quantize_file, require_llama_cpp
from mote_convert.export.tensors import EXPERT_TYPES, SHARED_TYPES, get_type
from mote_convert.io.index import CheckpointIndex, load_index
from mote_convert.io.reader import TensorReader
from mote_convert.io.shards import ProgressFn
from mote_convert.io.source import resolve_model
from mote_convert.io.staging import check_output_path

__all__ = [
    "EXPERT_TYPES",
    "LEVELS",
    "SHARED_TYPES",
    "GgufExport",
    "GgufExportPlan",
    "export_gguf",
    "plan_gguf",
    "write_export",
]


@dataclass(frozen=True)
class GgufFile:
    """One written (or planned) GGUF file."""

    path: Path
    arch: str
    tensors: int
    nbytes: int  # tensor data
    types: dict[str, int]  # GGML type -> tensor count


@dataclass(frozen=True)
class GgufExport:
    """What ``export gguf`` wrote (or, for a dry run, would write)."""

    files: tuple[GgufFile, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        return {
            "files": [
                {"path": str(f.path), "arch": f.arch, "tensors": f.tensors, "bytes": f.nbytes, "types": f.types}
                for f in self.files
            ],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class GgufExportPlan:
    """The planned files of one export: the text GGUF's plan and the mmproj's, when asked."""

    root: Path
    index: CheckpointIndex
    text: GgufPlan
    vision: GgufPlan | None
    quantize: str | None = None  # llama.cpp's quantization level for all but the experts
    keep_shared: bool = False  # --shared-type was given: the shared experts keep it too

    @property
    def nbytes(self) -> int:
        return self.text.nbytes + (self.vision.nbytes if self.vision is not None else 0)


@one_read_per_file()
def plan_gguf(
    model: str | Path,
    *,
    expert_type: str = "tq2_0",
    shared_type: str | None = None,
    mmproj: bool = False,
    quantize: str | None = None,
) -> GgufExportPlan:
    """The text GGUF's plan, and the mmproj's when asked, checked; from headers only. ``quantize``
    (a llama.cpp level such as q4_0 or q4_k_m) is checked here, with its dependency."""
    from mote_convert.checkpoint import read_config
    from mote_convert.export.gguf_file import validate
    from mote_convert.export.gguf_mmproj import plan_mmproj
    from mote_convert.export.gguf_text import plan_text
    from mote_convert.io.jsonfile import check_side_files

    if quantize is not None:
        quantize = check_level(quantize)
        require_llama_cpp()  # refused before anything is read, as a dry run would be
    root = Path(model)
    config = read_config(root)
    index = load_index(root)
    check_side_files(root)  # the tokenizer and processor files gguf and transformers parse next
    vision = (
        plan_mmproj(root, index, config) if mmproj else None
    )  # first: the text plan's tokenizer load trips on its config too
    text = plan_text(
        root,
        index,
        config,
        expert_type=get_type(expert_type, EXPERT_TYPES),
        shared_type=get_type(shared_type, SHARED_TYPES) if shared_type is not None else None,
    )
    for plan in (text, vision):  # checked here, so that a dry run refuses what the write would
        if plan is not None:
            validate(plan)
    return GgufExportPlan(root, index, text, vision, quantize, shared_type is not None)


def _summary(path: Path, plan: GgufPlan) -> GgufFile:
    types: dict[str, int] = {}
    for t in plan.tensors:
        types[t.type.name] = types.get(t.type.name, 0) + 1
    return GgufFile(path, plan.arch, len(plan.tensors), plan.nbytes, types)


@one_read_per_file()
def export_gguf(
    model: str | Path,
    out: str | Path,
    *,
    expert_type: str = "tq2_0",
    shared_type: str | None = None,
    mmproj: str | Path | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
    revision: str | None = None,
    quantize: str | None = None,
) -> GgufExport:
    """Write checkpoint ``model`` as llama.cpp GGUF: the language model to ``out`` and, with
    ``mmproj``, the vision tower and projector to that path. ``expert_type`` (tq2_0, tq1_0) is the
    routed experts' type, ``shared_type`` the shared experts' (bf16, f16, f32, q8_0, q4_0; default:
    as stored). Everything else is written as stored (bit-exact), 1-D tensors as float32, unless
    ``quantize`` names a llama.cpp level (q4_0, q8_0, q4_k_m, ...: :data:`LEVELS`): then llama.cpp's
    own quantizer gives attention, embeddings, output and shared experts the types it gives a dense
    model at that level, the routed experts (and shared experts of a given ``shared_type``) kept.
    ``model`` is a directory, or a Hub repo id at ``revision``."""
    model = resolve_model(model, revision)
    plan = plan_gguf(
        model, expert_type=expert_type, shared_type=shared_type, mmproj=mmproj is not None, quantize=quantize
    )
    return write_export(plan, out, mmproj=mmproj, overwrite=overwrite, dry_run=dry_run, progress=progress)


def write_export(
    plan: GgufExportPlan,
    out: str | Path,
    *,
    mmproj: str | Path | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
) -> GgufExport:
    """Write a planned export (:func:`plan_gguf`, with ``mmproj`` asked for when it is given here)."""
    out = Path(out)
    if (mmproj is not None) != (plan.vision is not None):
        raise InternalError("the plan's mmproj does not match --mmproj")
    if mmproj is not None and Path(mmproj).resolve() == out.resolve():
        raise OptionsError(f"--mmproj {mmproj} names the same file as the output {out}")
    for path in (out, *((Path(mmproj),) if mmproj is not None else ())):  # both refused before either is written
        check_output_path(path, overwrite=overwrite, protect=(plan.root,), directory=False)
    files = [_summary(out, plan.text)] + ([_summary(Path(mmproj), plan.vision)] if plan.vision is not None else [])
    if not dry_run:
        reader = TensorReader(plan.index)
        convert = None
        if plan.quantize is not None:
            keep = _kept_types(plan.text, shared=plan.keep_shared)

            def convert(planned: Path, final: Path) -> None:
                quantize_file(planned, final, plan.quantize, keep)

        write_gguf(
            plan.text, reader, out, overwrite=overwrite, protect=(plan.root,), progress=progress, convert=convert
        )
        if plan.quantize is not None:
            files[0] = _written(out)
        if plan.vision is not None:
            write_gguf(plan.vision, reader, Path(mmproj), overwrite=overwrite, protect=(plan.root,), progress=progress)
    notes = list(plan.text.notes)
    if plan.quantize is not None:
        notes.append(
            f"{out.name}: attention, embeddings, output and shared experts quantized by llama.cpp at "
            f"{plan.quantize.upper()}{' (sizes above: before that)' if dry_run else ''}; the routed experts kept"
        )
    return GgufExport(tuple(files), tuple(notes))


def _kept_types(plan: GgufPlan, *, shared: bool) -> dict[str, int]:
    """The tensors llama.cpp's quantizer must leave in their type: the routed experts, and the shared
    experts when their type was chosen (``--shared-type``)."""
    kinds = ("_exps.", "_shexp.") if shared else ("_exps.",)
    return {t.name: int(t.type.ggml) for t in plan.tensors if any(k in t.name for k in kinds)}


def _written(path: Path) -> GgufFile:
    """A written GGUF file's summary, from its header (after llama.cpp's quantizer chose the types)."""
    import gguf

    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"]
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name.lower()] = types.get(t.tensor_type.name.lower(), 0) + 1
    return GgufFile(
        path, bytes(arch.parts[-1]).decode(), len(reader.tensors), sum(int(t.n_bytes) for t in reader.tensors), types
    )
