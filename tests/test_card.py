"""Every output gets a model card that huggingface_hub parses: its base model, the Hub tags, and the
numbers inspect reports; pack keeps the base model; the card warns about the dense fallback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import mote_convert
from tests.helpers import hub_cache


def _table(card: ModelCard) -> dict[str, tuple[int, int, float]]:
    rows = re.findall(r"^\| ([a-z ]+) \| (\d+) \| (\d+) \| ([\d.]+) \|$", card.text, re.M)
    return {name: (int(p), int(b), float(w)) for name, p, b, w in rows}


def test_the_card_names_the_base_model_and_inspects_numbers(
    tiny_llava: Path,
    offline_cache: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    hub_cache(offline_cache, "org/tiny-llava", tiny_llava)
    out = mote_convert.upcycle("org/tiny-llava", tmp_path / "mote", latent=True).output
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "org/tiny-llava"
    assert {"mote", "moe", "ternary"} <= set(card.data.tags) and card.data.library_name == "transformers"
    report = mote_convert.inspect_checkpoint(out)
    table = _table(card)
    want = {c.name.replace("_", " "): c for c in report.memory.components if c.tensors}
    assert table.keys() == set(want) | {"total"}
    for name, c in want.items():
        assert table[name] == (c.params, c.bytes, pytest.approx(c.bits_per_weight, rel=1e-5))
    assert table["total"][:2] == (report.memory.total.params, report.memory.total.bytes)
    assert "stock `from_pretrained` loads the dense model" in card.text
    assert "4 routed experts" in card.text and "top-1" in card.text
    assert card.text.lstrip().startswith("# org/tiny-llava (MoTE)\n")  # never the staging directory's name

    packed = mote_convert.pack(out, tmp_path / "packed").output
    packed_card = ModelCard.load(packed / "README.md")
    assert packed_card.data.base_model == "org/tiny-llava"  # carried from the latent checkpoint's card
    assert "`packed-2bit`" in packed_card.text and "`latent`" in card.text
    assert _table(packed_card)["routed experts"][2] == pytest.approx(
        mote_convert.inspect_checkpoint(packed).memory["routed_experts"].bits_per_weight, rel=1e-5
    )


def test_a_local_source_has_no_base_model(tiny_llava: Path, tmp_path: Path) -> None:
    (tiny_llava_copy := tmp_path / "src").mkdir()
    out = mote_convert.upcycle(tiny_llava, tmp_path / "mote").output
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model is None and "up-cycled from a dense checkpoint" in card.text
    assert tiny_llava_copy.exists()
