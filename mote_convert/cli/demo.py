"""``mote-convert demo``: the whole pipeline on a tiny model built on the spot."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from mote_convert.cli.app import Command, app, byte_progress, err_console, errors, out_console, print_table
from mote_convert.cli.render import comparison_table, summary_table
from mote_convert.errors import MoteError


@app.command(cls=Command)
def demo(
    keep: Annotated[
        Optional[Path], typer.Option(metavar="DIR", help="Keep the tiny model and its MoTE output in this directory.")
    ] = None,
) -> None:
    """Build a tiny LLaVA on the spot, up-cycle it and show what was made (seconds, CPU only)."""
    from mote_convert.tiny import build_tiny_llava
    from mote_convert.upcycle import plan_upcycle
    from mote_convert.write import write_plan

    with errors(), tempfile.TemporaryDirectory(prefix="mote-demo-") as tmp:
        root = Path(keep) if keep is not None else Path(tmp)
        dense = root / "tiny-llava"
        out = root / "tiny-llava-mote"
        if keep is not None and (dense.exists() or out.exists()):
            raise MoteError(f"{root} already holds a demo; choose an empty --keep directory")
        with err_console.status("building a tiny LLaVA (Llama text, CLIP vision)..."):
            build_tiny_llava(dense)
        plan = plan_upcycle(dense)
        with byte_progress("upcycling", plan.bytes_out) as advance:
            result = write_plan(plan, out, overwrite=False, dry_run=False, progress=advance)
        print_table(summary_table(f"demo: {dense.name} -> {out.name}", result.summary.to_dict()))
        out_console.print(f"layer prefixes: {', '.join(result.plan.mote.layer_prefixes.values())}")
        from mote_convert.inspection import inspect_checkpoint

        report = inspect_checkpoint(out)
        if not report.ok:  # pragma: no cover - the demo's own output is checked by the test suite
            raise MoteError(f"demo output failed its check: {report.problems[0]}")
        print_table(comparison_table(report))
        if keep is not None:
            out_console.print(f"kept in {root}")
