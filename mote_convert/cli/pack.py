"""``mote-convert pack``: a latent MoTE checkpoint in, the packed one out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mote_convert.cli.app import (
    AsJson,
    Command,
    MaxShardSize,
    Overwrite,
    Revision,
    app,
    byte_progress,
    errors,
    out_console,
    print_table,
    skipped_warnings,
    upload_hint,
)
from mote_convert.cli.render import summary_table
from mote_convert.io.source import resolve_model


@app.command(cls=Command)
def pack(
    source: Annotated[
        Path,
        typer.Argument(metavar="IN", help="Latent MoTE checkpoint directory (e.g. after training), or a Hub repo id."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="OUT", help="Output directory for the packed checkpoint.")
    ],
    max_shard_size: MaxShardSize = "5GB",
    overwrite: Overwrite = False,
    as_json: AsJson = False,
    revision: Revision = None,
) -> None:
    """Pack a latent MoTE checkpoint's routed experts to 2 bits per weight; everything else is copied."""
    from mote_convert.card import card_writer
    from mote_convert.pack import build_pack_plan
    from mote_convert.write import write_plan

    with errors():
        named, source = source, resolve_model(source, revision)
        plan = build_pack_plan(source, max_shard_size)
        with byte_progress("packing", plan.bytes_out) as advance:
            result = write_plan(
                plan, output, overwrite=overwrite, dry_run=False, progress=advance, finish=card_writer(named, source)
            )
    skipped_warnings(result)
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    print_table(summary_table(f"wrote {output}", result.summary.to_dict()))
    upload_hint(output)
