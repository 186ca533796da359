"""``mote-convert inspect``: what a checkpoint holds, costs and whether it is sound."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mote_convert.cli.app import (
    FLAG,
    Command,
    Revision,
    app,
    byte_progress,
    err_console,
    errors,
    fail,
    fmt_bytes,
    out_console,
    print_table,
)
from mote_convert.cli.render import comparison_table, layer_table, memory_table, model_table, stats_table
from mote_convert.io.source import resolve_model


@app.command(cls=Command)
def inspect(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="Dense or MoTE checkpoint directory, or a Hub repo id ORG/NAME.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (keys: docs/inspect-json.md).", **FLAG)
    ] = False,
    stats: Annotated[
        bool,
        typer.Option("--stats", help="Read the routed experts and count their codes (-1 / 0 / +1, invalid).", **FLAG),
    ] = False,
    num_experts: Annotated[int, typer.Option(help="Dense input: routed experts per MoE layer to plan.")] = 4,
    top_k: Annotated[int, typer.Option(help="Dense input: experts per token to plan.")] = 1,
    layers: Annotated[str, typer.Option(help="Dense input: MoE layers to plan: all, even, odd, or 0,3,5.")] = "all",
    per_layer: Annotated[
        bool, typer.Option("--per-layer", help="Also show each decoder layer's FFN memory.", **FLAG)
    ] = False,
    gguf: Annotated[
        bool,
        typer.Option(
            "--gguf", help="Also show the language model's GGUF sizes (dense bf16 / Q4_0, MoTE TQ2_0 / TQ1_0).", **FLAG
        ),
    ] = False,
    revision: Revision = None,
) -> None:
    """What a checkpoint holds, what it costs in memory, and whether it is sound (non-zero exit if not).

    Reads headers only (plus the 4-byte expert scales), unless --stats.
    """
    from mote_convert.errors import CheckFailedError
    from mote_convert.inspection import inspect_checkpoint
    from mote_convert.options import UpcycleOptions

    with errors():
        path = resolve_model(path, revision)
        options = UpcycleOptions(num_experts=num_experts, top_k=top_k, layers=layers)
        if stats:
            with byte_progress("reading experts", 0) as advance:
                report = inspect_checkpoint(path, options, stats=True, progress=advance)
        else:
            report = inspect_checkpoint(path, options)
        sizes = None
        if gguf:
            from mote_convert.export.sizes import checkpoint_gguf_sizes

            sizes = checkpoint_gguf_sizes(report, path)
    if as_json:
        data = report.to_dict()
        if sizes is not None:
            data["gguf_sizes"] = sizes
        out_console.print_json(json.dumps(data))
    else:
        print_table(model_table(report))
        print_table(memory_table(report))
        if report.comparison is not None:
            print_table(comparison_table(report))
        if per_layer:
            memory = report.planned if report.planned is not None else report.memory
            print_table(
                layer_table(memory, "FFN memory per decoder layer" + (" (after upcycle)" if report.planned else ""))
            )
        if report.stats is not None:
            print_table(stats_table(report))
        if sizes is not None:
            table = Table(title="language model as GGUF (tensor data)")
            table.add_column("setting")
            table.add_column("size", justify="right")
            table.add_column("x dense bf16", justify="right")
            for name, nbytes in sizes.items():
                table.add_row(name, fmt_bytes(nbytes), f"{nbytes / sizes['dense bf16']:.2f}")
            print_table(table)
    if not report.ok:
        for problem in report.problems:
            err_console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
        fail(CheckFailedError(f"{len(report.problems)} problem(s) found in {path}"))
    elif not as_json:
        out_console.print("[green]ok:[/] no problems found", highlight=False)
