"""The last stage of every conversion: a validated plan executed into an output written beside its
final place (shards, the patched config.json, the source's auxiliary files) and renamed when
complete; or, for a dry run, only described. The tensor work (and torch) is imported only to write.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mote_convert.config_patch import SkippedFile, copy_auxiliary_files, file_mode, write_config
from mote_convert.io.shards import ProgressFn
from mote_convert.io.staging import StagedOutput, check_output_path
from mote_convert.plan import ConversionPlan, PlanSummary

logger = logging.getLogger("mote_convert")


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion wrote (or, for a dry run, would write)."""

    output: Path
    plan: ConversionPlan
    summary: PlanSummary
    files: tuple[str, ...]
    dry_run: bool
    skipped: tuple[SkippedFile, ...] = ()  # source entries not copied (symlinks leading outside, ...)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "output": str(self.output),
            "dry_run": self.dry_run,
            "files": list(self.files),
            "skipped_files": [{"file": s.rel, "reason": s.reason} for s in self.skipped],
            **self.summary.to_dict(),
        }


def write_plan(
    plan: ConversionPlan,
    out: Path,
    *,
    overwrite: bool,
    dry_run: bool,
    progress: ProgressFn | None,
    finish: Callable[[Path], None] | None = None,
) -> ConversionResult:
    """Execute a validated plan into ``out`` (written beside it, then renamed), or only describe it.
    ``finish`` is called with the staged directory, complete, before the rename (the model card)."""
    src = plan.source.root
    files = tuple(s.file for s in plan.shards)
    if dry_run:
        check_output_path(out, overwrite=overwrite, protect=(src,))
        return ConversionResult(out, plan, plan.summary(), files, True)
    from mote_convert.execute import execute  # the tensor work (and torch) only when writing

    # Output permission bits are never wider than the source's: the directory's, the weight files'
    # (all of them: a single 0600 shard makes every output shard 0600), config.json's.
    weights_mode = 0o666
    for path in plan.source.weight_files():
        weights_mode &= file_mode(path)
    dir_mode = stat.S_IMODE(src.stat().st_mode) | stat.S_IRWXU  # the owner must be able to fill it
    with StagedOutput(out, overwrite=overwrite, protect=(src,), mode=dir_mode) as staging:
        execute(plan, staging, progress, mode=weights_mode)
        write_config(plan.config, plan.mote, staging, mode=file_mode(src / "config.json"))
        _, skipped = copy_auxiliary_files(src, staging)
        if finish is not None:
            finish(staging)
    for entry in skipped:
        logger.warning("not copied: %s", entry)
    return ConversionResult(out, plan, plan.summary(), files, False, tuple(skipped))
