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


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"latent": "false"}, "--latent must be true or false, got 'false'"),
        ({"top_k": True}, "--top-k must be an integer, got True"),
        ({"num_experts": 4.5}, "--num-experts must be an integer, got 4.5"),
        ({"num_experts": 100_000_000}, "--num-experts must be between 1 and 1024"),
        ({"seed": 2**64}, "--seed must be between 0 and 4294967295"),
        ({"seed": -1}, "--seed must be between 0"),
        ({"norm_topk_prob": 1}, "norm_topk_prob must be true or false"),
        ({"router_aux_loss_coef": float("nan")}, "router_aux_loss_coef must be a finite number"),
        ({"router_aux_loss_coef": "0.01"}, "router_aux_loss_coef must be a finite number"),
        ({"layers": [0, "x"]}, "--layers must be an integer, got 'x'"),
        ({"layers": {"a": 1}}, "invalid --layers"),
        ({"layers": "0,99999999"}, "invalid --layers"),
        ({"max_shard_size": 1.5}, "invalid size 1.5"),
        ({"max_shard_size": True}, "invalid size True"),
    ],
)
def test_values_are_type_and_range_checked(values: dict, needle: str) -> None:
    """A string is not a bool, a float is not an int, and values stay in sane ranges."""
    with pytest.raises(OptionsError) as info:
        UpcycleOptions.from_mapping(values)
    assert needle in str(info.value)


def test_recipe_yaml_is_read_with_limits(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"  # 9 levels of 9-fold aliases: 387 million nodes if expanded
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [
        f"a{i}: &a{i} [*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1},*a{i - 1}]"
        for i in range(1, 9)
    ]
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 1000
    with pytest.raises(OptionsError, match="aliases are not allowed"):
        load_recipe(bomb)
    deep = tmp_path / "deep.yaml"
    deep.write_text("num_experts: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(OptionsError, match="nested"):
        load_recipe(deep)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(OptionsError, match="larger than"):
        load_recipe(big)
    string_bool = tmp_path / "s.yaml"
    string_bool.write_text("latent: 'false'\n")
    with pytest.raises(OptionsError, match=r"recipe .*s\.yaml: --latent must be true or false"):
        load_recipe(string_bool)
