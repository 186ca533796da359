"""`mote-convert train` end to end on a tiny upcycled LLaVA and a generated LLaVA-format dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from mote_convert.tiny import TINY_VOCAB_WITH_PROCESSOR, build_tiny_dataset, build_tiny_llava, build_tiny_processor
from mote_convert.train.recipe import load_train_recipe
from mote_convert.train.run import train
from tests.helpers import assert_one_line_error, torchrun_cli, train_args, training_setup

runner = CliRunner()
RECIPE = """\
learning_rate: 3.0e-3
max_steps: 16
global_batch_size: 8
per_device_batch_size: 4
save_steps: 8
bf16: true  # bf16 autocast on every CPU (auto decides by its instructions): the engines' bf16 paths everywhere
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return training_setup(tmp_path_factory.mktemp("train"), RECIPE)


def _log(checkpoint: Path) -> list[dict]:
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


def _generates(out: Path, data: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor

    model = mote_convert.load_model(out, mode="packed")
    processor = AutoProcessor.from_pretrained(out)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[Image.open(data.parent / "images" / "0.png")], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert (
        generated.shape[1] == inputs["input_ids"].shape[1] + 4 or generated[0, -1] == processor.tokenizer.eos_token_id
    )
    # greedy decoding is the argmax of a full forward at each step (no cache): what generate returned
    ids = inputs["input_ids"]
    with torch.no_grad():
        for _ in range(generated.shape[1] - ids.shape[1]):
            logits = model(
                input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"]
            ).logits
            ids = torch.cat([ids, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    assert torch.equal(ids, generated)


def test_train_one_process_then_resume(setup: dict[str, Path]) -> None:
    from huggingface_hub import ModelCard

    card = ModelCard.load(setup["mote"] / "README.md")  # as if up-cycled from a Hub repo
    card.data.base_model = "org/tiny-dense"
    card.save(setup["mote"] / "README.md")
    out = setup["root"] / "trained"
    result = runner.invoke(app, train_args(setup, out))
    assert result.exit_code == 0, result.output
    assert "16/16 steps" in result.output and "1 x 2" in result.output  # 1 process x 2 accumulation steps
    log = [e for e in _log(setup["root"] / "trained.checkpoints" / "checkpoint-16") if "loss" in e]
    assert len(log) == 16 and sum(e["loss"] for e in log[-4:]) < sum(e["loss"] for e in log[:4]) - 0.2
    report = mote_convert.inspect_checkpoint(out)
    assert report.ok and report.mote.expert_format == "packed-2bit"
    trained_card = ModelCard.load(out / "README.md")  # the published card keeps the base model
    assert trained_card.data.base_model == "org/tiny-dense" and "`packed-2bit`" in trained_card.text
    _generates(out, setup["data"])
    # only routers and experts moved: the shared experts are the dense FFNs, byte for byte
    from tests.helpers import read_all

    dense, trained = read_all(setup["dense"]), read_all(out)
    ffn = [n for n in dense if ".mlp." in n and "language_model" in n]
    assert ffn and all(torch.equal(dense[n], trained[n]) for n in ffn)
    # what was published is the training's result: pack of the final latent weights, not the input
    packed_final = mote_convert.pack(
        setup["root"] / "trained.checkpoints" / "final-latent", setup["root"] / "packed-final"
    ).output
    expected, untrained = read_all(packed_final), read_all(setup["mote"])
    assert trained.keys() == expected.keys() and all(torch.equal(trained[n], expected[n]) for n in trained)
    routers = [n for n in trained if n.endswith(".router.weight")]
    assert routers and all(float((trained[n] - untrained[n]).abs().max()) > 1e-3 for n in routers)
    # resume: continues from checkpoint-16 to step 20
    result = runner.invoke(app, train_args(setup, out, "--resume", "--max-steps", "20", "--overwrite"))
    assert result.exit_code == 0, result.output
    log = _log(setup["root"] / "trained.checkpoints" / "checkpoint-20")
    steps = [e["step"] for e in log if "loss" in e]
    assert steps[-1] == 20 and steps[:16] == list(range(1, 17))
    assert mote_convert.inspect_checkpoint(out).ok


def test_train_refusals(setup: dict[str, Path]) -> None:
    dense_args = train_args(setup, setup["root"] / "x")
    dense_args[1] = str(setup["dense"])
    assert_one_line_error(runner.invoke(app, dense_args), 8, "is not a MoTE checkpoint")
    assert_one_line_error(
        runner.invoke(app, train_args(setup, setup["root"] / "y", "--resume")), 3, "no checkpoint-* in"
    )
    assert_one_line_error(
        runner.invoke(app, train_args(setup, setup["root"] / "z", "--global-batch-size", "6")),
        2,
        "global_batch_size 6 is not a multiple",
    )
    assert not (setup["root"] / "x").exists() and not (setup["root"] / "z").exists()


@pytest.mark.parametrize(
    ("name", "content", "code", "needle"),
    [
        ("tokenizer.json", "{not json", 4, "tokenizer.json: not valid JSON"),
        ("generation_config.json", "[1]", 4, "generation_config.json: must hold a JSON object, not a list"),
        ("tokenizer.json", "{}", 4, "transformers cannot load the processor (KeyError"),
        (
            "chat_template.jinja",
            "{{ messages[0]['role'] }}",
            14,
            "record '0' cannot be encoded with the model's processor",
        ),
    ],
)
def test_train_refuses_broken_tokenizer_files_in_one_line(
    setup: dict[str, Path], tmp_path: Path, name: str, content: str, code: int, needle: str
) -> None:
    import shutil

    broken = tmp_path / "mote"
    shutil.copytree(setup["mote"], broken)
    (broken / name).write_text(content)
    args = train_args(setup, tmp_path / "out")
    args[1] = str(broken)
    assert_one_line_error(runner.invoke(app, args), code, needle)
    assert not (tmp_path / "out").exists()


def test_train_refuses_a_config_transformers_cannot_build_in_one_line(setup: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "mote"
    shutil.copytree(setup["mote"], broken)
    config = json.loads((broken / "config.json").read_text())
    config["text_config"]["rope_parameters"]["rope_type"] = (
        0  # a value of a kind transformers' RoPE table has no entry for
    )
    (broken / "config.json").write_text(json.dumps(config))
    args = train_args(setup, tmp_path / "out")
    args[1] = str(broken)
    # found before the model loads: the architecture's discovery builds the skeleton from it
    assert_one_line_error(runner.invoke(app, args), 5, "transformers cannot build LlavaForConditionalGeneration")
    assert not (tmp_path / "out").exists()


@pytest.mark.distributed
@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3"])
def test_train_two_processes_under_torchrun(setup: dict[str, Path], engine: str) -> None:
    """DDP by torchrun alone; DeepSpeed ZeRO-2 / ZeRO-3 with the shipped configs, bf16 (the recipe's)."""
    from mote_convert.resources import launch_dir

    out = setup["root"] / f"trained-{engine}"
    extra = ["--deepspeed", str(launch_dir() / f"{engine}.json")] if engine != "ddp" else []
    cmd = torchrun_cli(*train_args(setup, out, "--max-steps", "8", *extra))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 x 1" in proc.stdout  # 2 processes x 1 accumulation step = the same global batch of 8
    log = [e for e in _log(setup["root"] / f"trained-{engine}.checkpoints" / "checkpoint-8") if "loss" in e]
    assert len(log) == 8 and log[-1]["loss"] < log[0]["loss"]
    assert mote_convert.inspect_checkpoint(out).ok
    _generates(out, setup["data"])


@pytest.mark.distributed
def test_deepspeed_in_one_process_without_a_launcher(setup: dict[str, Path]) -> None:
    """``--deepspeed`` with no torchrun: rank 0 of 1 on a free local port, not DeepSpeed's MPI discovery."""
    from mote_convert.resources import launch_dir

    out = setup["root"] / "trained-zero2-alone"
    cmd = [
        sys.executable,
        "-m",
        "mote_convert.cli",
        *train_args(setup, out, "--max-steps", "2", "--deepspeed", str(launch_dir() / "zero2.json")),
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    proc = subprocess.run(
        cmd, env={**env, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert mote_convert.inspect_checkpoint(out).ok


def test_a_deepspeed_config_that_is_not_a_json_object_is_refused_in_one_line(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "ds.json"
    config.write_text("[1]")
    result = runner.invoke(app, train_args(setup, tmp_path / "out", "--deepspeed", str(config)))
    assert_one_line_error(result, 2, f"deepspeed config {config}: must hold a JSON object, not a list")
    assert not (tmp_path / "out").exists()


def test_training_in_bf16_changes_only_routers_and_experts(tmp_path: Path) -> None:
    """A bf16 checkpoint (as real ones are): every tensor outside the routers and routed experts (attention,
    embeddings, norms, shared experts, vision tower, projector) comes out byte- and dtype-identical, and
    the input directory is unchanged."""
    from tests.conftest import tree_digest
    from tests.helpers import read_all

    dense = build_tiny_llava(tmp_path / "dense", vocab_size=TINY_VOCAB_WITH_PROCESSOR, dtype=torch.bfloat16)
    build_tiny_processor(dense)
    mote = mote_convert.upcycle(dense, tmp_path / "mote").output
    data = build_tiny_dataset(tmp_path / "data")
    (tmp_path / "r.yaml").write_text(
        "learning_rate: 3.0e-3\nmax_steps: 2\nglobal_batch_size: 8\nper_device_batch_size: 4\nwarmup_ratio: 0\n"
    )
    before = tree_digest(mote)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "train",
            str(mote),
            "--data",
            str(data),
            "--image-folder",
            str(data.parent),
            "-o",
            str(out),
            "--recipe",
            str(tmp_path / "r.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert tree_digest(mote) == before
    source, trained = read_all(mote), read_all(out)
    assert source.keys() == trained.keys()
    moving = [n for n in source if n.endswith(".router.weight") or ".experts." in n]
    frozen = [n for n in source if n not in moving]
    assert {source[n].dtype for n in frozen} == {torch.bfloat16}
    for name in frozen:
        assert trained[name].dtype == source[name].dtype and torch.equal(trained[name], source[name]), name
    assert any(not torch.equal(trained[n], source[n]) for n in moving if n.endswith(".router.weight"))


def test_the_recipes_load_balancing_coefficient_reaches_the_loss(setup: dict[str, Path], tmp_path: Path) -> None:
    """The logged loss of the same first step with coefficient 1000 and 0 differs by 1000 x the summed
    L_aux of the two layers (each between 1 and N = 4 for top-1 routing), not by nothing."""
    losses = {}
    for coef in (0, 1000):
        recipe = tmp_path / f"r{coef}.yaml"
        recipe.write_text(
            f"learning_rate: 1.0e-3\nmax_steps: 2\nglobal_batch_size: 8\nper_device_batch_size: 4\n"
            f"warmup_ratio: 0\nrouter_aux_loss_coef: {coef}\n"
        )
        result = train(
            setup["mote"],
            setup["data"],
            tmp_path / f"out{coef}",
            image_folder=setup["data"].parent,
            recipe=load_train_recipe(recipe),
        )
        losses[coef] = result.losses[0]
    aux = (losses[1000] - losses[0]) / 1000
    assert 2 * 0.9 <= aux <= 2 * 4, losses


@pytest.mark.distributed
def test_two_processes_train_what_one_process_trains(setup: dict[str, Path], tmp_path: Path) -> None:
    """DDP on 2 processes (2 x 1 micro-batches) and one process (1 x 2 accumulated) make the same
    global batches: float32, the trained latent weights agree (not only the loss falling)."""
    recipe = tmp_path / "fp32.yaml"
    recipe.write_text(
        "learning_rate: 3.0e-3\nmax_steps: 4\nglobal_batch_size: 8\nper_device_batch_size: 4\n"
        "warmup_ratio: 0\nbf16: false\nexpert_format: latent\n"
    )
    fp32 = {**setup, "recipe": recipe}
    result = runner.invoke(app, train_args(fp32, tmp_path / "one"))
    assert result.exit_code == 0, result.output
    cmd = torchrun_cli(*train_args(fp32, tmp_path / "two"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from tests.helpers import read_all

    one, two, start = read_all(tmp_path / "one"), read_all(tmp_path / "two"), read_all(setup["mote"])
    moving = [n for n in one if n.endswith(".router.weight") or ".experts." in n]
    assert one.keys() == two.keys() and moving
    for name in one:
        # float32 sums in another order, which AdamW's normalisation magnifies for gradients near 0: 1e-5,
        # against 3e-3 per step of movement
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-5)
    assert all(float((one[n] - start[n]).abs().max()) > 1e-3 for n in moving if n.endswith(".router.weight"))


def test_train_from_a_repo_id_reports_to_tensorboard_and_draws_its_loss(
    setup: dict[str, Path], offline_cache: Path
) -> None:
    """A Hub repo id trains as its directory does (same losses); ``--report-to tensorboard`` logs what
    the Trainer logged (read back with TensorBoard's own reader); ``OUT.loss.png`` is the curve;
    ``--json`` names every applied option."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.helpers import hub_cache

    hub_cache(offline_cache, "org/tiny-mote", setup["mote"])
    runs = {}
    for name, model in (("from-dir", str(setup["mote"])), ("from-hub", "org/tiny-mote")):
        out = setup["root"] / name
        args = train_args(setup, out, "--max-steps", "4", "--report-to", "tensorboard", "--json")
        args[1] = model
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout)
    data = runs["from-hub"]
    assert data["losses"] == runs["from-dir"]["losses"] and len(data["losses"]) == 4
    logged = [e for e in _log(setup["root"] / "from-hub.checkpoints" / "checkpoint-4") if "loss" in e]
    assert [(e["step"], e["loss"]) for e in logged] == [(p["step"], p["loss"]) for p in data["losses"]]
    recipe = data["recipe"]
    assert (recipe["learning_rate"], recipe["global_batch_size"], recipe["report_to"]) == (3e-3, 8, ["tensorboard"])
    assert data["bf16"] is True and data["processes"] == 1 and data["accumulation_steps"] == 2

    events = list((setup["root"] / "from-hub.checkpoints" / "runs").rglob("events.out.tfevents.*"))
    assert len(events) == 1
    board = EventAccumulator(str(events[0].parent))
    board.Reload()
    scalars = [(s.step, s.value) for s in board.Scalars("train/loss")]
    assert [s for s, _ in scalars] == [1, 2, 3, 4]
    assert all(abs(v - p["loss"]) < 1e-5 for (_, v), p in zip(scalars, data["losses"], strict=True))

    curve = Path(data["loss_curve"])
    assert curve == setup["root"] / "from-hub.loss.png"
    with Image.open(curve) as picture:
        assert picture.format == "PNG" and picture.size == (600, 350)
        colors = picture.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colors is not None and len(colors) > 20  # axes, labels and the line, not a blank canvas
