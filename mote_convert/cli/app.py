"""The command line's frame: the typer app, usage errors as one line, library errors as one line and
their exit code, progress bars, number formats and the option aliases every command shares.

No conversion logic lives in ``cli/``: each command module parses, calls the library and renders
with rich. Library errors (:class:`~mote_convert.errors.MoteError`) become one red line on stderr and
the error kind's exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from typer.core import TyperCommand, TyperGroup

from mote_convert.errors import InternalError, Interrupted, MoteError, UnattributedOSError, describe_os_error
from mote_convert.version import __version__


class _HelpFlag:
    """``--help`` takes no value: no ``<bool>`` beside it."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class Command(_HelpFlag, TyperCommand):
    """Usage lines as users know them: ``mote-convert upcycle [OPTIONS] MODEL``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", "") == "argument":
                name = (param.metavar or param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces


# click's base of usage errors, wherever this typer takes click from (newer typers vendor it)
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class Group(_HelpFlag, TyperGroup):
    """The top-level command group. A command line that does not parse (an unknown option, a value
    of the wrong kind, a missing argument) is one ``error:`` line and exit 2, like every other
    failure, not click's usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _CLICK_EXCEPTION as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            err_console.print(
                f"[bold red]error:[/] {exc.format_message()}{hint}", highlight=False, soft_wrap=True, markup=True
            )
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def given(ctx: Any, **values: Any) -> dict[str, Any]:
    """The values of the options the user gave on the command line (the rest keep the recipe's)."""
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k).name in ("COMMANDLINE", "ENVIRONMENT")}


app = typer.Typer(
    name="mote-convert",
    help="Turn a dense LLaVA-style checkpoint into a Mixture of Ternary Experts (MoTE) checkpoint.",
    no_args_is_help=True,
    add_completion=False,
    cls=Group,
    pretty_exceptions_enable=False,
)
out_console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}
# Flags take no value: no "<bool>" in the help's type column.
FLAG = {"metavar": ""}


def _print_version(value: bool) -> None:
    if value:
        out_console.print(f"mote-convert {__version__}", highlight=False)
        raise typer.Exit(0)


def _drop_deepspeed_probe_warning() -> None:
    """Where DeepSpeed is installed, building any transformers model imports it, and its import
    prints "Setting accelerator to CPU. If you have GPU ..." on stdout (into ``--json`` output,
    too). Only ``train`` uses DeepSpeed; the other commands drop that one line. DeepSpeed's logger
    is ``logging.getLogger("DeepSpeed")``: a filter set on it now stays when DeepSpeed configures it."""
    import logging

    logger = logging.getLogger("DeepSpeed")
    if _no_accelerator_probe not in logger.filters:
        logger.addFilter(_no_accelerator_probe)


def _no_accelerator_probe(record: Any) -> bool:
    return "Setting accelerator to CPU" not in record.getMessage()


@app.callback()
def _main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.", **FLAG)] = False,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.", **FLAG),
    ] = False,
) -> None:
    _state["debug"] = debug
    if debug:  # third-party libraries' log messages (gguf's, transformers') are shown with --debug only
        import logging

        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if ctx.invoked_subcommand != "train":
        _drop_deepspeed_probe_warning()


def fail(exc: MoteError) -> None:
    if _state["debug"]:
        raise exc
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(exc.exit_code)


@contextmanager
def errors() -> Iterator[None]:
    """Every failure the user can cause or meet becomes one line and a documented exit code. The
    command inside reads each config.json once (its steps share the read)."""
    from mote_convert.checkpoint import one_read_per_file

    try:
        with one_read_per_file():
            yield
    except MoteError as exc:
        fail(exc)
    except InternalError as exc:  # a bug: the traceback, and a request to report it
        import traceback

        traceback.print_exc(file=sys.stderr)
        err_console.print(
            f"[bold red]internal error:[/] {exc}. This is a bug in mote-convert {__version__}: please "
            "report it with the traceback above.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(InternalError.exit_code) from None
    except OSError as exc:
        if _state["debug"]:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        fail(UnattributedOSError(f"{where}{describe_os_error(exc)}"))
    except KeyboardInterrupt:
        fail(Interrupted(2))


@contextmanager
def byte_progress(description: str, total: int) -> Iterator[Callable[..., None]]:
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

    def advance(n: int, total: int | None = None) -> None:
        if not progress.live.is_started:
            progress.start()
        if total is not None:
            progress.update(task, total=total)
        progress.advance(task, n)

    try:
        yield advance
    finally:
        progress.stop()


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def fmt_count(n: int) -> str:
    """A parameter count that fits a narrow column: exact below a million, else 4 significant
    digits with K / M / B (the exact figure is in --json)."""
    if abs(n) < 10**6:
        return f"{n:,}"
    for unit, scale in (("B", 10**9), ("M", 10**6)):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {unit}"
    return str(n)  # pragma: no cover


def print_table(table: Any) -> None:
    """A table on stdout. One whose columns all keep their cells whole (``no_wrap``: file names, keys,
    tensor names, figures) is printed at its natural width, wider than the terminal (or a pipe's 80
    columns) if it must be, rather than cut; others wrap their prose cells to the terminal."""
    from rich.measure import Measurement

    width = out_console.width
    if table.columns and all(column.no_wrap for column in table.columns):
        natural = Measurement.get(out_console, out_console.options.update_width(10**4), table).maximum
        out_console.width = max(width, natural)  # print() itself never goes beyond the console's width
    try:
        out_console.print(table)
    finally:
        out_console.width = width


def note(message: str) -> None:
    err_console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)


def upload_hint(output: Any, repo: str | None = None) -> None:
    """How to publish an output (a directory, whose README.md is the model card, or a file) on the Hub."""
    repo = repo or Path(str(output)).name
    err_console.print(f"[dim]upload it: hf upload YOUR-NAME/{repo} {output}[/]", highlight=False, soft_wrap=True)


def skipped_warnings(result: Any) -> None:
    for entry in result.skipped:
        err_console.print(f"[yellow]warning:[/] not copied: {entry}", highlight=False, soft_wrap=True)


# Shared option definitions (one place for each flag's help and default text).
MaxShardSize = Annotated[str, typer.Option(help="Largest shard, e.g. 5GB, 500MB.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output directory.", **FLAG)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.", **FLAG)]
Revision = Annotated[
    str | None,
    typer.Option(
        help="Branch, tag or commit of a Hub repo id (MODEL as ORG/NAME, resolved through the Hugging Face cache)."
    ),
]
