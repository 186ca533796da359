"""`train --resume` continues the training itself (weights, not only step numbers), from the latest
complete checkpoint, and refuses a checkpoint of another model before any step."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from mote_convert.errors import Interrupted
from mote_convert.tiny import TINY_VOCAB_WITH_PROCESSOR, build_tiny_llava
from mote_convert.train.checkpoints import damage, resume_point
from mote_convert.train.recipe import load_train_recipe
from mote_convert.train.run import train
from tests.helpers import assert_one_line_error, read_all, train_args, training_setup

runner = CliRunner()
RECIPE = """\
learning_rate: 3.0e-3
max_steps: 4
global_batch_size: 8
per_device_batch_size: 4
save_steps: 2
save_total_limit: 3
expert_format: latent
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    s = training_setup(tmp_path_factory.mktemp("resume"), RECIPE)
    # the uninterrupted run every resumed one must end at
    full = s["root"] / "full"
    result = runner.invoke(app, train_args(s, full))
    assert result.exit_code == 0, result.output
    return {**s, "full": full}


class SignalAfterSave(TrainerCallback):
    """Sends this process a SIGTERM once the checkpoint of ``step`` is saved (a stop between steps)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _stop_after(s: dict[str, Path], out: Path, step: int) -> Path:
    """Train into ``out`` until a SIGTERM after ``step``'s checkpoint; returns the checkpoints directory."""
    with pytest.raises(
        Interrupted, match="SIGTERM; the checkpoints in .* are complete; --resume continues from checkpoint-2"
    ):
        train(
            s["mote"],
            s["data"],
            out,
            image_folder=s["data"].parent,
            recipe=load_train_recipe(s["recipe"]),
            callbacks=[SignalAfterSave(step)],
        )
    assert not out.exists()
    return out.with_name(out.name + ".checkpoints")


def _max_difference(a: Path, b: Path) -> float:
    left, right = read_all(a), read_all(b)
    assert left.keys() == right.keys()
    return max(float((left[n].float() - right[n].float()).abs().max()) for n in left)


def test_a_stopped_and_resumed_run_ends_where_the_uninterrupted_one_does(setup: dict[str, Path]) -> None:
    out = setup["root"] / "stopped"
    checkpoints = _stop_after(setup, out, 2)
    assert [p.name for p in checkpoints.iterdir()] == ["checkpoint-2"]  # the stop left one whole checkpoint
    result = runner.invoke(app, train_args(setup, out, "--resume"))
    assert result.exit_code == 0, result.output
    assert "resuming from checkpoint-2 (step 2)" in result.stderr
    assert _max_difference(out, setup["full"]) <= 1e-6
    # the oracle sees a resume that loads nothing: the trained run is far from the input
    input_latent = setup["root"] / "input-latent"
    mote_convert.save_model(mote_convert.load_model(setup["mote"], mode="train"), input_latent, expert_format="latent")
    assert _max_difference(input_latent, setup["full"]) > 1e-3


def test_a_half_written_latest_checkpoint_is_skipped_by_name(setup: dict[str, Path]) -> None:
    out = setup["root"] / "half"
    checkpoints = _stop_after(setup, out, 2)
    # what a run killed outright (SIGKILL, power loss) in the middle of the step-4 save could leave,
    # had checkpoints not been renamed into place: the weights, and no trainer state
    shutil.copytree(checkpoints / "checkpoint-2", checkpoints / "checkpoint-4")
    (checkpoints / "checkpoint-4" / "trainer_state.json").unlink()
    (checkpoints / ".checkpoint-6.partial").mkdir()  # and a killed save's staging directory
    result = runner.invoke(app, train_args(setup, out, "--resume"))
    assert result.exit_code == 0, result.output
    assert "resuming from checkpoint-2 (step 2); skipped checkpoint-4: no trainer_state.json" in " ".join(
        result.stderr.split()
    )
    assert _max_difference(out, setup["full"]) <= 1e-6
    assert not (checkpoints / ".checkpoint-6.partial").exists()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated weights": (lambda c: _truncate(c / "model.safetensors"), "its weights cannot be read"),
    "truncated optimizer": (lambda c: _truncate(c / "optimizer.pt"), "optimizer.pt is truncated or damaged"),
    "truncated rng state": (lambda c: _truncate(c / "rng_state.pth"), "rng_state.pth is truncated or damaged"),
    "corrupt trainer state": (
        lambda c: (c / "trainer_state.json").write_text("{not json"),
        "trainer_state.json cannot be read",
    ),
    "empty directory": (
        lambda c: [shutil.rmtree(p) if p.is_dir() else p.unlink() for p in c.iterdir()],
        "no trainer_state.json",
    ),
}


