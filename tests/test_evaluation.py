"""``mote-convert eval lm-eval``: lm-evaluation-harness itself scores the MoTE model.

A local multiple-choice task (JSON lines and a task YAML, nothing downloaded) is run by the real
``lm_eval`` through the documented command. The oracle is computed here from ``load_model`` directly:
each choice's log-likelihood after the question, as lm-eval defines a multiple-choice item (the
continuation's tokens of ``question + " " + choice``, encoded as the tokenizer does), and accuracy the
share of items whose best choice is the answer. The MoTE checkpoint's experts matter, so the dense
model (what plain ``from_pretrained`` gives) scores differently.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from tests.helpers import assert_one_line_error, vlm_with_experts_that_matter

pytest.importorskip("lm_eval")

runner = CliRunner()
WORDS = ("red", "green", "blue", "yellow", "black", "white")
TASK = """\
task: tiny_words
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
# the same items as one continuation each (the answer): perplexity, a figure that any change of the
# model's function moves
TASK_LL = """\
task: tiny_words_ll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{question}}}}"
doc_to_target: " {{{{choices[answer]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
"""


# an image task: the picture's color, answered after the image (lm-eval's multimodal model)
TASK_IMAGES = """\
task: tiny_colors
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: generate_until
doc_to_image: !function utils.doc_to_image
doc_to_text: "<image>What color is this?"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["</s>"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
"""
IMAGES_UTILS = """\
from PIL import Image


def doc_to_image(doc):
    with Image.open(doc["image"]) as image:
        return [image.convert("RGB")]
"""
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    rng = random.Random(0)
    items = root / "tasks" / "items.jsonl"
    items.parent.mkdir()
    with items.open("w") as f:
        for i in range(40):
            choices = rng.sample(WORDS, 4)
            question = f"Item {i}: the word {rng.choice(WORDS)} is"
            f.write(json.dumps({"question": question, "choices": choices, "answer": rng.randrange(4)}) + "\n")
    (root / "tasks" / "tiny_words.yaml").write_text(TASK.format(items=items))
    (root / "tasks" / "tiny_words_ll.yaml").write_text(TASK_LL.format(items=items))
    images = root / "tasks" / "images.jsonl"
    with images.open("w") as f:
        for i, (name, rgb) in enumerate(sorted(COLORS.items()) * 2):
            path = root / f"{i}.png"
            Image.new("RGB", (16, 16), tuple(min(255, c + 9 * i) for c in rgb)).save(path)
            f.write(json.dumps({"image": str(path), "answer": name}) + "\n")
    (root / "tasks" / "tiny_colors.yaml").write_text(TASK_IMAGES.format(items=images))
    (root / "tasks" / "utils.py").write_text(IMAGES_UTILS)
    return {**vlm_with_experts_that_matter(root), "tasks": root / "tasks", "items": items, "images": images}


def continuation_logprob(model: torch.nn.Module, tokenizer: object, context: str, continuation: str) -> float:
    """log P(continuation | context) as lm-eval defines it for a causal model: the tokens of
    ``context + continuation`` past those of ``context``, each encoded as the tokenizer does (BOS first)."""
    ctx = tokenizer(context)["input_ids"]  # type: ignore[operator]
    whole = tokenizer(context + continuation)["input_ids"]  # type: ignore[operator]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([whole[:-1]])).logits[0].float(), dim=-1)
    return float(logprobs[len(ctx) - 1 :].gather(1, torch.tensor(whole[len(ctx) :])[:, None]).sum())


