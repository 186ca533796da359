"""`train` refuses what cannot work before the work, stops what goes wrong during it, and leaves
nothing half-written: each finding of the audit, reproduced, with the behaviour a user gets now."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from mote_convert.train.checkpoints import CheckpointsLock, damage
from tests.conftest import tree_digest
from tests.helpers import assert_one_line_error, leftovers, training_setup

runner = CliRunner()
RECIPE = {"learning_rate": 3.0e-3, "max_steps": 2, "global_batch_size": 8, "per_device_batch_size": 4, "save_steps": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return training_setup(tmp_path_factory.mktemp("refusals"))


def _recipe(tmp_path: Path, **values: object) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **values}))
    return path


def _args(s: dict[str, Path], out: Path, recipe: Path, *extra: str, data: Path | None = None) -> list[str]:
    data = data or s["data"]
    return [
        "train",
        str(s["mote"]),
        "--data",
        str(data),
        "--image-folder",
        str(s["data"].parent),
        "-o",
        str(out),
        "--recipe",
        str(recipe),
        *extra,
    ]


def _records(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path


def test_a_non_finite_gradient_stops_training_with_an_error(setup: dict[str, Path], tmp_path: Path) -> None:
    before = tree_digest(setup["mote"])
    out = tmp_path / "out"
    result = runner.invoke(app, _args(setup, out, _recipe(tmp_path, router_aux_loss_coef=1e300)))
    assert_one_line_error(result, 15, "step 1: the gradient norm is")
    assert "training stopped before the optimizer step" in result.stderr
    assert not out.exists() and not (tmp_path / "out.checkpoints" / "checkpoint-1").exists()
    assert tree_digest(setup["mote"]) == before


def test_max_length_that_cuts_every_answer_is_refused(setup: dict[str, Path], tmp_path: Path) -> None:
    long_prompt = "Please answer the following question after reading all of this text. " * 4
    data = _records(
        tmp_path,
        [
            {"id": i, "conversations": [{"from": "human", "value": long_prompt}, {"from": "gpt", "value": "hello"}]}
            for i in range(8)
        ],
    )
    result = runner.invoke(app, _args(setup, tmp_path / "out", _recipe(tmp_path, max_length=16), data=data))
    assert_one_line_error(result, 14, "no record keeps any answer token within max_length 16")


def test_one_step_at_zero_learning_rate_is_refused(setup: dict[str, Path], tmp_path: Path) -> None:
    """32 records at the default global batch of 128 make one optimizer step, which warm-up puts at 0."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("per_device_batch_size: 4\n")
    result = runner.invoke(app, _args(setup, tmp_path / "out", recipe))
    assert_one_line_error(result, 2, "this run makes 1 optimizer step (32 records, global_batch_size 128)")


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"epochs": 0, "max_steps": -1}, "epochs must be above 0"),
        ({"seed": 1099511627776}, "seed must be at most 4294967295"),
    ],
)
def test_recipe_values_that_train_nothing_or_fail_later_are_refused(
    setup: dict[str, Path], tmp_path: Path, values: dict, needle: str
) -> None:
    assert_one_line_error(runner.invoke(app, _args(setup, tmp_path / "out", _recipe(tmp_path, **values))), 2, needle)


def test_checkpoints_and_outputs_never_inside_the_input(setup: dict[str, Path], tmp_path: Path) -> None:
    before = tree_digest(setup["mote"])
    recipe = _recipe(tmp_path)
    out = tmp_path / "out"
    assert_one_line_error(
        runner.invoke(app, _args(setup, out, recipe, "--checkpoints", str(setup["mote"]))), 7, "overlaps the input"
    )
    assert_one_line_error(
        runner.invoke(app, _args(setup, out, recipe, "--checkpoints", str(setup["mote"] / "ck"))),
        7,
        "overlaps the input",
    )
    assert_one_line_error(
        runner.invoke(app, _args(setup, out, recipe, "--checkpoints", str(out))), 7, "overlaps the output"
    )
    model = mote_convert.load_model(setup["mote"], mode="packed")
    with pytest.raises(mote_convert.MoteError, match="overlaps the input"):
        mote_convert.save_model(model, setup["mote"] / "sub")
    assert tree_digest(setup["mote"]) == before and not out.exists()


