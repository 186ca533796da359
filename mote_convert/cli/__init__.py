"""The ``mote-convert`` command line: one module per command (``cli/<command>.py``), the shared frame
in ``cli/app.py``, the tables in ``cli/render.py``. Importing the package registers every command,
in the order ``--help`` lists them."""

from __future__ import annotations

# importing a command module registers it; this is the order --help lists them in
# isort: off
from mote_convert.cli import architectures, upcycle, pack, inspect, demo, train, generate, evaluate, export  # noqa: F401

# isort: on
from mote_convert.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
