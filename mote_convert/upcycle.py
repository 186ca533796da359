"""``upcycle``: a dense checkpoint in, a MoTE checkpoint out (docs/method.md, docs/format.md, docs/usage.md)."""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote_convert.checkpoint import dense_architecture, read_config
from mote_convert.config_patch import SkippedFile, copy_auxiliary_files, file_mode, write_config
from mote_convert.io.index import load_index
from mote_convert.io.shards import ProgressFn
from mote_convert.io.staging import StagedOutput, check_output_path
from mote_convert.options import LayerSelection, UpcycleOptions, load_recipe
from mote_convert.plan import ConversionPlan, PlanSummary
from mote_convert.upcycle_plan import build_upcycle_plan


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


logger = logging.getLogger("mote_convert")


def resolve_options(
    recipe: str | Path | None = None,
    *,
    num_experts: int | None = None,
    top_k: int | None = None,
    layers: str | LayerSelection | None = None,
    latent: bool | None = None,
    seed: int | None = None,
    max_shard_size: int | str | None = None,
    router_aux_loss_coef: float | None = None,
    norm_topk_prob: bool | None = None,
) -> UpcycleOptions:
    """Options from a recipe (or the defaults) with every non-None argument overriding it."""
    base = load_recipe(recipe) if recipe is not None else UpcycleOptions()
    return base.with_overrides(
        num_experts=num_experts,
        top_k=top_k,
        layers=layers,
        latent=latent,
        seed=seed,
        max_shard_size=max_shard_size,
        router_aux_loss_coef=router_aux_loss_coef,
        norm_topk_prob=norm_topk_prob,
    )


def plan_upcycle(model_path: str | Path, options: UpcycleOptions | None = None) -> ConversionPlan:
    """Build and validate the upcycle plan of a dense checkpoint, reading headers only."""
    model_path = Path(model_path)
    config = read_config(model_path)
    dense_architecture(config, model_path)
    index = load_index(model_path)
    return build_upcycle_plan(index, config, options or UpcycleOptions())


def upcycle(
    model_path: str | Path,
    out_path: str | Path,
    num_experts: int | None = None,
    top_k: int | None = None,
    layers: str | LayerSelection | None = None,
    latent: bool | None = None,
    *,
    seed: int | None = None,
    max_shard_size: int | str | None = None,
    recipe: str | Path | None = None,
    router_aux_loss_coef: float | None = None,
    norm_topk_prob: bool | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
) -> ConversionResult:
    """Up-cycle the dense checkpoint at ``model_path`` into a MoTE checkpoint at ``out_path``.

    Arguments left as None take the recipe's value, else the default (4 experts, top-1, all
    layers, packed, seed 0, 5GB shards). ``progress`` is called with the bytes of each tensor written.
    With ``dry_run`` nothing is written and the result describes the plan.
    """
    options = resolve_options(
        recipe,
        num_experts=num_experts,
        top_k=top_k,
        layers=layers,
        latent=latent,
        seed=seed,
        max_shard_size=max_shard_size,
        router_aux_loss_coef=router_aux_loss_coef,
        norm_topk_prob=norm_topk_prob,
    )
    model_path = Path(model_path)
    out = Path(out_path)
    plan = plan_upcycle(model_path, options)
    return write_plan(plan, out, overwrite=overwrite, dry_run=dry_run, progress=progress)


def write_plan(
    plan: ConversionPlan,
    out: Path,
    *,
    overwrite: bool,
    dry_run: bool,
    progress: ProgressFn | None,
) -> ConversionResult:
    """Execute a validated plan into ``out`` (written beside it, then renamed), or only describe it."""
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
    for entry in skipped:
        logger.warning("not copied: %s", entry)
    return ConversionResult(out, plan, plan.summary(), files, False, tuple(skipped))
