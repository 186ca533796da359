"""The training recipe: MoE-LLaVA stage-3 defaults, strict types, the shipped file."""

from __future__ import annotations

import pytest

from mote_convert.errors import OptionsError
from mote_convert.train.recipe import TrainRecipe, load_train_recipe


def test_defaults_are_moe_llava_stage3_and_the_shipped_file_says_the_same() -> None:
    r = TrainRecipe()
    assert (r.learning_rate, r.lr_scheduler, r.warmup_ratio, r.weight_decay, r.epochs) == (
        2e-5,
        "cosine",
        0.03,
        0.0,
        1.0,
    )
    assert (r.global_batch_size, r.bf16, r.router_aux_loss_coef, r.gradient_checkpointing) == (128, "auto", 0.01, True)
    assert load_train_recipe("moe-llava-stage3") == r


def test_bf16_auto_is_bf16_where_the_device_has_it_and_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for avx512_bf16, amx, want in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert TrainRecipe().uses_bf16() is want  # an AVX2-only CPU emulates bf16: float32 there
    assert TrainRecipe(bf16=True).uses_bf16() is True and TrainRecipe(bf16=False).uses_bf16() is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert TrainRecipe().uses_bf16() is True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # a V100: fp32
    assert TrainRecipe().uses_bf16() is False


def test_report_to_takes_the_trainers_integrations() -> None:
    assert TrainRecipe(report_to="tensorboard, wandb").report_to == ("tensorboard", "wandb")
    assert TrainRecipe(report_to=["tensorboard"]).report_to == ("tensorboard",)
    assert TrainRecipe(report_to="none").report_to == () and TrainRecipe().report_to == ()
    with pytest.raises(OptionsError, match="unknown report_to 'tensorbored'; known: .*tensorboard"):
        TrainRecipe(report_to=["tensorbored"])
    with pytest.raises(OptionsError, match="report_to must be a list"):
        TrainRecipe(report_to=3)


def test_accumulation_is_derived_from_the_global_batch() -> None:
    r = TrainRecipe(global_batch_size=128, per_device_batch_size=4)
    assert r.accumulation_steps(8) == 4 and r.accumulation_steps(1) == 32
    with pytest.raises(OptionsError, match="not a multiple of per_device_batch_size 4 x 3"):
        r.accumulation_steps(3)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"learning_rate": "2e-5"}, "learning_rate must be a finite number"),
        ({"bf16": "yes"}, "bf16 must be true, false or auto"),
        ({"max_steps": 0}, "max_steps must be positive"),
        ({"global_batch_size": 1.5}, "global_batch_size must be an integer"),
        ({"lr_scheduler": "cosine_annealing"}, "unknown lr_scheduler 'cosine_annealing'; known: cosine"),
        ({"expert_format": "int4"}, "unknown expert_format"),
        ({"warmup_ratio": 1.0}, "warmup_ratio must be below 1"),
        ({"batch": 4}, "unknown training option.s. batch; known:"),
    ],
)
def test_bad_values_are_refused_by_name(values: dict, needle: str) -> None:
    with pytest.raises(OptionsError, match=needle):
        TrainRecipe.from_mapping(values)


def test_unknown_recipe_lists_the_shipped_ones(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(OptionsError, match="shipped: moe-llava-stage3"):
        load_train_recipe("nope")
    bad = tmp_path / "r.yaml"
    bad.write_text("learning_rate: 1e-4\nepoch: 2\n")
    with pytest.raises(OptionsError, match=r"r.yaml: unknown training option\(s\) epoch"):
        load_train_recipe(bad)
