"""lmms-eval's model type ``mote``: lmms-eval itself scores an image task on the MoTE model.

The real ``lmms-eval`` command (``--model mote``, found through the package's entry point) runs a
local image task (JSON lines, PNG files and a task YAML, nothing downloaded). The oracle is
``mote_convert.generate`` (``load_model``, the model's chat template, greedy) on the same items:
lmms-eval's logged answers must be its answers (stripped, as lmms-eval's tasks strip every answer), and
its exact-match score their share that equal the targets. Half the targets are the MoTE model's own answers, so the score is far from 0, and the dense
model (what lmms-eval's own model types load from a MoTE checkpoint) scores differently. Run by
``scripts/test_lmms_eval.sh``, which installs lmms-eval in an environment of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import mote_convert
from tests.helpers import vlm_with_experts_that_matter
from tests.test_docs import BLOCK, ROOT

pytestmark = pytest.mark.lmms_eval
pytest.importorskip("lmms_eval")

TASK = """\
task: tiny_pictures
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: generate_until
doc_to_visual: !function pictures_utils.doc_to_visual
doc_to_text: "What color is this?"
doc_to_target: "answer"
generation_kwargs:
  max_new_tokens: 6
  temperature: 0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
# lm-eval's names for the same settings, and a stop string (a character of the first answer)
TASK_CUT = """\
task: tiny_pictures_cut
include: tiny_pictures.yaml
generation_kwargs:
  max_gen_toks: 6
  until: [{stop}]
"""
UTILS = """\
from PIL import Image


def doc_to_visual(doc):
    with Image.open(doc["image"]) as image:
        return [image.convert("RGB")]
"""
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lmms")
    models = vlm_with_experts_that_matter(root)
    tasks = root / "tasks"
    tasks.mkdir()
    items, raw = [], []
    for i, (name, rgb) in enumerate(sorted(COLORS.items()) * 2):
        path = root / f"{i}.png"
        Image.new("RGB", (16, 16), tuple(min(255, c + 9 * i) for c in rgb)).save(path)
        raw.append(mote_convert.generate(models["mote"], "What color is this?", image=path, max_new_tokens=6).text)
        items.append({"image": str(path), "answer": raw[-1].strip() if i % 2 == 0 else name})
    (tasks / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    (tasks / "tiny_pictures.yaml").write_text(TASK.format(items=tasks / "items.jsonl"))
    stop = raw[0].strip()[len(raw[0].strip()) // 2]
    (tasks / "tiny_pictures_cut.yaml").write_text(TASK_CUT.format(stop=json.dumps(stop)))
    (tasks / "stop").write_text(stop)
    (tasks / "pictures_utils.py").write_text(UTILS)
    return {**models, "tasks": tasks, "items": tasks / "items.jsonl", "root": root}


TASKS = ("tiny_pictures", "tiny_pictures_cut")


def run(
    model: Path, tasks: Path, out: Path, launcher: tuple[str, ...] = ("lmms-eval",)
) -> dict[str, tuple[list[str], float]]:
    """Per task: (each item's logged answer, in item order; the exact-match score) of one lmms-eval run."""
    command = [
        *launcher,
        *("eval", "--model", "mote", "--model_args", f"pretrained={model}", "--tasks", ",".join(TASKS)),
        *("--include_path", str(tasks), "--log_samples", "--output_path", str(out)),
    ]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "Error during evaluation" not in result.stdout, (
        result.stdout[-3000:] + result.stderr[-3000:]
    )
    (results_file,) = out.glob("*/*_results.json")
    results = json.loads(results_file.read_text())["results"]
    found = {}
    for task in TASKS:
        (samples_file,) = out.glob(f"*/*_samples_{task}.jsonl")
        samples = sorted(
            (json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"]
        )
        answers = [r if isinstance(r, str) else r[0] for r in (s["filtered_resps"] for s in samples)]
        found[task] = (answers, results[task]["exact_match,none"])
    return found


def test_lmms_eval_scores_the_mote_model(setup: dict[str, Path]) -> None:
    items = [json.loads(line) for line in setup["items"].read_text().splitlines()]
    stop = (setup["tasks"] / "stop").read_text()
    scores, answers = {}, {}
    for kind in ("mote", "dense"):
        found = run(setup[kind], setup["tasks"], setup["root"] / f"out-{kind}")
        raw = [
            mote_convert.generate(setup[kind], "What color is this?", image=i["image"], max_new_tokens=6) for i in items
        ]
        for task, cut in (("tiny_pictures", None), ("tiny_pictures_cut", stop)):
            # the answers of load_model (or the dense class), greedy, in the chat template, cut at the stop
            want = [r.text.split(cut, 1)[0].strip() if cut else r.text.strip() for r in raw]
            assert found[task][0] == want, task
            right = [w == i["answer"] for w, i in zip(want, items, strict=True)]
            assert found[task][1] == pytest.approx(sum(right) / len(right)), task
        answers[kind], scores[kind] = found["tiny_pictures"]
        if kind == "mote":  # the stop string is in the first answer: the cut made a difference
            assert found["tiny_pictures_cut"][0][0] != found["tiny_pictures"][0][0]
    assert scores["mote"] >= 0.5 and answers["mote"] != answers["dense"]
    assert scores["dense"] != scores["mote"]  # what lmms-eval's own model types would have reported


def test_processes_answer_their_share(setup: dict[str, Path]) -> None:
    """Two processes under torchrun (gloo on a CPU) give one process's answers and score."""
    one = run(setup["mote"], setup["tasks"], setup["root"] / "out-one")
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lmms_eval")
    assert run(setup["mote"], setup["tasks"], setup["root"] / "out-two", launcher=torchrun) == one


def test_unknown_model_args_are_named(setup: dict[str, Path]) -> None:
    bad = subprocess.run(
        [*("lmms-eval", "eval", "--model", "mote", "--model_args", f"pretrained={setup['mote']},colour=red")]
        + ["--tasks", "tiny_pictures", "--include_path", str(setup["tasks"])],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "unknown model_args for mote: colour" in bad.stdout + bad.stderr


def test_the_docs_lmms_eval_block_runs(tmp_path: Path) -> None:
    """docs/evaluate.md's lmms-eval commands, run as written after the page's first block (the
    tiny model it scores), in a fresh directory of this environment."""
    text = (ROOT / "docs" / "evaluate.md").read_text()
    found = [m for m in BLOCK.finditer(text) if m["lang"] == "bash"]
    first, lmms = found[0]["code"], [m["code"] for m in found if m["skip"] and "test_lmms_model" in m["skip"]]
    assert len(lmms) == 1, "docs/evaluate.md has one lmms-eval block, marked as run by this test"
    env = {**ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{ENV['PATH']}"}
    for code in (first, lmms[0]):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "mote (pretrained=tiny-vlm-mote)" in result.stdout and "|pictures" in result.stdout.replace(" ", "")
    assert list((tmp_path / "lmms-results").glob("*/*_results.json"))
