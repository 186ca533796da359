"""The ``mote-convert`` command line: parse, call the library, render with rich.

No conversion logic lives here. Library errors (:class:`~mote_convert.errors.MoteError`) become one
red line on stderr and the error kind's exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from mote_convert.errors import InternalError, Interrupted, MoteError, UnattributedOSError, describe_os_error
from mote_convert.version import __version__

if TYPE_CHECKING:
    from mote_convert.inspection import InspectionReport
    from mote_convert.memory import ComponentMemory, MemoryTable

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
            err_console.print(f"[bold red]error:[/] {exc.format_message()}{hint}", highlight=False, soft_wrap=True, markup=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def _given(ctx: Any, **values: Any) -> dict[str, Any]:
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
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.", **FLAG)
    ] = False,
) -> None:
    _state["debug"] = debug
    if debug:  # third-party libraries' log messages (gguf's, transformers') are shown with --debug only
        import logging

        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if ctx.invoked_subcommand != "train":
        _drop_deepspeed_probe_warning()


def _fail(exc: MoteError) -> None:
    if _state["debug"]:
        raise exc
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(exc.exit_code)


@contextmanager
def _errors() -> Iterator[None]:
    """Every failure the user can cause or meet becomes one line and a documented exit code."""
    try:
        yield
    except MoteError as exc:
        _fail(exc)
    except InternalError as exc:  # a bug: the traceback, and a request to report it
        import traceback

        traceback.print_exc(file=sys.stderr)
        err_console.print(f"[bold red]internal error:[/] {exc}. This is a bug in mote-convert {__version__}: please "
                          "report it with the traceback above.", highlight=False, soft_wrap=True)
        raise typer.Exit(InternalError.exit_code) from None
    except OSError as exc:
        if _state["debug"]:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(UnattributedOSError(f"{where}{describe_os_error(exc)}"))
    except KeyboardInterrupt:
        _fail(Interrupted(2))


@contextmanager
def _byte_progress(description: str, total: int) -> Iterator[Callable[..., None]]:
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


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _fmt_count(n: int) -> str:
    """A parameter count that fits a narrow column: exact below a million, else 4 significant
    digits with K / M / B (the exact figure is in --json)."""
    if abs(n) < 10**6:
        return f"{n:,}"
    for unit, scale in (("B", 10**9), ("M", 10**6)):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {unit}"
    return str(n)  # pragma: no cover


def _summary_table(title: str, summary: dict) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right", overflow="fold")
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


def _architectures_table() -> Table:
    from mote_convert.arch import list_architectures

    table = Table(title="supported architectures", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("model_type", no_wrap=True)
    table.add_column("FFN kind", no_wrap=True)
    table.add_column("FFN key of layer N", overflow="fold")
    for arch in list_architectures():
        table.add_row(arch.name, ", ".join(arch.model_types), arch.ffn_kind.name, arch.ffn_prefixes[0].replace("{layer}", "N"))
    return table


def _show_architectures(as_json: bool) -> None:
    from mote_convert.arch import list_architectures, unsupported_model_types

    if as_json:
        out_console.print_json(json.dumps([a.to_dict() for a in list_architectures()]))
        return
    out_console.print(_architectures_table())
    refused = unsupported_model_types()
    for reason in sorted(set(refused.values())):
        types = ", ".join(sorted(t for t, r in refused.items() if r == reason))
        out_console.print(f"[bold]refused[/] ({reason}): {types}", highlight=False)


def _eager_listing(ctx: Any, param: Any, value: Any) -> Any:
    """``upcycle --list-architectures [--json]``: both flags are eager; whichever click processes
    last sees both values and prints the listing before MODEL and -o are asked for."""
    ctx.meta[f"mote.{param.name}"] = value
    listing, as_json = ctx.meta.get("mote.list_architectures"), ctx.meta.get("mote.as_json")
    if listing and as_json is not None:
        with _errors():
            _show_architectures(bool(as_json))
        raise typer.Exit(0)
    return value


@app.command(cls=Command)
def architectures(
    as_json: Annotated[bool, typer.Option("--json", help="Print the definitions as JSON.", **FLAG)] = False,
) -> None:
    """List the supported model families, their FFN kinds and checkpoint key styles."""
    with _errors():
        _show_architectures(as_json)


def _note(message: str) -> None:
    err_console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)


def _skipped_warnings(result: Any) -> None:
    for entry in result.skipped:
        err_console.print(f"[yellow]warning:[/] not copied: {entry}", highlight=False, soft_wrap=True)


# Shared option definitions (one place for each flag's help and default text).
MaxShardSize = Annotated[str, typer.Option(help="Largest shard, e.g. 5GB, 500MB.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output directory.", **FLAG)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.", **FLAG)]


@app.command(cls=Command)
def upcycle(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Dense checkpoint directory (config.json + safetensors).")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT", help="Output directory for the MoTE checkpoint.")],
    num_experts: Annotated[int, typer.Option(help="Routed experts per MoE layer.")] = 4,
    top_k: Annotated[int, typer.Option(help="Experts per token.")] = 1,
    layers: Annotated[str, typer.Option(help="MoE layers: all, even, odd, or indices like 0,3,5.")] = "all",
    latent: Annotated[bool, typer.Option("--latent/--packed", help="Write latent float experts (for training) instead of packed 2-bit ones.", **FLAG)] = False,
    recipe: Annotated[Optional[str], typer.Option(metavar="FILE", help="Recipe YAML (a path, or a name under configs/recipes); flags given override it.")] = None,
    max_shard_size: MaxShardSize = "5GB",
    seed: Annotated[int, typer.Option(help="Seed of the router initialisation.")] = 0,
    overwrite: Overwrite = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and validate, print the summary, write nothing.", **FLAG)] = False,
    as_json: Annotated[bool, typer.Option("--json", is_eager=True, callback=_eager_listing, help="Print the summary as JSON.", **FLAG)] = False,
    list_architectures: Annotated[
        bool,
        typer.Option("--list-architectures", is_eager=True, callback=_eager_listing, help="List the supported model families and exit.", **FLAG),
    ] = False,
) -> None:
    """Up-cycle a dense checkpoint into a MoTE checkpoint (shared FFN + ternary routed experts)."""
    from mote_convert.upcycle import plan_upcycle, resolve_options, write_plan

    with _errors():
        options = resolve_options(
            recipe,
            **_given(ctx, num_experts=num_experts, top_k=top_k, layers=layers, latent=latent, seed=seed, max_shard_size=max_shard_size),
        )
        plan = plan_upcycle(model, options)
        if dry_run:
            result = write_plan(plan, output, overwrite=overwrite, dry_run=True, progress=None)
        else:
            with _byte_progress("upcycling", plan.bytes_out) as advance:
                result = write_plan(plan, output, overwrite=overwrite, dry_run=False, progress=advance)
    _skipped_warnings(result)
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    title = f"dry run: {output} would hold" if dry_run else f"wrote {output}"
    out_console.print(_summary_table(title, result.summary.to_dict()))


@app.command(cls=Command)
def pack(
    source: Annotated[Path, typer.Argument(metavar="IN", help="Latent MoTE checkpoint directory (e.g. after training).")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT", help="Output directory for the packed checkpoint.")],
    max_shard_size: MaxShardSize = "5GB",
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Pack a latent MoTE checkpoint's routed experts to 2 bits per weight; everything else is copied."""
    from mote_convert.pack import build_pack_plan
    from mote_convert.upcycle import write_plan

    with _errors():
        plan = build_pack_plan(source, max_shard_size)
        with _byte_progress("packing", plan.bytes_out) as advance:
            result = write_plan(plan, output, overwrite=overwrite, dry_run=False, progress=advance)
    _skipped_warnings(result)
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    out_console.print(_summary_table(f"wrote {output}", result.summary.to_dict()))


