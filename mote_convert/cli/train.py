"""``mote-convert train``: stage-3 QAT of routers and routed experts with the Hugging Face Trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mote_convert.cli.app import (
    FLAG,
    AsJson,
    Command,
    Overwrite,
    Revision,
    app,
    err_console,
    errors,
    given,
    note,
    out_console,
    print_table,
    upload_hint,
)
from mote_convert.io.source import resolve_model


def train_progress() -> Any:
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
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} steps"),
                TextColumn("{task.fields[loss]}"),
                TimeRemainingColumn(),
                console=err_console,
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
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL", help="MoTE checkpoint (from upcycle) with its processor: a directory or a Hub repo id."
        ),
    ],
    data: Annotated[
        Path, typer.Option("--data", metavar="DATA.json", help="LLaVA-format conversations (mix665k's format).")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="OUT", help="Output directory for the trained MoTE checkpoint.")
    ],
    image_folder: Annotated[
        Optional[Path], typer.Option("--image-folder", metavar="DIR", help="Root of the records' image paths.")
    ] = None,
    recipe: Annotated[
        Optional[str],
        typer.Option(
            metavar="FILE",
            help="Training recipe YAML (a path, or a name under configs/train); flags given override it.",
        ),
    ] = None,
    max_steps: Annotated[
        Optional[int], typer.Option(help="Stop after this many optimizer steps (default: the recipe's epochs).")
    ] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Peak learning rate (recipe default 2e-5).")] = None,
    global_batch_size: Annotated[
        Optional[int], typer.Option(help="Sequences per optimizer step over all processes (recipe default 128).")
    ] = None,
    per_device_batch_size: Annotated[
        Optional[int], typer.Option(help="Sequences per process and forward (recipe default 4).")
    ] = None,
    deepspeed: Annotated[
        Optional[str],
        typer.Option(metavar="FILE.json", help="DeepSpeed config (configs/launch/zero2.json, zero3.json)."),
    ] = None,
    expert_format: Annotated[
        Optional[str], typer.Option(help="Experts of the output: packed-2bit (default) or latent.")
    ] = None,
    report_to: Annotated[
        Optional[str],
        typer.Option(
            metavar="NAMES",
            help="Loggers of the Trainer, comma-separated: tensorboard, wandb, mlflow, ... (default none).",
        ),
    ] = None,
    checkpoints: Annotated[
        Optional[Path],
        typer.Option(metavar="DIR", help="Where the Trainer's checkpoints go (default OUT.checkpoints)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue from the latest complete checkpoint in the checkpoints directory.", **FLAG
        ),
    ] = False,
    allow_images_outside: Annotated[
        bool,
        typer.Option("--allow-images-outside", help="Read images whose paths lead outside --image-folder.", **FLAG),
    ] = False,
    overwrite: Overwrite = False,
    as_json: AsJson = False,
    revision: Revision = None,
) -> None:
    """Train the routers and routed experts of a MoTE checkpoint (stage-3 QAT) on LLaVA-format data."""
    from transformers.utils import logging as hf_logging

    from mote_convert.train.recipe import load_train_recipe
    from mote_convert.train.run import train as run_training

    hf_logging.set_verbosity_error()  # the Trainer's own chatter; progress is shown below
    hf_logging.disable_progress_bar()
    with errors():
        model = resolve_model(model, revision)
        options = load_train_recipe(recipe).with_overrides(
            **given(
                ctx,
                max_steps=max_steps,
                learning_rate=learning_rate,
                global_batch_size=global_batch_size,
                per_device_batch_size=per_device_batch_size,
                deepspeed=deepspeed,
                expert_format=expert_format,
                report_to=report_to,
            )
        )
        result = run_training(
            model,
            data,
            output,
            image_folder=image_folder,
            recipe=options,
            checkpoints=checkpoints,
            resume=resume,
            overwrite=overwrite,
            allow_images_outside=allow_images_outside,
            callbacks=[train_progress()],
            notify=note,
        )
    _end_process_group()
    if not result.main_process:
        return
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    table = Table(title=f"trained {output}", show_header=False, title_justify="left")
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", no_wrap=True)  # paths stay whole: the table grows instead
    recipe_used = result.recipe
    table.add_row("steps", str(result.steps))
    table.add_row("processes x accumulation", f"{result.world_size} x {result.accumulation_steps}")
    if recipe_used is not None:
        table.add_row(
            "learning rate",
            f"{recipe_used.learning_rate:g} ({recipe_used.lr_scheduler}, warm-up {recipe_used.warmup_ratio:g})",
        )
        table.add_row(
            "global batch", f"{recipe_used.global_batch_size} ({recipe_used.per_device_batch_size} per forward)"
        )
        table.add_row("precision", "bf16 autocast" if result.bf16 else "float32")
        table.add_row("aux-loss coefficient", f"{recipe_used.router_aux_loss_coef:g}")
        table.add_row("reported to", ", ".join(recipe_used.report_to) or "-")
    if result.losses:
        table.add_row("loss (first -> last)", f"{result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    if result.loss_curve is not None:
        table.add_row("loss curve", str(result.loss_curve))
    table.add_row("checkpoints", str(result.checkpoints))
    print_table(table)
    upload_hint(output)


def _end_process_group() -> None:
    """The command is the process: close a launch's process group before the interpreter exits.
    Left to interpreter shutdown, gloo's threads were destroyed while joinable on some runs, and the
    process aborted ("terminate called without an active exception") after a complete run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every process is done with the group (the main one wrote the output)
        dist.destroy_process_group()
