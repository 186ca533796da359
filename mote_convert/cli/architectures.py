"""``mote-convert architectures``: what the installed transformers supports, found from the code."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from mote_convert.cli.app import FLAG, Command, app, err_console, errors, out_console, print_table

if TYPE_CHECKING:
    from mote_convert.arch.survey import FamilyRow


def architectures_table(rows: tuple[FamilyRow, ...]) -> Table:
    """The supported families: FFN kind and the key style save_pretrained writes."""
    table = Table(title="supported families (found from the model itself)", title_justify="left")
    table.add_column("model_type", style="bold", no_wrap=True)
    table.add_column("FFN kind", no_wrap=True)
    table.add_column("FFN key of layer N", no_wrap=True)
    for row in rows:
        if row.status == "supported":
            table.add_row(row.model_type, row.ffn_kind + (" (hybrid)" if row.hybrid else ""), row.key_style)
    return table


def show_architectures(as_json: bool, markdown: bool = False) -> None:
    from mote_convert.arch.survey import REFUSED, UNCHECKED, markdown_table, survey

    with err_console.status("building every family's skeleton on the meta device..."):
        rows = survey()
    if as_json:
        out_console.print_json(json.dumps([r.to_dict() for r in rows]))
        return
    if markdown:
        out_console.out(markdown_table(rows), end="", highlight=False)
        return
    print_table(architectures_table(rows))
    for status in (REFUSED, UNCHECKED):
        reasons: dict[str, list[str]] = {}
        for row in rows:
            if row.status == status:
                reasons.setdefault(row.reason or "", []).append(row.model_type)
        for reason, types in sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            out_console.print(f"[bold]{status}[/] ({reason}): {', '.join(types)}", highlight=False)


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
    as_json: Annotated[bool, typer.Option("--json", help="Print every family as JSON.", **FLAG)] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the table of docs/architectures.md.", **FLAG)
    ] = False,
) -> None:
    """List every image-text-to-text and causal-LM family of the installed transformers: its FFN
    kind and checkpoint key style, or why it is refused."""
    with errors():
        show_architectures(as_json, markdown)