def _model_table(report: InspectionReport) -> Table:
    model, mote = report.model, report.mote
    table = Table(title=f"{report.path} ({report.kind})", show_header=False, title_justify="left")
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("model type", f"{model.model_type} (architecture {model.architecture})")
    table.add_row("text model", f"{model.text_model_type or '-'}: {model.num_layers} layers, hidden {model.hidden_size}, intermediate {model.intermediate_size}")
    if model.vision_model_type is not None:
        table.add_row("vision tower", f"{model.vision_model_type}: {model.vision_num_layers} layers, hidden {model.vision_hidden_size}")
    table.add_row("dtype", model.dtype or "-")
    if mote is not None:
        label = "upcycle would make" if report.kind == "dense" else "MoE"
        layers = ", ".join(map(str, mote.moe_layers))
        table.add_row(label, f"{mote.num_experts} experts, top-{mote.top_k}, {mote.expert_format}; layers {layers}")
    readable = sum(f.readable for f in report.files)
    table.add_row("files", f"{len(report.files)} safetensors ({readable} readable), {_fmt_bytes(sum(f.bytes for f in report.files))}")
    return table


def _memory_table(report: InspectionReport) -> Table:
    table = Table(title="memory by component", title_justify="left")
    # Component names may wrap; numbers never do, and never get cut (params are compact, see _fmt_count).
    table.add_column("component", style="bold", overflow="fold", min_width=8)
    planned = report.planned
    if planned is None:
        heads = ("params", "bytes", "bits/w")
    else:  # dense input: the source beside what upcycle would write
        heads = ("params", "bytes", "params after", "bytes after", "bits/w")
    for head in heads:
        table.add_column(head, justify="right", no_wrap=True)

    def cells(rows: list[ComponentMemory]) -> list[str]:
        out = [cell for r in rows for cell in ([_fmt_count(r.params), _fmt_bytes(r.bytes)] if r.tensors else ["", ""])]
        last = rows[-1]  # bits per weight of what is (or would be) written
        return out + [f"{last.bits_per_weight:.3f}" if last.tensors else ""]

    tables = [report.memory] + ([planned] if planned is not None else [])
    for c in report.memory.components:
        rows = [t[c.name] for t in tables]
        if any(r.tensors for r in rows):
            table.add_row(c.name.replace("_", " "), *cells(rows))
    table.add_section()
    table.add_row("total", *cells([t.total for t in tables]), style="bold")
    return table


