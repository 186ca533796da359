"""LLaVA-format data: answer-only labels through the model's own chat template, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mote_convert.errors import DataError, InputNotFoundError
from mote_convert.tiny import build_tiny_dataset, build_tiny_processor
from mote_convert.train.data import IGNORE_INDEX, Collator, ConversationDataset, read_records


@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(build_tiny_processor(tmp_path_factory.mktemp("proc") / "p"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("data") / "d", records=8)


def test_labels_are_the_answers_and_images_expand(processor, data: Path) -> None:  # noqa: ANN001
    ds = ConversationDataset(read_records(data, data.parent), processor, max_length=256)
    item = ds[0]
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    assert int((item["input_ids"] == image_id).sum()) == 16  # the tiny model's image_seq_length
    assert item["pixel_values"].shape == (3, 16, 16)
    answers = tok.decode(item["labels"][item["labels"] != IGNORE_INDEX])
    assert answers == "red</s> red</s>"  # both gpt turns, with the template's end of turn; nothing else
    text_only = ds[7]
    assert "pixel_values" not in text_only
    assert tok.decode(text_only["labels"][text_only["labels"] != IGNORE_INDEX]) == "hello</s>"
    batch = Collator(tok.pad_token_id)([ds[0], ds[7]])
    assert batch["pixel_values"].shape == (1, 3, 16, 16)
    assert batch["attention_mask"][1].sum() == text_only["input_ids"].numel()
    assert (batch["labels"][1, text_only["input_ids"].numel() :] == IGNORE_INDEX).all()


def _write(tmp_path: Path, records: object) -> Path:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize(
    ("records", "error", "needle"),
    [
        ({"id": 1}, DataError, "must hold a JSON list, not an object; expected a JSON list of LLaVA-format records"),
        ([], DataError, "an empty list; expected LLaVA-format records"),
        (
            [{"id": "a", "conversations": [{"from": "human", "value": "hi"}]}],
            DataError,
            r"record 0 \(id 'a'\): no 'gpt' turn",
        ),
        ([{"id": "a", "conversations": [{"from": "bot", "value": "hi"}]}], DataError, "each turn must be"),
        (
            [{"id": "a", "image": "missing.png", "conversations": [{"from": "gpt", "value": "x"}]}],
            InputNotFoundError,
            "missing.png not found",
        ),
    ],
)
def test_bad_data_is_refused_by_record(tmp_path: Path, records: object, error: type, needle: str) -> None:
    with pytest.raises(error, match=needle):
        read_records(_write(tmp_path, records), tmp_path)


def test_not_json(tmp_path: Path) -> None:
    for text in ("{not json", "[" * 100_000):  # the second nests too deeply for the parser
        (tmp_path / "d.json").write_text(text)
        with pytest.raises(DataError, match="not valid JSON"):
            read_records(tmp_path / "d.json", None)


def test_truncation_never_cuts_an_image(processor, data: Path) -> None:  # noqa: ANN001
    ds = ConversationDataset(read_records(data, data.parent), processor, max_length=12)
    with pytest.raises(DataError, match="cuts into the image's tokens"):
        ds[0]
    assert torch.equal(
        ConversationDataset(read_records(data, data.parent), processor, max_length=12)[7]["input_ids"],
        ds[7]["input_ids"][:12],
    )


def test_an_unreadable_image_or_template_is_a_data_error_naming_the_record(
    processor, data: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    import copy
    import shutil

    copied = tmp_path / "d"
    shutil.copytree(data.parent, copied)
    (copied / "images" / "0.png").write_bytes(b"not a png")
    records = read_records(copied / data.name, copied)
    with pytest.raises(DataError, match=r"record '0': image .*0.png: cannot identify image file"):
        ConversationDataset(records, processor, max_length=256)[0]
    broken = copy.copy(processor)
    broken.chat_template = "{{ messages[0]['content'] }}"  # renders no image token for the image
    with pytest.raises(
        DataError, match=r"record '1' cannot be encoded with the model's processor \(ValueError: .*image"
    ):
        ConversationDataset(records, broken, max_length=256)[1]
