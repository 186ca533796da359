"""LLaVA-format instruction data, rendered with the model's own processor and chat template.

A data file is LLaVA-1.5's ``llava_v1_5_mix665k.json`` format: a JSON list of records

    {"id": "...", "image": "coco/train2017/000000033471.jpg",          # optional: text-only records
     "conversations": [{"from": "human", "value": "<image>\\nWhat is in the picture?"},
                       {"from": "gpt", "value": "A bus."}, ...]}

Each record becomes chat messages (``human`` -> user, ``gpt`` -> assistant; the ``<image>``
placeholder -> an image entry of the user turn), rendered by ``processor.apply_chat_template``.
Labels are the token ids of the assistant turns (with whatever the template closes a turn with)
and -100 elsewhere: the prompt, the image tokens and the template's scaffolding are never learned.
The answer spans are found by rendering the conversation up to each answer, with and without it,
so any chat template works that renders a conversation's prefix as a prefix of the whole.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from mote_convert.errors import DataError, InputNotFoundError, MoteError
from mote_convert.io.jsonfile import JsonFileError, load_json

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}
MAX_DATA_BYTES = 4 << 30  # a data file is read whole: 4 GiB is far beyond mix665k's 1 GB
MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit, where PIL has none set


@dataclass(frozen=True)
class Record:
    """One conversation: the image's path (or None) and its turns as (role, text)."""

    id: str
    image: Path | None
    turns: tuple[tuple[str, str], ...]


def _short(path: object, limit: int = 120) -> str:
    """A path as an error shows it: cut in the middle past ``limit`` characters."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]}"


def read_records(
    data_path: str | Path, image_folder: str | Path | None, *, allow_outside: bool = False
) -> list[Record]:
    """Parse and check a LLaVA-format JSON file; every image must exist under ``image_folder``.

    An image path that leads outside ``image_folder`` (``../``, an absolute path, a symbolic link
    out) is refused unless ``allow_outside``: a downloaded data file must not make training read
    any image-shaped file on the machine."""
    path = Path(data_path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no such data file")
    try:
        raw = load_json(path, MAX_DATA_BYTES, list)
    except JsonFileError as exc:
        raise DataError(f"{path}: {exc}; expected a JSON list of LLaVA-format records") from None
    if not raw:
        raise DataError(f"{path}: an empty list; expected LLaVA-format records")
    folder = Path(image_folder) if image_folder is not None else None
    root = folder.resolve() if folder is not None else None
    records = []
    for i, item in enumerate(raw):
        where = f"{path}: record {i}"
        if not isinstance(item, dict):
            raise DataError(f"{where} is not an object")
        where = f"{where} (id {item.get('id', '?')!r})"
        conversations = item.get("conversations")
        if not isinstance(conversations, list) or not conversations:
            raise DataError(f"{where}: 'conversations' must be a non-empty list")
        turns = []
        for turn in conversations:
            if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
                raise DataError(
                    f"{where}: each turn must be {{'from': 'human' | 'gpt', 'value': str}}, got {turn!r:.80}"
                )
            turns.append((ROLES[turn["from"]], turn["value"]))
        if not any(role == "assistant" for role, _ in turns):
            raise DataError(f"{where}: no 'gpt' turn, nothing to learn")
        image = item.get("image")
        image_path = None
        if image is not None:
            if not isinstance(image, str):
                raise DataError(f"{where}: 'image' must be a path relative to --image-folder")
            if folder is None:
                raise DataError(f"{where} has an image: give --image-folder")
            image_path = folder / image
            try:
                found = image_path.is_file()
                inside = root is not None and image_path.resolve().is_relative_to(root)
            except OSError as exc:  # a name too long, a loop of links, ...
                raise DataError(f"{where}: image {_short(image_path)}: {exc.strerror or exc}") from None
            if not found:
                raise InputNotFoundError(f"{where}: image {_short(image_path)} not found")
            if not inside and not allow_outside:
                raise DataError(
                    f"{where}: image {_short(image)} is outside --image-folder {_short(folder)} "
                    "(allow it with --allow-images-outside)"
                )
            if sum(text.count(IMAGE_PLACEHOLDER) for role, text in turns if role == "user") > 1:
                raise DataError(f"{where}: more than one {IMAGE_PLACEHOLDER} placeholder for one image")
            if not any(IMAGE_PLACEHOLDER in text for role, text in turns if role == "user"):
                turns[0] = (turns[0][0], f"{IMAGE_PLACEHOLDER}\n{turns[0][1]}")  # LLaVA puts the image first
        records.append(Record(str(item.get("id", i)), image_path, tuple(turns)))
    return records


def to_messages(turns: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Chat messages in the processor format (content lists; the image where its placeholder was)."""
    messages = []
    for role, text in turns:
        content: list[dict[str, str]] = []
        if role == "user" and IMAGE_PLACEHOLDER in text:
            before, after = text.split(IMAGE_PLACEHOLDER, 1)
            if before.strip():
                content.append({"type": "text", "text": before.strip()})
            content.append({"type": "image"})
            text = after.strip()
        if text or not content:
            content.append({"type": "text", "text": text})
        messages.append({"role": role, "content": content})
    return messages


