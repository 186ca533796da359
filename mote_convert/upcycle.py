"""``upcycle``: a dense checkpoint in, a MoTE checkpoint out (docs/method.md, docs/format.md, docs/usage.md)."""

from __future__ import annotations

from pathlib import Path

from mote_convert.card import card_writer
from mote_convert.checkpoint import dense_architecture, one_read_per_file, read_config
from mote_convert.io.index import load_index
from mote_convert.io.shards import ProgressFn
from mote_convert.io.source import resolve_model
from mote_convert.options import LayerSelection, UpcycleOptions, load_recipe
from mote_convert.plan import ConversionPlan
from mote_convert.upcycle_plan import build_upcycle_plan
from mote_convert.write import ConversionResult, write_plan


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


@one_read_per_file()
def plan_upcycle(
    model_path: str | Path, options: UpcycleOptions | None = None, *, revision: str | None = None
) -> ConversionPlan:
    """Build and validate the upcycle plan of a dense checkpoint (a directory or a Hub repo id),
    reading headers only."""
    model_path = resolve_model(model_path, revision)
    config = read_config(model_path)
    dense_architecture(config, model_path)
    index = load_index(model_path)
    return build_upcycle_plan(index, config, options or UpcycleOptions())


@one_read_per_file()
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
    revision: str | None = None,
) -> ConversionResult:
    """Up-cycle the dense checkpoint at ``model_path`` (a directory, or a Hub repo id at
    ``revision``) into a MoTE checkpoint at ``out_path``.

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
    out = Path(out_path)
    plan = plan_upcycle(model_path, options, revision=revision)
    card = card_writer(model_path, plan.source.root)
    return write_plan(plan, out, overwrite=overwrite, dry_run=dry_run, progress=progress, finish=card)


__all__ = ["ConversionResult", "plan_upcycle", "resolve_options", "upcycle", "write_plan"]
