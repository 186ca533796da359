"""``python -m mote_convert.cli``: the console script."""

from mote_convert.cli import main

main()