def test_unwritable_places_are_refused_before_training(setup: dict[str, Path], tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert_one_line_error(
        runner.invoke(app, _args(setup, a_file / "out", recipe)), 12, f"{a_file}: cannot write output there"
    )
    assert_one_line_error(
        runner.invoke(app, _args(setup, tmp_path / "out", recipe, "--checkpoints", str(a_file))), 12, "not a directory"
    )
    assert a_file.read_text() == "x"


def test_a_read_only_directory_is_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, permission bits do not stop a write: the check tries one, as a read-only mount refuses it."""
    import errno

    from mote_convert.io import staging as writer

    real_open = os.open

    def read_only(path, flags, *args):  # noqa: ANN001, ANN202
        if ".mote-write-probe-" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(writer.os, "open", read_only)
    with pytest.raises(
        mote_convert.MoteError,
        match=rf"{tmp_path}: cannot create entries in the directory of the output \(Read-only file system\)",
    ):
        writer.check_output_path(tmp_path / "out", overwrite=False)


def test_a_second_run_into_the_same_checkpoints_is_refused_at_once(setup: dict[str, Path], tmp_path: Path) -> None:
    checkpoints = tmp_path / "shared.checkpoints"
    with CheckpointsLock(checkpoints):
        result = runner.invoke(
            app, _args(setup, tmp_path / "out", _recipe(tmp_path), "--checkpoints", str(checkpoints))
        )
    assert_one_line_error(result, 7, "another mote-convert run is writing this output right now")
    assert not (tmp_path / "out").exists() and not checkpoints.exists()


def test_images_outside_the_image_folder_need_an_opt_in(setup: dict[str, Path], tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes((setup["data"].parent / "images" / "0.png").read_bytes())
    for image in ("../" * 8 + str(outside).lstrip("/"), str(outside)):
        data = _records(
            tmp_path,
            [
                {
                    "id": "x",
                    "image": image,
                    "conversations": [
                        {"from": "human", "value": "<image>\nWhat color?"},
                        {"from": "gpt", "value": "red"},
                    ],
                }
            ]
            * 8,
        )
        result = runner.invoke(app, _args(setup, tmp_path / "out", _recipe(tmp_path), data=data))
        assert_one_line_error(result, 14, "is outside --image-folder")
    result = runner.invoke(app, _args(setup, tmp_path / "out", _recipe(tmp_path), "--allow-images-outside", data=data))
    assert result.exit_code == 0, result.output


def test_unusable_image_paths_and_huge_images_are_one_line(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _records(
        tmp_path,
        [
            {
                "id": "long",
                "image": "x" * 5000 + ".png",
                "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "red"}],
            }
        ],
    )
    line = assert_one_line_error(
        runner.invoke(app, _args(setup, tmp_path / "out", _recipe(tmp_path), data=data)), 14, "File name too long"
    )
    assert len(line) < 400
    from PIL import Image

    for limit in (200, 100):  # PIL warns past its limit (refused here, not printed), and refuses past twice it
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)  # the tiny images have 16 x 16 pixels
        result = runner.invoke(app, _args(setup, tmp_path / "out", _recipe(tmp_path)))
        assert_one_line_error(result, 14, "images/0.png: Image size (256 pixels) exceeds limit of")
        assert "DecompressionBomb" not in result.output


def test_a_huge_answer_is_cut_before_tokenizing_and_the_tokens_kept_are_the_same(setup: dict[str, Path]) -> None:
    from transformers import AutoProcessor

    from mote_convert.train.data import ConversationDataset, Record

    processor = AutoProcessor.from_pretrained(setup["mote"])
    dataset = ConversationDataset([], processor, max_length=64)
    calls: list[int] = []
    tokenizer_call = type(processor.tokenizer).__call__

    def counting(self, text, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(len(text[0] if isinstance(text, list) else text))
        return tokenizer_call(self, text, *args, **kwargs)

    answer = "red green blue " * 140_000  # 2.1 MB
    record = Record("big", None, (("user", "Say the colors."), ("assistant", answer)))
    type(processor.tokenizer).__call__ = counting
    try:
        item = dataset._encode(record)
    finally:
        type(processor.tokenizer).__call__ = tokenizer_call
    assert max(calls) <= dataset.max_chars + 200  # the template's own text besides
    # the oracle: the same record encoded with no cut at all, on a shorter answer that still overflows
    uncut = ConversationDataset([], processor, max_length=64)
    uncut.max_chars = 10**9
    short = Record("short", None, (("user", "Say the colors."), ("assistant", answer[: 3 * dataset.max_chars])))
    cut, whole = dataset._encode(short), uncut._encode(short)
    assert torch.equal(cut["input_ids"], whole["input_ids"]) and torch.equal(cut["labels"], whole["labels"])
    assert torch.equal(item["input_ids"], whole["input_ids"]) and item["input_ids"].numel() == 64


@pytest.mark.parametrize("failing", ["optimizer.pt", "model.safetensors"])
def test_disk_full_during_a_checkpoint_save_is_an_output_error(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """torch.save fails with ENOSPC; safetensors with its own SafetensorError: both are one output error."""
    import errno

    import transformers.modeling_utils
    from safetensors import SafetensorError

    real_save, real_save_file = torch.save, transformers.modeling_utils.safe_save_file

    def full_torch(obj, f, *args, **kwargs):  # noqa: ANN001, ANN202
        if str(f).endswith(failing):
            Path(f).write_bytes(b"PK")  # a few bytes made it, then the disk was full
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    def full_safetensors(tensors, filename, *args, **kwargs):  # noqa: ANN001, ANN202
        if str(filename).endswith(failing):
            Path(filename).write_bytes(b"\x08")
            raise SafetensorError("Error while serializing: No space left on device (os error 28)")
        return real_save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_torch)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_safetensors)
    out = tmp_path / "out"
    result = runner.invoke(app, _args(setup, out, _recipe(tmp_path)))
    assert_one_line_error(result, 12, "checkpoint-1: cannot write the checkpoint (")
    assert "No space left on device" in result.stderr
    checkpoints = tmp_path / "out.checkpoints"
    assert not out.exists() and not list(checkpoints.iterdir()) and not leftovers(tmp_path)


def test_a_flag_of_the_wrong_kind_is_one_line(setup: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, _args(setup, tmp_path / "out", _recipe(tmp_path), "--max-steps", "many"))
    assert_one_line_error(result, 2, "Invalid value for '--max-steps'")


def _train_command(s: dict[str, Path], out: Path, recipe: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mote_convert.cli", *_args(s, out, recipe, *extra)]


def test_signals_at_random_points_leave_whole_checkpoints_and_resume_works(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    """SIGTERM or SIGINT at seeded random moments of a run that saves every step: every checkpoint-N
    left is complete, no staging directory survives, the message is one line, and --resume ends the run."""
    recipe = _recipe(tmp_path, max_steps=12, save_steps=1, save_total_limit=2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    rng = random.Random(19)
    stopped = []
    for trial in range(3):
        out = tmp_path / f"out{trial}"
        checkpoints = tmp_path / f"out{trial}.checkpoints"
        proc = subprocess.Popen(
            _train_command(setup, out, recipe), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        while not (checkpoints.exists() and any(checkpoints.iterdir())) and proc.poll() is None:
            time.sleep(0.01)  # training has begun: the first save is under way or done
        time.sleep(rng.uniform(0.0, 0.6))
        signum = rng.choice([signal.SIGTERM, signal.SIGINT])
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
        if proc.returncode == 0 or out.exists():
            # the run finished before the signal, or the signal landed after the output was renamed
            # into place (while the summary printed or the interpreter shut down): a complete output
            assert proc.returncode in (0, -signum, 128 + signum), stderr
            assert mote_convert.inspect_checkpoint(out).ok and not leftovers(tmp_path)
            continue
        assert proc.returncode == 128 + signum, stderr
        stopped.append(sorted(p.name for p in checkpoints.iterdir()))
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "interrupted by" in errors[0] and "Traceback" not in stderr, stderr
        names = sorted(p.name for p in checkpoints.iterdir())
        assert all(n.startswith("checkpoint-") for n in names), names  # no staging directory left
        assert all(damage(checkpoints / n, int(n.split("-")[1])) is None for n in names), names
        assert not out.exists() and not leftovers(tmp_path)
        resumed = subprocess.run(
            _train_command(setup, out, recipe, *(("--resume",) if names else ())),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert mote_convert.inspect_checkpoint(out).ok
    assert len(stopped) >= 2, stopped  # the seeded moments fall inside the runs