def test_damaged_checkpoints_are_named_and_passed_over(setup: dict[str, Path], tmp_path: Path) -> None:
    source = setup["full"].with_name("full.checkpoints") / "checkpoint-4"
    assert damage(source, 4) is None
    for case, (spoil, reason) in DAMAGE.items():
        directory = tmp_path / case.replace(" ", "-")
        shutil.copytree(source, directory / "checkpoint-4")
        shutil.copytree(source, directory / "checkpoint-6")
        state = json.loads((directory / "checkpoint-6" / "trainer_state.json").read_text())
        (directory / "checkpoint-6" / "trainer_state.json").write_text(json.dumps({**state, "global_step": 6}))
        spoil(directory / "checkpoint-6")
        point = resume_point(directory)
        assert (point.path.name, point.skipped) == ("checkpoint-4", (("checkpoint-6", point.skipped[0][1]),)), case
        assert reason in point.skipped[0][1], (case, point.skipped)
        spoil(directory / "checkpoint-4")  # nothing complete left: one line naming both
        with pytest.raises(mote_convert.MoteError, match=f"no complete checkpoint in {directory}"):
            resume_point(directory)


def _foreign_checkpoint(setup: dict[str, Path], tmp_path: Path, **dense: int) -> Path:
    """A Trainer-style checkpoint directory of another model (the checkpoint's shape of files)."""
    other = build_tiny_llava(tmp_path / "other-dense", vocab_size=TINY_VOCAB_WITH_PROCESSOR, **dense)
    num_experts = dense.pop("num_experts", 4) if "num_experts" in dense else 4
    checkpoints = tmp_path / "foreign"
    ckpt = mote_convert.upcycle(other, checkpoints / "checkpoint-2", latent=True, num_experts=num_experts).output
    source = setup["full"].with_name("full.checkpoints") / "checkpoint-2"
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        shutil.copy2(source / name, ckpt / name)
    return checkpoints


@pytest.mark.parametrize(
    ("other", "needle"),
    [
        ({"hidden_size": 32}, "router.weight is [4, 32], the model's is [4, 64]"),
        ({"num_layers": 3}, "its layer_prefixes is"),
    ],
)
def test_a_checkpoint_of_another_model_is_refused_before_training(
    setup: dict[str, Path], tmp_path: Path, other: dict, needle: str
) -> None:
    checkpoints = _foreign_checkpoint(setup, tmp_path, **other)
    out = tmp_path / "out"
    result = runner.invoke(app, train_args(setup, out, "--resume", "--checkpoints", str(checkpoints)))
    assert_one_line_error(result, 8, needle)
    assert "is a checkpoint of another model" in result.stderr
    assert not out.exists() and sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2"]


def test_another_expert_count_is_refused_before_training(setup: dict[str, Path], tmp_path: Path) -> None:
    checkpoints = tmp_path / "eight"
    ckpt = mote_convert.upcycle(setup["dense"], checkpoints / "checkpoint-2", latent=True, num_experts=8).output
    source = setup["full"].with_name("full.checkpoints") / "checkpoint-2"
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        shutil.copy2(source / name, ckpt / name)
    result = runner.invoke(
        app,
        train_args(
            setup,
            tmp_path / "out",
            "--resume",
            "--checkpoints",
            str(checkpoints),
        ),
    )
    assert_one_line_error(result, 8, "its num_experts is 8, the model's is 4")


def test_load_trainable_is_strict_and_exact(setup: dict[str, Path]) -> None:
    from mote_convert.modeling.load import load_trainable

    checkpoint = setup["full"].with_name("full.checkpoints") / "checkpoint-4"
    model = mote_convert.load_model(setup["mote"], mode="train")
    assert load_trainable(model, checkpoint) == sum(p.requires_grad for p in model.parameters())
    saved = read_all(checkpoint)
    routers = {n: p for n, p in model.named_parameters() if n.endswith("router.weight")}
    assert routers
    for name, param in routers.items():  # in memory model.language_model.*, on disk language_model.model.*
        disk = name.replace("model.language_model.", "language_model.model.")
        assert torch.equal(param.detach(), saved[disk].to(param.dtype))
    with pytest.raises(mote_convert.MoteError, match="not a checkpoint of this model: it has no"):
        load_trainable(model, setup["dense"])
