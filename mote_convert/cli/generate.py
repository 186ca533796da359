"""``mote-convert generate``: a prompt (and an image) in, the model's greedy answer out, streamed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from mote_convert.cli.app import AsJson, Command, Revision, app, err_console, errors, out_console


@app.command(cls=Command)
def generate(
    model: Annotated[
        Path,
        typer.Argument(metavar="MODEL", help="MoTE or dense checkpoint directory, or a Hub repo id ORG/NAME."),
    ],
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="The user's message (the model's chat template wraps it).")
    ],
    image: Annotated[
        Optional[Path], typer.Option(metavar="FILE", help="An image to ask about (needs the model's processor).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Most tokens to generate (greedy).")] = 64,
    as_json: AsJson = False,
    revision: Revision = None,
) -> None:
    """Answer a prompt (and an image) with the model, greedily, streaming the text as it comes."""
    from mote_convert.generation import generate as run

    def stream(text: str) -> None:
        out_console.print(text, end="", markup=False, highlight=False, soft_wrap=True)

    with errors():
        result = run(
            model,
            prompt,
            image=image,
            max_new_tokens=max_new_tokens,
            revision=revision,
            on_text=None if as_json else stream,
        )
    if as_json:
        out_console.print_json(json.dumps(result.to_dict()))
        return
    out_console.print()
    err_console.print(
        f"[dim]{result.kind} model, {result.prompt_tokens} prompt tokens, {len(result.tokens)} new tokens, "
        f"{result.tokens_per_second:.1f} tokens/s[/]",
        highlight=False,
    )
