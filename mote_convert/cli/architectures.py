"""``mote-convert architectures``: the supported model families."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from mote_convert.cli.app import FLAG, Command, app, errors, out_console


def architectures_table() -> Table:
    from mote_convert.arch import list_architectures

    table = Table(title="supported architectures", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("model_type", no_wrap=True)
    table.add_column("FFN kind", no_wrap=True)
    table.add_column("FFN key of layer N", overflow="fold")
    for arch in list_architectures():
        table.add_row(
            arch.name, ", ".join(arch.model_types), arch.ffn_kind.name, arch.ffn_prefixes[0].replace("{layer}", "N")
        )
    return table


def show_architectures(as_json: bool) -> None:
    from mote_convert.arch import list_architectures, unsupported_model_types

    if as_json:
        out_console.print_json(json.dumps([a.to_dict() for a in list_architectures()]))
        return
    out_console.print(architectures_table())
    refused = unsupported_model_types()
    for reason in sorted(set(refused.values())):
        types = ", ".join(sorted(t for t, r in refused.items() if r == reason))
        out_console.print(f"[bold]refused[/] ({reason}): {types}", highlight=False)


def eager_listing(ctx: Any, param: Any, value: Any) -> Any:
    """``upcycle --list-architectures [--json]``: both flags are eager; whichever click processes
    last sees both values and prints the listing before MODEL and -o are asked for."""
    ctx.meta[f"mote.{param.name}"] = value
    listing, as_json = ctx.meta.get("mote.list_architectures"), ctx.meta.get("mote.as_json")
    if listing and as_json is not None:
        with errors():
            show_architectures(bool(as_json))
        raise typer.Exit(0)
    return value


@app.command(cls=Command)
def architectures(
    as_json: Annotated[bool, typer.Option("--json", help="Print the definitions as JSON.", **FLAG)] = False,
) -> None:
    """List the supported model families, their FFN kinds and checkpoint key styles."""
    with errors():
        show_architectures(as_json)