def oracle(model_dir: Path, items: Path) -> tuple[float, float]:
    """(accuracy of the multiple-choice task, perplexity of the answers) from the model directly."""
    import math

    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if "mote" in json.loads((model_dir / "config.json").read_text()):
        model = mote_convert.load_model(model_dir, mode="packed")
    else:
        model = LlavaForConditionalGeneration.from_pretrained(model_dir)
    correct, answers = [], []
    for line in items.read_text().splitlines():
        item = json.loads(line)
        scores = [continuation_logprob(model, tokenizer, item["question"], " " + c) for c in item["choices"]]
        correct.append(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
        answers.append(scores[item["answer"]])
    return sum(correct) / len(correct), math.exp(-sum(answers) / len(answers))


def lm_eval_scores(model_dir: Path, tasks: Path) -> tuple[str, float, float]:
    """(kind, accuracy, perplexity) as ``mote-convert eval lm-eval --json`` reports them."""
    args = ["eval", "lm-eval", str(model_dir), "--tasks", "tiny_words,tiny_words_ll", "--include-path", str(tasks)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    scores = {(s["task"], s["metric"]): s for s in data["scores"]}
    assert scores[("tiny_words", "acc")]["samples"] == 40 and scores[("tiny_words_ll", "perplexity")]["samples"] == 40
    acc, ppl = scores[("tiny_words", "acc")]["value"], scores[("tiny_words_ll", "perplexity")]["value"]
    assert data["results"]["tiny_words"]["acc,none"] == acc  # the harness's own figures
    assert data["results"]["tiny_words_ll"]["perplexity,none"] == ppl
    return data["kind"], acc, ppl


def test_lm_eval_scores_the_mote_model(setup: dict[str, Path]) -> None:
    kind, acc, ppl = lm_eval_scores(setup["mote"], setup["tasks"])
    want_acc, want_ppl = oracle(setup["mote"], setup["items"])
    assert kind == "mote" and acc == pytest.approx(want_acc, abs=1e-9) and ppl == pytest.approx(want_ppl, rel=1e-4)

    kind, dense_acc, dense_ppl = lm_eval_scores(setup["dense"], setup["tasks"])
    want_acc, want_ppl = oracle(setup["dense"], setup["items"])
    assert kind == "dense" and dense_acc == pytest.approx(want_acc, abs=1e-9)
    assert dense_ppl == pytest.approx(want_ppl, rel=1e-4)
    assert abs(dense_ppl - ppl) > 0.05 * ppl  # what a dense fallback would have reported instead


def test_an_image_task_is_scored_on_the_mote_model(setup: dict[str, Path]) -> None:
    """lm-eval's multimodal model answers each picture as ``generate`` (the model's chat template,
    greedy) does; its exact-match score is the share of those answers that are right."""
    answers = {}
    for kind in ("mote", "dense"):
        args = ["eval", "lm-eval", str(setup[kind]), "--tasks", "tiny_colors", "--include-path", str(setup["tasks"])]
        result = runner.invoke(app, [*args, "--apply-chat-template", "--log-samples", "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        items = [json.loads(line) for line in setup["images"].read_text().splitlines()]
        samples = sorted(data["samples"]["tiny_colors"], key=lambda e: e["doc_id"])
        want = [
            mote_convert.generate(setup[kind], "What color is this?", image=i["image"], max_new_tokens=6) for i in items
        ]
        assert [e["response"][0] for e in samples] == [w.text for w in want]
        (score,) = data["scores"]
        right = [w.text.strip().lower() == i["answer"] for w, i in zip(want, items, strict=True)]
        assert score["metric"] == "exact_match" and score["value"] == pytest.approx(sum(right) / len(right))
        answers[kind] = [e["response"][0] for e in samples]
    assert answers["mote"] != answers["dense"]


def test_the_table_and_the_errors(setup: dict[str, Path], tmp_path: Path) -> None:
    args = ["eval", "lm-eval", str(setup["mote"]), "--include-path", str(setup["tasks"]), "--limit", "5"]
    result = runner.invoke(app, [*args, "--tasks", "tiny_words"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "│ tiny_words │ acc │" in text and "(mote model)" in text and "│ 5 │" in text
    assert_one_line_error(runner.invoke(app, [*args, "--tasks", "no_such_task"]), 2, "no_such_task")
    assert_one_line_error(
        runner.invoke(app, ["eval", "lm-eval", str(tmp_path / "absent"), "--tasks", "tiny_words"]), 3, "absent"
    )
