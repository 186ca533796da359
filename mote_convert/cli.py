"""The ``mote-convert`` command line: parse, call the library, render with rich.

No conversion logic lives here. Library errors (:class:`~mote_convert.errors.MoteError`) become one
red line on stderr and the error kind's exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from mote_convert.errors import MoteError

app = typer.Typer(
    name="mote-convert",
    help="Turn a dense LLaVA-style checkpoint into a Mixture of Ternary Experts (MoTE) checkpoint.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out_console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    _state["debug"] = debug


def _fail(exc: MoteError) -> None:
    if _state["debug"]:
        raise exc
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except MoteError as exc:
        _fail(exc)


@contextmanager
def _byte_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over bytes, shown from the first advance (so a failed check shows none)."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    progress = Progress(*columns, console=err_console, transient=False)
    task = progress.add_task(description, total=total)

    def advance(n: int) -> None:
        if not progress.live.is_started:
            progress.start()
        progress.advance(task, n)

    try:
        yield advance
    finally:
        progress.stop()


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _summary_table(title: str, summary: dict) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("MoE layers", str(summary["moe_layers"]))
    table.add_row("routed experts per layer", str(summary["num_experts"]))
    table.add_row("expert format", summary["expert_format"])
    table.add_row("tensors in / out", f"{summary['tensors_in']} / {summary['tensors_out']}")
    table.add_row("bytes in", _fmt_bytes(summary["bytes_in"]))
    table.add_row("bytes out", _fmt_bytes(summary["bytes_out"]))
    table.add_row("routed expert bytes", _fmt_bytes(summary["expert_weight_bytes"]))
    table.add_row("routed expert bits per weight", f"{summary['expert_bits_per_weight']:.4f}")
    table.add_row("router bytes", _fmt_bytes(summary["router_bytes"]))
    table.add_row("shards", str(summary["shards"]))
    return table


@app.command()
def upcycle(
    model: Annotated[Path, typer.Argument(help="Dense checkpoint directory (config.json + safetensors).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory for the MoTE checkpoint.")],
    num_experts: Annotated[Optional[int], typer.Option(help="Routed experts per MoE layer [default: 4].")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Experts per token [default: 1].")] = None,
    layers: Annotated[Optional[str], typer.Option(help="all, even, odd, or indices like 0,3,5 [default: all].")] = None,
    latent: Annotated[Optional[bool], typer.Option("--latent/--packed", help="Write latent float experts (for training) instead of packed 2-bit ones.", show_default=False)] = None,
    recipe: Annotated[Optional[str], typer.Option(help="Recipe YAML (a path, or a name under configs/recipes); flags override it.")] = None,
    max_shard_size: Annotated[Optional[str], typer.Option(help="Largest shard, e.g. 5GB, 500MB [default: 5GB].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the router initialisation [default: 0].")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Plan and validate, print the summary, write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Up-cycle a dense checkpoint into a MoTE checkpoint (shared FFN + ternary routed experts)."""
    from mote_convert.upcycle import plan_upcycle, resolve_options, write_plan

    with _errors():
        options = resolve_options(
            recipe, num_experts=num_experts, top_k=top_k, layers=layers, latent=latent, seed=seed, max_shard_size=max_shard_size
        )
        plan = plan_upcycle(model, options)
        if dry_run:
            result = write_plan(plan, output, overwrite=overwrite, dry_run=True, progress=None)
        else:
            with _byte_progress("upcycling", plan.bytes_out) as advance:
                result = write_plan(plan, output, overwrite=overwrite, dry_run=False, progress=advance)
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    title = f"dry run: {output} would hold" if dry_run else f"wrote {output}"
    out_console.print(_summary_table(title, result.summary.to_dict()))


@app.command()
def pack(
    source: Annotated[Path, typer.Argument(metavar="IN", help="Latent MoTE checkpoint directory (e.g. after training).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory for the packed checkpoint.")],
    max_shard_size: Annotated[str, typer.Option(help="Largest shard, e.g. 5GB, 500MB.")] = "5GB",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Pack a latent MoTE checkpoint's routed experts to 2 bits per weight; everything else is copied."""
    from mote_convert.pack import build_pack_plan
    from mote_convert.upcycle import write_plan

    with _errors():
        plan = build_pack_plan(source, max_shard_size)
        with _byte_progress("packing", plan.bytes_out) as advance:
            result = write_plan(plan, output, overwrite=overwrite, dry_run=False, progress=advance)
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    out_console.print(_summary_table(f"wrote {output}", result.summary.to_dict()))


@app.command()
def demo(
    keep: Annotated[Optional[Path], typer.Option(help="Keep the tiny model and its MoTE output in this directory.")] = None,
) -> None:
    """Build a tiny LLaVA on the spot, up-cycle it and show what was made (seconds, CPU only)."""
    from mote_convert.tiny import build_tiny_llava
    from mote_convert.upcycle import plan_upcycle, write_plan

    with _errors(), tempfile.TemporaryDirectory(prefix="mote-demo-") as tmp:
        root = Path(keep) if keep is not None else Path(tmp)
        dense = root / "tiny-llava"
        out = root / "tiny-llava-mote"
        if keep is not None and (dense.exists() or out.exists()):
            raise MoteError(f"{root} already holds a demo; choose an empty --keep directory")
        with err_console.status("building a tiny LLaVA (Llama text, CLIP vision)..."):
            build_tiny_llava(dense)
        plan = plan_upcycle(dense)
        with _byte_progress("upcycling", plan.bytes_out) as advance:
            result = write_plan(plan, out, overwrite=False, dry_run=False, progress=advance)
        out_console.print(_summary_table(f"demo: {dense.name} -> {out.name}", result.summary.to_dict()))
        out_console.print(f"layer prefixes: {', '.join(result.plan.mote['layer_prefixes'].values())}")
        if keep is not None:
            out_console.print(f"kept in {root}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
