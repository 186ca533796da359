"""``mote-convert export gguf``: a checkpoint as llama.cpp GGUF files (docs/deploy.md).

Plan (every key and tensor, from safetensors headers), validate, then stream one tensor at a time
into a file beside the output, renamed into place when complete. The language model goes to one
GGUF (``deepseek`` architecture for a MoTE checkpoint, ``llama`` for a dense one), the vision tower
and projector to an ``mmproj`` GGUF when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mote_convert.checkpoint import one_read_per_file
from mote_convert.errors import InternalError, OptionsError
from mote_convert.export.gguf_file import GgufPlan, write_gguf
from mote_convert.export.tensors import EXPERT_TYPES, SHARED_TYPES, get_type
from mote_convert.io.index import CheckpointIndex, load_index
from mote_convert.io.reader import TensorReader
from mote_convert.io.shards import ProgressFn
from mote_convert.io.source import resolve_model
from mote_convert.io.staging import check_output_path

__all__ = ["EXPERT_TYPES", "SHARED_TYPES", "GgufExport", "GgufExportPlan", "export_gguf", "plan_gguf", "write_export"]


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

    @property
    def nbytes(self) -> int:
        return self.text.nbytes + (self.vision.nbytes if self.vision is not None else 0)


@one_read_per_file()
def plan_gguf(
    model: str | Path, *, expert_type: str = "tq2_0", shared_type: str | None = None, mmproj: bool = False
) -> GgufExportPlan:
    """The text GGUF's plan, and the mmproj's when asked, checked; from headers only."""
    from mote_convert.checkpoint import read_config
    from mote_convert.export.gguf_file import validate
    from mote_convert.export.gguf_mmproj import plan_mmproj
    from mote_convert.export.gguf_text import plan_text
    from mote_convert.io.jsonfile import check_side_files

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
    return GgufExportPlan(root, index, text, vision)


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
) -> GgufExport:
    """Write checkpoint ``model`` as llama.cpp GGUF: the language model to ``out`` and, with
    ``mmproj``, the vision tower and projector to that path. ``expert_type`` (tq2_0, tq1_0) is the
    routed experts' type, ``shared_type`` the shared experts' (bf16, f16, f32, q8_0, q4_0; default:
    as stored). Everything else is written as stored (bit-exact), 1-D tensors as float32. ``model``
    is a directory, or a Hub repo id at ``revision``."""
    model = resolve_model(model, revision)
    plan = plan_gguf(model, expert_type=expert_type, shared_type=shared_type, mmproj=mmproj is not None)
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
        write_gguf(plan.text, reader, out, overwrite=overwrite, protect=(plan.root,), progress=progress)
        if plan.vision is not None:
            write_gguf(plan.vision, reader, Path(mmproj), overwrite=overwrite, protect=(plan.root,), progress=progress)
    return GgufExport(tuple(files), tuple(plan.text.notes))