class ConversationDataset(torch.utils.data.Dataset):
    """Token ids, answer-only labels and pixel values of LLaVA-format records, made on access.

    A turn's text is cut before it is tokenized to what ``max_length`` tokens can hold (the longest
    token's characters each): a huge answer costs no more than one of that size, and the cut never
    reaches the tokens kept. Images over ``max_pixels`` are refused by name before they are decoded.
    """

    def __init__(
        self, records: Sequence[Record], processor: Any, max_length: int, max_pixels: int | None = None
    ) -> None:
        from PIL import Image

        if getattr(processor, "chat_template", None) is None:
            raise DataError("the model's processor has no chat template (chat_template.jinja or processor_config.json)")
        self.records = list(records)
        self.processor = processor
        self.max_length = max_length
        self.max_pixels = max_pixels if max_pixels is not None else (Image.MAX_IMAGE_PIXELS or MAX_PIXELS)
        vocab = processor.tokenizer.get_vocab()
        self.max_chars = max_length * max((len(token) for token in vocab), default=1)

    def first_supervised(self) -> int:
        """The index of the first record that keeps answer tokens within ``max_length``; a data set
        with none (every answer cut away) is refused: it would train on nothing, at a loss of 0."""
        for i in range(len(self)):
            if bool((self[i]["labels"] != IGNORE_INDEX).any()):
                return i
        raise DataError(
            f"no record keeps any answer token within max_length {self.max_length}: nothing to learn (raise max_length)"
        )

    def __len__(self) -> int:
        return len(self.records)

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        try:
            return self._encode(record)
        except MoteError:
            raise
        except Exception as exc:  # noqa: BLE001 - the processor, its chat template and PIL refuse bad input with any kind
            raise DataError(
                f"record {record.id!r} cannot be encoded with the model's processor ({type(exc).__name__}: {exc})"
            ) from exc

    def _encode(self, record: Record) -> dict[str, torch.Tensor]:
        from PIL import Image

        messages = to_messages([(role, text[: self.max_chars]) for role, text in record.turns])
        text = self._render(messages, False)
        images = None
        if record.image is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused below, not printed
                    with Image.open(record.image) as img:
                        if img.width * img.height > self.max_pixels:
                            raise DataError(
                                f"record {record.id!r}: image {_short(record.image)} has "
                                f"{img.width} x {img.height} pixels, over the limit of {self.max_pixels}"
                            )
                        images = [img.convert("RGB")]
            except (OSError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
                # unreadable, not an image PIL knows (UnidentifiedImageError), or too large to decode
                raise DataError(f"record {record.id!r}: image {_short(record.image)}: {exc}") from None
        encoded = self.processor(text=[text], images=images, return_tensors="pt")
        ids = encoded["input_ids"][0]
        image_token = getattr(self.processor, "image_token", IMAGE_PLACEHOLDER)
        image_token_id = self.processor.tokenizer.convert_tokens_to_ids(image_token)
        per_image = int((ids == image_token_id).sum()) if images else 0

        def token_count(prefix: str) -> int:
            # the processor's own expansion of the image placeholder, then its tokenizer
            expanded = prefix.replace(image_token, image_token * per_image) if per_image else prefix
            prefix_ids = self.processor.tokenizer(expanded, return_tensors="pt")["input_ids"][0]
            if not torch.equal(ids[: prefix_ids.numel()], prefix_ids):
                raise DataError(
                    f"record {record.id!r}: the chat template does not render a conversation's "
                    "beginning as the beginning of the whole; answer-only labels need it to"
                )
            return prefix_ids.numel()

        labels = torch.full_like(ids, IGNORE_INDEX)
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = token_count(self._render(messages[:i], True))
            end = token_count(self._render(messages[: i + 1], False))
            labels[start:end] = ids[start:end]
        item = {"input_ids": ids[: self.max_length], "labels": labels[: self.max_length]}
        if per_image and int((item["input_ids"] == image_token_id).sum()) != per_image:
            raise DataError(f"record {record.id!r}: max_length {self.max_length} cuts into the image's tokens")
        if images:
            item["pixel_values"] = encoded["pixel_values"][0]
        return item


@dataclass(frozen=True)
class Collator:
    """Right-padded batches: ``input_ids`` (pad id), ``attention_mask``, ``labels`` (-100) and the
    batch's images stacked in order (the model matches them to image tokens in order)."""

    pad_token_id: int

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(item["input_ids"].numel() for item in items)
        ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, item in enumerate(items):
            n = item["input_ids"].numel()
            ids[row, :n] = item["input_ids"]
            labels[row, :n] = item["labels"]
            mask[row, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        pixels = [item["pixel_values"] for item in items if "pixel_values" in item]
        if pixels:
            batch["pixel_values"] = torch.stack(pixels)
        return batch
