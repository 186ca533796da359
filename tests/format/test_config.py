"""config.json["mote"]: one validation that returns named problems (inspect) or raises (load, pack)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import mote_convert
from mote_convert.arch import architecture_of
from mote_convert.errors import FormatError
from mote_convert.format import ExpertFormat, MoteConfig, check_file_metadata
from tests.families import FAMILIES

GOOD = {
    "format_version": 1,
    "num_experts": 4,
    "top_k": 1,
    "moe_layers": [0, 1],
    "layer_prefixes": {"0": "language_model.model.layers.0.mlp", "1": "language_model.model.layers.1.mlp"},
    "projections": ["gate_proj", "up_proj", "down_proj"],
    "expert_format": "packed-2bit",
    "weight_quant": "absmean-tensor",
    "activation_bits": 8,
    "router_aux_loss_coef": 0.01,
    "norm_topk_prob": False,
    "seed": 0,
}
LLAVA = architecture_of(
    FAMILIES["llava-llama"].config().to_dict() | {"architectures": ["LlavaForConditionalGeneration"]}
)


def test_round_trip_keeps_extensions() -> None:
    config = MoteConfig.parse(GOOD, "x", arch=LLAVA, num_layers=2)
    assert config.moe_layers == (0, 1) and config.expert_format is ExpertFormat.PACKED_2BIT
    assert config.to_dict() == GOOD
    assert config.with_format("latent").to_dict()["expert_format"] == "latent"


BAD = {
    "a missing top_k": ({"top_k": None}, "mote.top_k: missing"),
    "a missing projections": ({"projections": None}, "mote.projections: missing"),
    "a missing layer_prefixes": ({"layer_prefixes": None}, "mote.layer_prefixes: missing"),
    "num_experts a string": ({"num_experts": "abc"}, "mote.num_experts: is 'abc'"),
    "num_experts a float": ({"num_experts": 4.5}, "mote.num_experts: is 4.5"),
    "num_experts huge": ({"num_experts": 10**8}, "mote.num_experts: is 100000000"),
    "top_k true": ({"top_k": True}, "mote.top_k: is True"),
    "top_k above num_experts": ({"top_k": 5}, "mote.top_k: is 5"),
    "an unknown expert format": (
        {"expert_format": "int4"},
        "mote.expert_format: is 'int4'; known: packed-2bit, latent",
    ),
    "norm_topk_prob a string": ({"norm_topk_prob": "false"}, "mote.norm_topk_prob"),
    "an infinite coefficient": ({"router_aux_loss_coef": float("inf")}, "mote.router_aux_loss_coef"),
    "another format version": ({"format_version": 2}, "mote.format_version: is 2"),
    "layers not a list": ({"moe_layers": "all"}, "mote.moe_layers: is 'all'"),
    "a layer out of range": (
        {
            "moe_layers": [0, 7],
            "layer_prefixes": {"0": GOOD["layer_prefixes"]["0"], "7": "language_model.model.layers.7.mlp"},
        },
        "layer 7 is outside",
    ),
    "prefixes for other layers": ({"moe_layers": [0]}, "mote.layer_prefixes: has layers"),
    "another family's projections": ({"projections": ["fc1", "fc2"]}, "mote.projections"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sections_are_named(case: str) -> None:
    changes, needle = BAD[case]
    raw = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    config, problems = MoteConfig.check(raw, arch=LLAVA, num_layers=2)
    assert config is None and any(needle in str(p) for p in problems), (needle, [str(p) for p in problems])
    with pytest.raises(FormatError, match="invalid MoTE config"):
        MoteConfig.parse(raw, "ckpt", arch=LLAVA, num_layers=2)


def test_not_an_object_and_absent() -> None:
    assert [str(p) for p in MoteConfig.check([1, 2])[1]] == ["config.json:mote: must be a JSON object"]
    with pytest.raises(FormatError, match="not a MoTE checkpoint"):
        MoteConfig.parse(None, "ckpt")


def test_file_metadata_rule() -> None:
    # absent (what save_pretrained writes) is accepted by every tool; another version is a problem
    assert check_file_metadata("f", {"format": "pt"}) is None
    assert check_file_metadata("f", {"format": "pt", "mote_format": "1"}) is None
    assert "this tool reads '1'" in str(check_file_metadata("f", {"mote_format": "2"}))


@pytest.mark.parametrize(
    "case", ["a missing top_k", "num_experts a string", "a missing projections", "a missing layer_prefixes"]
)
def test_load_and_pack_refuse_malformed_sections_like_inspect(case: str, tiny_llava: Path, tmp_path: Path) -> None:
    """The issue's cases: load_model and pack gave a bare KeyError / ValueError; now the same named
    problem inspect reports, as a FormatError."""
    latent = tmp_path / "latent"
    mote_convert.upcycle(tiny_llava, latent, latent=True)
    config = json.loads((latent / "config.json").read_text())
    changes, needle = BAD[case]
    config["mote"] = {k: v for k, v in {**config["mote"], **changes}.items() if v is not None}
    (latent / "config.json").write_text(json.dumps(config))
    inspected = [str(p) for p in mote_convert.inspect_checkpoint(latent).problems]
    assert any(needle in p for p in inspected), inspected
    for run in (lambda: mote_convert.load_model(latent), lambda: mote_convert.pack(latent, tmp_path / "packed")):
        with pytest.raises(FormatError, match=needle.replace(".", r"\.")):
            run()
    assert not (tmp_path / "packed").exists()
    shutil.rmtree(latent)