def _comparison_table(report: InspectionReport) -> Table:
    cmp = report.comparison
    table = Table(title=f"MoE layers' FFN memory with N = {cmp.num_experts} experts", title_justify="left")
    table.add_column("variant", style="bold", no_wrap=True)
    table.add_column("expert memory", justify="right")
    table.add_column("total", justify="right")
    table.add_column("× MoTE", justify="right")
    rows = (
        ("dense", cmp.dense),
        (f"MoE-LLaVA: {cmp.num_experts} × full precision", cmp.moe_llava),
        (f"MoTE: shared + {cmp.num_experts} × ternary", cmp.mote),
    )
    for label, v in rows:
        ratio = v.expert_bytes / cmp.mote.expert_bytes if cmp.mote.expert_bytes else 0.0
        table.add_row(label, _fmt_bytes(v.expert_bytes), _fmt_bytes(v.total_bytes), f"{ratio:.2f}")
    return table


def _layer_table(memory: MemoryTable, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in (("layer", "right"), ("MoE", "center"), ("FFN / shared", "right"), ("routed experts", "right"), ("router", "right")):
        table.add_column(name, justify=justify)
    table.add_column("", no_wrap=True, overflow="crop")
    largest = max((row.total_bytes for row in memory.layers), default=0) or 1
    width = 16
    for row in memory.layers:
        ffn = round(width * row.ffn_bytes / largest)
        routed = round(width * (row.routed_expert_bytes + row.router_bytes) / largest)
        bar = f"[blue]{'█' * ffn}[/][magenta]{'█' * routed}[/]"
        table.add_row(
            str(row.layer), "yes" if row.moe else "", _fmt_bytes(row.ffn_bytes),
            _fmt_bytes(row.routed_expert_bytes) if row.moe else "", _fmt_bytes(row.router_bytes) if row.moe else "", bar,
        )
    return table


def _stats_table(report: InspectionReport) -> Table:
    table = Table(title="routed expert codes", title_justify="left")
    for name in ("layer", "expert", "projection", "-1", "0", "+1", "invalid", "gamma"):
        table.add_column(name, justify="left" if name == "projection" else "right")
    for s in report.stats or ():
        invalid = f"[bold red]{s.invalid}[/]" if s.invalid else "0"
        gamma = "-" if s.gamma is None else f"{s.gamma:.4g}"
        table.add_row(
            str(s.layer), str(s.expert), s.projection, f"{s.share(s.minus):.1%}", f"{s.share(s.zero):.1%}",
            f"{s.share(s.plus):.1%}", invalid, gamma,
        )
    return table


@app.command(cls=Command)
def inspect(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Dense or MoTE checkpoint directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (keys: docs/inspect-json.md).", **FLAG)] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Read the routed experts and count their codes (-1 / 0 / +1, invalid).", **FLAG)] = False,
    num_experts: Annotated[int, typer.Option(help="Dense input: routed experts per MoE layer to plan.")] = 4,
    top_k: Annotated[int, typer.Option(help="Dense input: experts per token to plan.")] = 1,
    layers: Annotated[str, typer.Option(help="Dense input: MoE layers to plan: all, even, odd, or 0,3,5.")] = "all",
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Also show each decoder layer's FFN memory.", **FLAG)] = False,
    gguf: Annotated[bool, typer.Option("--gguf", help="Also show the language model's GGUF sizes (dense bf16 / Q4_0, MoTE TQ2_0 / TQ1_0).", **FLAG)] = False,
) -> None:
    """What a checkpoint holds, what it costs in memory, and whether it is sound (non-zero exit if not).

    Reads headers only (plus the 4-byte expert scales), unless --stats.
    """
    from mote_convert.errors import CheckFailedError
    from mote_convert.inspection import inspect_checkpoint
    from mote_convert.options import UpcycleOptions

    with _errors():
        options = UpcycleOptions(num_experts=num_experts, top_k=top_k, layers=layers)
        if stats:
            with _byte_progress("reading experts", 0) as advance:
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
        out_console.print(_model_table(report))
        out_console.print(_memory_table(report))
        if report.comparison is not None:
            out_console.print(_comparison_table(report))
        if per_layer:
            memory = report.planned if report.planned is not None else report.memory
            out_console.print(_layer_table(memory, "FFN memory per decoder layer" + (" (after upcycle)" if report.planned else "")))
        if report.stats is not None:
            out_console.print(_stats_table(report))
        if sizes is not None:
            table = Table(title="language model as GGUF (tensor data)")
            table.add_column("setting")
            table.add_column("size", justify="right")
            table.add_column("x dense bf16", justify="right")
            for name, nbytes in sizes.items():
                table.add_row(name, _fmt_bytes(nbytes), f"{nbytes / sizes['dense bf16']:.2f}")
            out_console.print(table)
    if not report.ok:
        for problem in report.problems:
            err_console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
        _fail(CheckFailedError(f"{len(report.problems)} problem(s) found in {path}"))
    elif not as_json:
        out_console.print("[green]ok:[/] no problems found", highlight=False)


