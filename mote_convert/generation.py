"""A quick try of a checkpoint: a prompt (and an image) in, greedy tokens out, streamed.

The prompt goes through the model's own chat template (its processor's, or its tokenizer's for a
text model) and the model's own ``generate``: a MoTE checkpoint through :func:`load_model` (packed
experts), a dense one through its transformers class, so the two can be compared on one prompt.
The library never prints: streamed text goes to the ``on_text`` callback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mote_convert.arch import model_class
from mote_convert.checkpoint import read_config
from mote_convert.errors import DataError, InputNotFoundError, MoteError, OptionsError, describe_exception
from mote_convert.io.source import resolve_model

if TYPE_CHECKING:
    from torch import nn

DEFAULT_MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class Generation:
    """What :func:`generate` produced: the new tokens (greedy), their text, and how fast."""

    model: str
    kind: str  # "mote" or "dense"
    prompt: str
    image: str | None
    prompt_tokens: int
    tokens: tuple[int, ...]
    text: str
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            "prompt": self.prompt,
            "image": self.image,
            "prompt_tokens": self.prompt_tokens,
            "tokens": list(self.tokens),
            "text": self.text,
            "seconds": round(self.seconds, 4),
            "tokens_per_second": round(self.tokens_per_second, 2),
        }


def load_for_generation(root: Path, *, dtype: Any = None) -> tuple[nn.Module, str]:
    """The model at ``root`` ready to generate: MoTE (packed experts) when its config.json has a
    ``mote`` section, else the dense model through its transformers class. Returns (model, kind)."""
    from mote_convert.modeling.load import load_model, quiet_progress

    config = read_config(root)
    if "mote" in config:
        model, kind = load_model(root, mode="packed", dtype=dtype), "mote"
    else:
        with quiet_progress():
            model, kind = model_class(config).from_pretrained(root, dtype=dtype or "auto"), "dense"
    model.eval()
    return model, kind


MESSAGE_LIMIT = 300  # characters of another library's message in ours
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_processor(root: Path, *, image: bool) -> Any:
    """The model's processor (for an image prompt, or when it has one), else its tokenizer."""
    from transformers import AutoProcessor, AutoTokenizer

    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise InputNotFoundError(f"{root}: no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    processor = None
    try:
        processor = AutoProcessor.from_pretrained(root)
    except Exception as exc:  # noqa: BLE001 - transformers refuses a missing or broken processor with any kind
        if image:
            raise InputNotFoundError(
                f"{root}: no processor to read an image with ({describe_exception(exc, MESSAGE_LIMIT)})"
            ) from None
    if processor is None or not (hasattr(processor, "tokenizer") or hasattr(processor, "decode")):
        try:
            processor = AutoTokenizer.from_pretrained(root)
        except Exception as exc:  # noqa: BLE001 - likewise
            raise InputNotFoundError(
                f"{root}: the tokenizer cannot be loaded ({describe_exception(exc, MESSAGE_LIMIT)})"
            ) from None
    if image and not hasattr(processor, "image_processor"):
        raise InputNotFoundError(f"{root}: the model has a tokenizer but no image processor: it cannot read an image")
    return processor


def encode_prompt(processor: Any, prompt: str, image: Path | None) -> dict[str, Any]:
    """Token ids (and pixel values) of one user turn, rendered and tokenized by the model's own chat
    template with its generation prompt; a model without a chat template gets the prompt as it is."""
    from PIL import Image

    pil = None
    if image is not None:
        try:
            with Image.open(image) as img:
                pil = img.convert("RGB")
        except OSError as exc:
            raise DataError(f"{image}: not an image PIL can read ({exc})") from None
    parts = ([{"type": "image", "image": pil}] if pil is not None else []) + [{"type": "text", "text": prompt}]
    return encode_messages(processor, [{"role": "user", "content": parts}])


def encode_messages(processor: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Token ids (and pixel values) of a conversation whose turns hold typed parts (``{"type":
    "text", "text": ...}``, ``{"type": "image", "image": PIL image}``), rendered by the model's chat
    template with its generation prompt. A tokenizer's template takes each turn's text joined; a
    model without a template gets the texts as they are, the images beside them."""
    if not getattr(processor, "chat_template", None):
        text = "".join(part["text"] for m in messages for part in m["content"] if part["type"] == "text")
        images = [part["image"] for m in messages for part in m["content"] if part["type"] == "image"]
        return dict(processor(text=[text], **({"images": images} if images else {}), return_tensors="pt"))
    if not hasattr(processor, "image_processor"):  # a tokenizer's template takes plain strings
        messages = [
            {"role": m["role"], "content": "".join(p["text"] for p in m["content"] if p["type"] == "text")}
            for m in messages
        ]
    encoded = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    return dict(encoded)


def generate(
    model_path: str | Path,
    prompt: str,
    *,
    image: str | Path | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    revision: str | None = None,
    dtype: Any = None,
    on_text: Callable[[str], None] | None = None,
) -> Generation:
    """Greedy generation of up to ``max_new_tokens`` tokens after ``prompt`` (and ``image``), in the
    model's chat template; ``on_text`` gets the text as it is decoded (whole words at a time)."""
    import torch
    from transformers import TextStreamer

    if max_new_tokens < 1:
        raise OptionsError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    root = resolve_model(model_path, revision)
    image_path = Path(image) if image is not None else None
    if image_path is not None and not image_path.is_file():
        raise InputNotFoundError(f"{image_path}: no such image file")
    processor = load_processor(root, image=image_path is not None)
    model, kind = load_for_generation(root, dtype=dtype)
    inputs = encode_prompt(processor, prompt, image_path)
    tokenizer = getattr(processor, "tokenizer", processor)

    class _Stream(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if on_text is not None and text:
                on_text(text)

    streamer = _Stream(tokenizer, skip_prompt=True, skip_special_tokens=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer, pad_token_id=pad
            )
    except MoteError:
        raise
    except (ValueError, RuntimeError) as exc:  # the processor's and model's refusals of the input
        raise DataError(
            f"{root}: the model cannot generate from this input ({describe_exception(exc, MESSAGE_LIMIT)})"
        ) from None
    seconds = time.perf_counter() - start
    prompt_tokens = int(inputs["input_ids"].shape[-1])
    new = tuple(int(t) for t in out[0, prompt_tokens:])
    return Generation(
        model=str(model_path),
        kind=kind,
        prompt=prompt,
        image=str(image_path) if image_path is not None else None,
        prompt_tokens=prompt_tokens,
        tokens=new,
        text=tokenizer.decode(list(new), skip_special_tokens=True),
        seconds=seconds,
    )
