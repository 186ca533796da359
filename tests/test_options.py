"""Options, layer selections, sizes and recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mote_convert.errors import OptionsError
from mote_convert.options import LayerSelection, UpcycleOptions, load_recipe, parse_size
from mote_convert.resources import recipe_dir


def test_layer_selection() -> None:
    assert LayerSelection("all").resolve(4) == (0, 1, 2, 3)
    assert LayerSelection("even").resolve(5) == (0, 2, 4)
    assert LayerSelection("odd").resolve(5) == (1, 3)
    assert LayerSelection("5, 0,3").resolve(6) == (0, 3, 5)
    with pytest.raises(OptionsError, match="out of range"):
        LayerSelection("0,7").resolve(4)
    with pytest.raises(OptionsError, match="invalid --layers"):
        LayerSelection("first")


def test_parse_size() -> None:
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("100kb") == 100_000
    assert parse_size(123) == 123
    for bad in ("lots", "-1GB", "0"):
        with pytest.raises(OptionsError):
            parse_size(bad)


def test_option_checks() -> None:
    with pytest.raises(OptionsError, match="top-k"):
        UpcycleOptions(num_experts=2, top_k=3)
    with pytest.raises(OptionsError, match="num-experts"):
        UpcycleOptions(num_experts=0)
    with pytest.raises(OptionsError, match="unknown option"):
        UpcycleOptions.from_mapping({"experts": 4})
    opts = UpcycleOptions.from_mapping({"num-experts": 8, "layers": [0, 2]})
    assert opts.num_experts == 8 and opts.layers.resolve(3) == (0, 2)
    assert opts.with_overrides(top_k=2, seed=None).top_k == 2
    assert UpcycleOptions(latent=True).expert_format == "latent"


def test_shipped_recipes_load() -> None:
    names = sorted(p.stem for p in recipe_dir().glob("*.yaml"))
    assert "mote-default" in names
    for name in names:
        assert isinstance(load_recipe(name), UpcycleOptions)
    assert load_recipe("mote-default") == UpcycleOptions()
    assert load_recipe("mote-half-layers").num_experts == 8


def test_recipe_errors(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="shipped recipes: .*mote-default"):
        load_recipe("no-such-recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(OptionsError, match="mapping"):
        load_recipe(bad)
    bad.write_text("num_experts: 2\ntop_k: 3\n")
    with pytest.raises(OptionsError, match="top-k"):
        load_recipe(bad)
