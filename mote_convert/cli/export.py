"""``mote-convert export gguf``: a checkpoint as llama.cpp GGUF files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from mote_convert.cli.app import (
    FLAG,
    AsJson,
    Command,
    Group,
    Revision,
    app,
    byte_progress,
    err_console,
    errors,
    fmt_bytes,
    out_console,
    print_table,
    upload_hint,
)
from mote_convert.io.source import resolve_model

export_app = typer.Typer(help="Write a checkpoint in another runtime's format.", no_args_is_help=True, cls=Group)
app.add_typer(export_app, name="export")


@export_app.command("gguf", cls=Command)
def export_gguf_command(
    model: Annotated[
        Path, typer.Argument(metavar="IN", help="MoTE (or dense) checkpoint directory, or a Hub repo id ORG/NAME.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT.gguf", help="The language model's GGUF file.")],
    expert_type: Annotated[
        str, typer.Option(help="Routed experts: tq2_0 (2.06 bits per weight) or tq1_0 (1.69).")
    ] = "tq2_0",
    shared_type: Annotated[
        Optional[str], typer.Option(help="Shared experts: bf16, f16, f32, q8_0 or q4_0 (default: as stored).")
    ] = None,
    mmproj: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE.gguf",
            help="Also write the vision tower and projector for llama.cpp's mtmd (LLaVA-1.5, Idefics3 / SmolVLM, "
            "Mistral 3).",
        ),
    ] = None,
    quantize: Annotated[
        Optional[str],
        typer.Option(
            metavar="LEVEL",
            help="Quantize attention, embeddings, output and shared experts as llama.cpp's quantizer does at LEVEL "
            "(q4_0, q8_0, q4_k_m, ...); the routed experts stay ternary. Needs llama-cpp-python.",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.", **FLAG)] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and validate, print the summary, write nothing.", **FLAG)
    ] = False,
    as_json: AsJson = False,
    revision: Revision = None,
) -> None:
    """Export a checkpoint to llama.cpp's GGUF (experts as ternary TQ2_0 / TQ1_0 blocks)."""
    from mote_convert.export import plan_gguf, write_export

    with errors():
        model = resolve_model(model, revision)
        plan = plan_gguf(
            model, expert_type=expert_type, shared_type=shared_type, mmproj=mmproj is not None, quantize=quantize
        )
        if dry_run:
            result = write_export(plan, output, mmproj=mmproj, dry_run=True)
        else:
            with byte_progress("exporting", plan.nbytes) as advance:
                result = write_export(plan, output, mmproj=mmproj, overwrite=overwrite, progress=advance)
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    table = Table(title=("dry run: would write" if dry_run else "wrote"))
    for column in ("file", "architecture", "tensors", "size", "types"):
        # nothing is cut or wrapped: the table grows instead (print_table)
        table.add_column(column, justify="right" if column in ("tensors", "size") else "left", no_wrap=True)
    for f in result.files:
        table.add_row(
            str(f.path),
            f.arch,
            str(f.tensors),
            fmt_bytes(f.nbytes),
            ", ".join(f"{k} x{v}" for k, v in sorted(f.types.items())),
        )
    print_table(table)
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    if not dry_run:
        for f in result.files:  # GGUF files go to a repo of their own, by the Hub's custom
            upload_hint(f.path, f"{Path(output).stem}-GGUF")


@export_app.command("vllm", cls=Command)
def export_vllm_command(
    model: Annotated[
        Path, typer.Argument(metavar="IN", help="Packed MoTE checkpoint directory, or a Hub repo id ORG/NAME.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT", help="The directory vLLM serves.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.", **FLAG)] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and validate, print the summary, write nothing.", **FLAG)
    ] = False,
    as_json: AsJson = False,
    revision: Revision = None,
) -> None:
    """Export a MoTE checkpoint for vLLM (Qwen2-MoE with the `mote` quantization method; docs/serve.md)."""
    from mote_convert.export.vllm import plan_vllm, write_vllm

    with errors():
        model = resolve_model(model, revision)
        plan = plan_vllm(model)
        if dry_run:
            result = write_vllm(plan, output, overwrite=overwrite, dry_run=True)
        else:
            with byte_progress("exporting", plan.nbytes) as advance:
                result = write_vllm(plan, output, overwrite=overwrite, progress=advance)
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    table = Table(title=("dry run: would write" if dry_run else "wrote"))
    for column in ("directory", "architecture", "language model", "tensors", "size"):
        table.add_column(column, justify="right" if column in ("tensors", "size") else "left", no_wrap=True)
    table.add_row(
        str(result.output),
        result.architecture,
        f"{result.text_model_type} as qwen2_moe",
        str(result.tensors),
        fmt_bytes(result.nbytes),
    )
    print_table(table)
    if not dry_run:
        err_console.print(f"[dim]serve it: vllm serve {result.output}[/]", highlight=False, soft_wrap=True)
        upload_hint(result.output, f"{Path(output).name}")