@app.command(cls=Command)
def demo(
    keep: Annotated[Optional[Path], typer.Option(metavar="DIR", help="Keep the tiny model and its MoTE output in this directory.")] = None,
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
        out_console.print(f"layer prefixes: {', '.join(result.plan.mote.layer_prefixes.values())}")
        from mote_convert.inspection import inspect_checkpoint

        report = inspect_checkpoint(out)
        if not report.ok:  # pragma: no cover - the demo's own output is checked by the test suite
            raise MoteError(f"demo output failed its check: {report.problems[0]}")
        out_console.print(_comparison_table(report))
        if keep is not None:
            out_console.print(f"kept in {root}")


def _train_progress() -> Any:
    """A ``TrainerCallback`` that shows the run as a rich progress bar (main process only)."""
    from transformers import TrainerCallback

    class RichTrainProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            self.progress = Progress(
                TextColumn("[progress.description]{task.description}"), BarColumn(),
                TextColumn("{task.completed}/{task.total} steps"), TextColumn("{task.fields[loss]}"),
                TimeRemainingColumn(), console=err_console,
            )
            self.task = self.progress.add_task("training", total=state.max_steps, completed=state.global_step, loss="")
            self.progress.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if self.progress is not None and logs and "loss" in logs:
                self.progress.update(self.task, loss=f"loss {logs['loss']:.4f}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return RichTrainProgress()


@app.command(cls=Command)
def train(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="MoTE checkpoint directory (from upcycle), with its processor.")],
    data: Annotated[Path, typer.Option("--data", metavar="DATA.json", help="LLaVA-format conversations (mix665k's format).")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT", help="Output directory for the trained MoTE checkpoint.")],
    image_folder: Annotated[Optional[Path], typer.Option("--image-folder", metavar="DIR", help="Root of the records' image paths.")] = None,
    recipe: Annotated[Optional[str], typer.Option(metavar="FILE", help="Training recipe YAML (a path, or a name under configs/train); flags given override it.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps (default: the recipe's epochs).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Peak learning rate (recipe default 2e-5).")] = None,
    global_batch_size: Annotated[Optional[int], typer.Option(help="Sequences per optimizer step over all processes (recipe default 128).")] = None,
    per_device_batch_size: Annotated[Optional[int], typer.Option(help="Sequences per process and forward (recipe default 4).")] = None,
    deepspeed: Annotated[Optional[str], typer.Option(metavar="FILE.json", help="DeepSpeed config (configs/launch/zero2.json, zero3.json).")] = None,
    expert_format: Annotated[Optional[str], typer.Option(help="Experts of the output: packed-2bit (default) or latent.")] = None,
    checkpoints: Annotated[Optional[Path], typer.Option(metavar="DIR", help="Where the Trainer's checkpoints go (default OUT.checkpoints).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest complete checkpoint in the checkpoints directory.", **FLAG)] = False,
    allow_images_outside: Annotated[bool, typer.Option("--allow-images-outside", help="Read images whose paths lead outside --image-folder.", **FLAG)] = False,
    overwrite: Overwrite = False,
) -> None:
    """Train the routers and routed experts of a MoTE checkpoint (stage-3 QAT) on LLaVA-format data."""
    from transformers.utils import logging as hf_logging

    from mote_convert.train.recipe import load_train_recipe
    from mote_convert.train.run import train as run_training

    hf_logging.set_verbosity_error()  # the Trainer's own chatter; progress is shown below
    hf_logging.disable_progress_bar()
    with _errors():
        options = load_train_recipe(recipe).with_overrides(
            **_given(ctx, max_steps=max_steps, learning_rate=learning_rate, global_batch_size=global_batch_size,
                     per_device_batch_size=per_device_batch_size, deepspeed=deepspeed, expert_format=expert_format)
        )
        result = run_training(model, data, output, image_folder=image_folder, recipe=options, checkpoints=checkpoints,
                              resume=resume, overwrite=overwrite, allow_images_outside=allow_images_outside,
                              callbacks=[_train_progress()], notify=_note)
    if not result.main_process:
        return
    table = Table(title=f"trained {output}", show_header=False)
    table.add_row("steps", str(result.steps))
    table.add_row("processes x accumulation", f"{result.world_size} x {result.accumulation_steps}")
    if result.losses:
        table.add_row("loss (first -> last)", f"{result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    table.add_row("checkpoints", str(result.checkpoints))
    out_console.print(table)


export_app = typer.Typer(help="Write a checkpoint in another runtime's format.", no_args_is_help=True, cls=Group)
app.add_typer(export_app, name="export")


@export_app.command("gguf", cls=Command)
def export_gguf_command(
    model: Annotated[Path, typer.Argument(metavar="IN", help="MoTE (or dense) checkpoint directory.")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT.gguf", help="The language model's GGUF file.")],
    expert_type: Annotated[str, typer.Option(help="Routed experts: tq2_0 (2.06 bits per weight) or tq1_0 (1.69).")] = "tq2_0",
    shared_type: Annotated[Optional[str], typer.Option(help="Shared experts: bf16, f16, f32, q8_0 or q4_0 (default: as stored).")] = None,
    mmproj: Annotated[Optional[Path], typer.Option(metavar="FILE.gguf", help="Also write the vision tower and projector (LLaVA-1.5 style) for llama.cpp's mtmd.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.", **FLAG)] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and validate, print the summary, write nothing.", **FLAG)] = False,
    as_json: AsJson = False,
) -> None:
    """Export a checkpoint to llama.cpp's GGUF (experts as ternary TQ2_0 / TQ1_0 blocks)."""
    from mote_convert.export import plan_gguf, write_export

    with _errors():
        plan = plan_gguf(model, expert_type=expert_type, shared_type=shared_type, mmproj=mmproj is not None)
        if dry_run:
            result = write_export(plan, output, mmproj=mmproj, dry_run=True)
        else:
            with _byte_progress("exporting", plan.nbytes) as advance:
                result = write_export(plan, output, mmproj=mmproj, overwrite=overwrite, progress=advance)
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    table = Table(title=("dry run: would write" if dry_run else "wrote"))
    for column in ("file", "architecture", "tensors", "size", "types"):
        table.add_column(column, justify="right" if column in ("tensors", "size") else "left")
    for f in result.files:
        table.add_row(str(f.path), f.arch, str(f.tensors), _fmt_bytes(f.nbytes), ", ".join(f"{k} x{v}" for k, v in sorted(f.types.items())))
    out_console.print(table)
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
