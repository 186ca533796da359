"""``mote-convert eval``: an evaluation harness's tasks, scored on the MoTE model (not its dense fallback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from mote_convert.cli.app import FLAG, AsJson, Command, Group, Revision, app, errors, out_console, print_table

eval_app = typer.Typer(help="Score a checkpoint with an evaluation harness, as MoTE.", no_args_is_help=True, cls=Group)
app.add_typer(eval_app, name="eval")


@eval_app.command("lm-eval", cls=Command)
def lm_eval_command(
    model: Annotated[
        Path, typer.Argument(metavar="MODEL", help="MoTE (or dense) checkpoint directory, or a Hub repo id ORG/NAME.")
    ],
    tasks: Annotated[str, typer.Option(metavar="NAMES", help="lm-eval task names, comma-separated.")],
    include_path: Annotated[
        Optional[Path], typer.Option(metavar="DIR", help="Directory (or YAML file) of your own task definitions.")
    ] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many items per task.")] = None,
    num_fewshot: Annotated[Optional[int], typer.Option(min=0, help="Few-shot examples (default: the task's).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Requests per forward.")] = 1,
    apply_chat_template: Annotated[
        bool, typer.Option("--apply-chat-template", help="Render prompts with the model's chat template.", **FLAG)
    ] = False,
    log_samples: Annotated[
        bool, typer.Option("--log-samples", help="With --json: each item's target and response too.", **FLAG)
    ] = False,
    as_json: AsJson = False,
    revision: Revision = None,
) -> None:
    """Run lm-evaluation-harness tasks (text, and image tasks with doc_to_image) on the model as MoTE."""
    from mote_convert.evaluation import evaluate

    with errors():
        result = evaluate(
            model,
            [t.strip() for t in tasks.split(",") if t.strip()],
            include_path=include_path,
            limit=limit,
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            revision=revision,
            apply_chat_template=apply_chat_template,
            log_samples=log_samples,
        )
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    table = Table(title=f"{result.harness} on {model} ({result.kind} model)", title_justify="left")
    for column in ("task", "metric", "value", "± stderr", "items"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right", no_wrap=True)
    for s in result.scores:
        table.add_row(
            s.task, s.metric, f"{s.value:.4f}", "-" if s.stderr is None else f"{s.stderr:.4f}", str(s.samples)
        )
    print_table(table)
