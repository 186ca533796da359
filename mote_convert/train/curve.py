"""The training loss as a picture: a PNG of the loss at each logging step, written beside the output.

matplotlib draws it (without a display: its Agg backend); the file is written beside its final name
and renamed when complete, as every output is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


def loss_curve_path(out: Path) -> Path:
    """Where the picture of a run writing ``out`` goes: ``OUT.loss.png``, beside ``OUT``."""
    return out.with_name(out.name + ".loss.png")


def write_loss_curve(points: Sequence[tuple[int, float]], path: Path, *, title: str = "") -> Path:
    """Draw (step, loss) ``points`` as a line chart into the PNG ``path``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a backend the user chose already stays
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100, layout="tight")
    axes = figure.add_subplot()
    steps, losses = zip(*points, strict=True) if points else ((), ())
    axes.plot(steps, losses, marker="." if len(points) < 50 else None, linewidth=1.2)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss")
    axes.xaxis.get_major_locator().set_params(integer=True)  # steps are whole numbers
    axes.grid(True, alpha=0.3)
    if title:
        axes.set_title(title, fontsize=10)
    partial = path.with_name(f".{path.name}.partial")
    try:
        figure.savefig(partial, format="png")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
