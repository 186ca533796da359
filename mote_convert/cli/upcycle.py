"""``mote-convert upcycle``: a dense checkpoint in, a MoTE checkpoint out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from mote_convert.cli.app import (
    FLAG,
    Command,
    MaxShardSize,
    Overwrite,
    Revision,
    app,
    byte_progress,
    errors,
    given,
    out_console,
    print_table,
    skipped_warnings,
    upload_hint,
)
from mote_convert.cli.architectures import eager_listing
from mote_convert.cli.render import summary_table
from mote_convert.io.source import resolve_model


@app.command(cls=Command)
def upcycle(
    ctx: typer.Context,
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL", help="Dense checkpoint: a directory (config.json + safetensors) or a Hub repo id ORG/NAME."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="OUT", help="Output directory for the MoTE checkpoint.")
    ],
    num_experts: Annotated[int, typer.Option(help="Routed experts per MoE layer.")] = 4,
    top_k: Annotated[int, typer.Option(help="Experts per token.")] = 1,
    layers: Annotated[str, typer.Option(help="MoE layers: all, even, odd, or indices like 0,3,5.")] = "all",
    latent: Annotated[
        bool,
        typer.Option(
            "--latent/--packed", help="Write latent float experts (for training) instead of packed 2-bit ones.", **FLAG
        ),
    ] = False,
    recipe: Annotated[
        Optional[str],
        typer.Option(
            metavar="FILE", help="Recipe YAML (a path, or a name under configs/recipes); flags given override it."
        ),
    ] = None,
    max_shard_size: MaxShardSize = "5GB",
    seed: Annotated[int, typer.Option(help="Seed of the router initialisation.")] = 0,
    overwrite: Overwrite = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and validate, print the summary, write nothing.", **FLAG)
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", is_eager=True, callback=eager_listing, help="Print the summary as JSON.", **FLAG)
    ] = False,
    list_architectures: Annotated[
        bool,
        typer.Option(
            "--list-architectures",
            is_eager=True,
            callback=eager_listing,
            help="List the supported model families and exit.",
            **FLAG,
        ),
    ] = False,
    revision: Revision = None,
) -> None:
    """Up-cycle a dense checkpoint into a MoTE checkpoint (shared FFN + ternary routed experts)."""
    from mote_convert.card import card_writer
    from mote_convert.upcycle import plan_upcycle, resolve_options
    from mote_convert.write import write_plan

    with errors():
        named, model = model, resolve_model(model, revision)
        options = resolve_options(
            recipe,
            **given(
                ctx,
                num_experts=num_experts,
                top_k=top_k,
                layers=layers,
                latent=latent,
                seed=seed,
                max_shard_size=max_shard_size,
            ),
        )
        plan = plan_upcycle(model, options)
        if dry_run:
            result = write_plan(plan, output, overwrite=overwrite, dry_run=True, progress=None)
        else:
            with byte_progress("upcycling", plan.bytes_out) as advance:
                card = card_writer(named, model)
                result = write_plan(plan, output, overwrite=overwrite, dry_run=False, progress=advance, finish=card)
    skipped_warnings(result)
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    title = f"dry run: {output} would hold" if dry_run else f"wrote {output}"
    print_table(summary_table(title, result.summary.to_dict()))
    if not dry_run:
        upload_hint(output)
