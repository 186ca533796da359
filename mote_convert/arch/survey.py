"""What the installed transformers supports: every image-text-to-text and causal-LM family, its
architecture found by discovery on a tiny version of its default config, or why it is refused.

A family's default config is shrunk (a few small layers, a small vocabulary) so that its skeleton
builds in milliseconds; the structure discovery reads (layer lists, FFN modules, key names) does not
depend on the sizes. A family whose default config transformers will not accept once shrunk is
listed as unchecked, with the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mote_convert.arch.discover import Refusal
from mote_convert.arch.lookup import architecture_of
from mote_convert.arch.skeleton import quiet
from mote_convert.errors import MoteError

SUPPORTED = "supported"
REFUSED = "refused"
UNCHECKED = "unchecked"

SIZES = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=320,
    depth=2,
    embed_dim=64,
    num_heads=4,
    num_layers=2,
    moe_intermediate_size=32,
    shared_expert_intermediate_size=32,
    max_window_layers=2,
    out_hidden_size=64,
    rotary_dim=8,
    qk_rope_head_dim=8,
    qk_nope_head_dim=8,
    v_head_dim=16,
    kv_lora_rank=16,
    q_lora_rank=32,
)
TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id")


def family_types() -> list[str]:
    """Every image-text-to-text and causal-LM model_type of the installed transformers."""
    from transformers.models.auto import modeling_auto

    return sorted(
        set(modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
        | set(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    )


def _per_layer(values: list[Any], n: int) -> list[Any]:
    """The first ``n`` entries of a per-layer list, keeping one of each kind where it mixes kinds
    (a hybrid decoder's layer types), in their order."""
    kinds = list(dict.fromkeys(v for v in values if isinstance(v, str)))
    if kinds and len(kinds) <= n and len(kinds) == len(set(values)):
        return (kinds + values)[:n]
    return values[:n]


def _shrink(cfg: Any) -> None:
    aliases = dict(getattr(cfg, "attribute_map", None) or {})  # hidden_size -> n_embd, ...

    def stored(key: str) -> Any:
        return cfg.__dict__.get(aliases.get(key, key))

    before = stored("num_hidden_layers")
    for key, value in SIZES.items():
        current = stored(key)
        if isinstance(current, int) and not isinstance(current, bool) and current > value:
            try:
                setattr(cfg, key, value)
            except Exception:  # noqa: BLE001  (a derived, read-only property: leave it)
                pass
    after = stored("num_hidden_layers")
    if isinstance(before, int) and isinstance(after, int) and after < before:
        for key, value in list(cfg.__dict__.items()):
            if isinstance(value, list) and len(value) == before:
                cfg.__dict__[key] = _per_layer(value, after)
            elif isinstance(value, dict) and value and all(isinstance(k, int) for k in value):
                cfg.__dict__[key] = {k: v for k, v in value.items() if k < after}
    _shrink_mrope(cfg, stored)
    vocab = stored("vocab_size")
    for key in TOKEN_IDS:
        value = cfg.__dict__.get(key)
        if isinstance(vocab, int) and isinstance(value, int) and value >= vocab:
            cfg.__dict__[key] = vocab - 1
    for name in getattr(cfg, "sub_configs", None) or {}:
        sub = getattr(cfg, name, None)
        if sub is not None and hasattr(sub, "to_dict"):
            _shrink(sub)


def _shrink_mrope(cfg: Any, stored: Any) -> None:
    """Multimodal RoPE sections must add up to half the (shrunk) head dimension."""
    head_dim = stored("head_dim")
    if not isinstance(head_dim, int):
        hidden, heads = stored("hidden_size"), stored("num_attention_heads")
        head_dim = hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None
    # a family whose rope validation ignores mrope_section takes a default sized for its real head
    uses_mrope = "mrope_section" in (getattr(type(cfg), "ignore_keys_at_rope_validation", None) or ())
    for key in ("rope_parameters", "rope_scaling"):
        rope = cfg.__dict__.get(key)
        if uses_mrope and isinstance(rope, dict) and "mrope_section" not in rope:
            rope["mrope_section"] = [16, 24, 24]  # transformers' default, scaled below
        sections = rope.get("mrope_section") if isinstance(rope, dict) else None
        if head_dim and isinstance(sections, list) and sections and sum(sections) != head_dim // 2:
            half, total = head_dim // 2, sum(sections)
            scaled = [max(1, s * half // total) for s in sections]
            scaled[0] += half - sum(scaled)
            rope["mrope_section"] = scaled


def shrunk_config(model_type: str) -> dict[str, Any]:
    """config.json of a tiny model of this family (with ``architectures``, as save_pretrained writes)."""
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    with quiet():
        cfg = CONFIG_MAPPING[model_type]()
        _shrink(cfg)
    cls = modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.get(
        model_type
    ) or modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    config = cfg.to_dict()
    config["architectures"] = [cls]
    return config


@dataclass(frozen=True)
class FamilyRow:
    """One family of the installed transformers, as mote-convert sees it."""

    model_type: str
    status: str  # SUPPORTED, REFUSED or UNCHECKED
    ffn_kind: str | None = None
    key_style: str | None = None  # the FFN prefix save_pretrained writes, layer N
    hybrid: bool = False  # only some decoder layers have a dense FFN
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``mote-convert architectures --json``)."""
        return {
            "model_type": self.model_type,
            "status": self.status,
            "ffn_kind": self.ffn_kind,
            "key_style": self.key_style,
            "hybrid": self.hybrid,
            "reason": self.reason,
        }


def survey_family(model_type: str) -> FamilyRow:
    """What mote-convert does with one family of the installed transformers."""
    from mote_convert.arch.lookup import refusal_reason

    reason = refusal_reason(model_type)
    if reason is not None:
        return FamilyRow(model_type, REFUSED, reason=reason)
    try:
        config = shrunk_config(model_type)
    except Exception as exc:  # noqa: BLE001  (a family's own config validation, whatever it raises)
        return FamilyRow(model_type, UNCHECKED, reason=_first_line(f"its default config cannot be built: {exc}"))
    try:
        arch = architecture_of(config)
    except Refusal as exc:
        return FamilyRow(model_type, REFUSED, reason=exc.reason)
    except MoteError as exc:
        return FamilyRow(model_type, UNCHECKED, reason=_first_line(f"a tiny model cannot be built: {exc}"))
    return FamilyRow(
        model_type,
        SUPPORTED,
        ffn_kind=arch.ffn_kind.name,
        key_style=arch.ffn_prefixes[0].replace("{layer}", "N"),
        hybrid=arch.ffn_layers is not None,
    )


@lru_cache(maxsize=1)
def survey() -> tuple[FamilyRow, ...]:
    """Every family of the installed transformers, by model_type."""
    return tuple(survey_family(t) for t in family_types())


def _first_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def markdown_table(rows: tuple[FamilyRow, ...]) -> str:
    """The survey as docs/architectures.md holds it: supported families, then refused and unchecked
    ones with their reasons."""
    import transformers

    lines = [
        f"Generated from transformers {transformers.__version__} by `mote-convert architectures --markdown`.",
        "",
        "| model_type | FFN kind | key style (layer N) |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{r.model_type}` | {r.ffn_kind}{' (hybrid)' if r.hybrid else ''} | `{r.key_style}` |"
        for r in rows
        if r.status == SUPPORTED
    ]
    for status, title in ((REFUSED, "Refused"), (UNCHECKED, "Not checked (no tiny model could be built)")):
        lines += ["", f"{title}:", "", "| model_type | why |", "|---|---|"]
        lines += [f"| `{r.model_type}` | {_escape(r.reason or '')} |" for r in rows if r.status == status]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")
