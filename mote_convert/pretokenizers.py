"""The pre-tokenizers of byte-level BPE tokenizers (GPT-2's kind: Llama 3, Qwen2 / 2.5 / 3, SmolLM)
that llama.cpp implements, each as a ``tokenizer.json`` states it and under the name llama.cpp
knows it by (``tokenizer.ggml.pre``).

llama.cpp does not read a tokenizer's regex from the GGUF: it runs its own re-implementation of
each known pre-tokenizer, chosen by that name. Its converter finds the name by hashing the ids a
tokenizer gives a fixed text, against a table of known tokenizers' hashes; here the name comes from
what the tokenizer *does* before BPE, read from ``tokenizer.json``: the same split means the same
name. A split that none of these is does not export (llama.cpp would tokenize differently).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONTRACTIONS = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
LLAMA3_REGEX = CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_REGEX = CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

# one step of a pre-tokenizer, canonical: ("split", regex), ("gpt2",) for ByteLevel's own regex,
# ("digits",) for single-digit splitting; ByteLevel's byte mapping without a regex is no step
Step = tuple[str, ...]


@dataclass(frozen=True)
class PreTokenizer:
    """A pre-tokenizer llama.cpp implements: its ``tokenizer.ggml.pre`` name and the steps a
    ``tokenizer.json`` states for it."""

    name: str
    models: str  # whose tokenizers use it, for messages and docs
    steps: tuple[Step, ...]


PRE_TOKENIZERS = (
    PreTokenizer("llama-bpe", "Llama 3, 3.1, 3.2", (("split", LLAMA3_REGEX),)),
    PreTokenizer("qwen2", "Qwen2, Qwen2.5, Qwen3", (("split", QWEN2_REGEX),)),
    PreTokenizer("gpt-2", "GPT-2", (("gpt2",),)),
    PreTokenizer("smollm", "SmolLM, SmolVLM", (("digits",), ("gpt2",))),
)


def pre_tokenizer_steps(node: Any) -> tuple[Step, ...]:
    """The canonical steps of a ``tokenizer.json`` ``pre_tokenizer`` entry (``None`` has none); a
    step of another kind is ``("other", description)``."""
    if node is None:
        return ()
    if not isinstance(node, dict):
        return (("other", repr(node)),)
    kind = node.get("type")
    if kind == "Sequence":
        return tuple(step for child in node.get("pretokenizers") or [] for step in pre_tokenizer_steps(child))
    if kind == "ByteLevel":
        if node.get("add_prefix_space", False):
            return (("other", "ByteLevel with add_prefix_space"),)
        return (("gpt2",),) if node.get("use_regex", True) else ()
    if kind == "Split":
        pattern = node.get("pattern") or {}
        regex = pattern.get("Regex") if isinstance(pattern, dict) else None
        if regex is None or node.get("behavior") != "Isolated" or node.get("invert", False):
            return (("other", f"Split {pattern!r} ({node.get('behavior')})"),)
        return (("split", regex),)
    if kind == "Digits" and node.get("individual_digits", False):
        return (("digits",),)
    return (("other", str(kind)),)


def identify(node: Any) -> PreTokenizer | None:
    """The pre-tokenizer of these ``tokenizer.json`` steps, or None where llama.cpp has none like it."""
    steps = pre_tokenizer_steps(node)
    return next((p for p in PRE_TOKENIZERS if p.steps == steps), None)
