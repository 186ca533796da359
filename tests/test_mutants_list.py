"""scripts/mutants.py stays applicable: every mutant's text is found exactly once where it points, and
the tests it names exist (a stale mutant would otherwise only show in CI's slow run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mutants():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("mote_mutants", ROOT / "scripts" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mote_mutants"] = module
    spec.loader.exec_module(module)
    return module.MUTANTS


def test_every_mutant_applies_once_and_names_existing_tests() -> None:
    mutants = _mutants()
    assert len(mutants) >= 25 and len({m.name for m in mutants}) == len(mutants)
    for m in mutants:
        assert (ROOT / m.path).read_text().count(m.old) == 1, m.name
        assert m.old != m.new and m.tests, m.name
        for test in m.tests:
            path, _, name = test.partition("::")
            assert (ROOT / path).is_file(), (m.name, test)
            if name:
                assert f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), (m.name, test)
