"""Every runnable code block of the README and docs/ runs as written (a doc example never breaks silently).

A file's ``bash`` and ``python`` blocks run in order, as one Python script (variables carry over
between python blocks, bash blocks run through ``bash -euo pipefail``), in a fresh directory. A block
preceded by an ``<!-- not run ... -->`` comment (the README's install and test commands, which are
this suite's own set-up) is skipped; other languages (yaml, text) are not code to run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?P<skip><!--\s*not run[^>]*-->\s*\n)?```(?P<lang>[a-z]*)\n(?P<code>.*?)```", re.DOTALL)


def blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of the runnable blocks of a markdown file, in order."""
    return [
        (m["lang"], m["code"])
        for m in BLOCK.finditer(path.read_text())
        if m["lang"] in ("bash", "python") and not m["skip"]
    ]


def script(path: Path) -> str:
    parts = [
        "import subprocess as _subprocess",
        "def _sh(code):",
        "    _subprocess.run(['bash', '-euo', 'pipefail', '-c', code], check=True)",
    ]
    for lang, code in blocks(path):
        parts.append(code if lang == "python" else f"_sh({code!r})")
    return "\n".join(parts) + "\n"


def test_docs_are_self_contained() -> None:
    for path in DOCS:
        assert "../shared" not in path.read_text(), f"{path.name} points at ../shared, which users do not have"


@pytest.mark.parametrize("doc", [p for p in DOCS if blocks(p)], ids=lambda p: p.name)
def test_code_blocks_run(doc: Path, tmp_path: Path) -> None:
    (tmp_path / "doc_script.py").write_text(script(doc))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "120"}
    result = subprocess.run(
        [sys.executable, "doc_script.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{doc.name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_every_recipe_key_is_documented() -> None:
    """Each key a training or upcycle recipe takes is in the docs' tables (a new key cannot hide)."""
    from dataclasses import fields

    from mote_convert.options import UpcycleOptions
    from mote_convert.train.recipe import TrainRecipe

    training = (ROOT / "docs" / "training.md").read_text()
    usage = (ROOT / "docs" / "usage.md").read_text()
    for f in fields(TrainRecipe):
        assert f"| `{f.name}` |" in training, f"training recipe key {f.name} is not in docs/training.md's table"
    for f in fields(UpcycleOptions):
        assert f"`{f.name}`" in usage, f"upcycle recipe key {f.name} is not in docs/usage.md"
