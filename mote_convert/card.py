"""The model card (``README.md``) of every output: what the checkpoint is, its numbers from
``inspect``, how to load, train and export it, and what stock transformers gives without this
package. Written with huggingface_hub's ``ModelCard`` so that the Hub reads its metadata."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from mote_convert.inspection import inspect_checkpoint
from mote_convert.io.source import is_repo_id
from mote_convert.report import InspectionReport
from mote_convert.version import __version__

CARD = "README.md"
TAGS = ("mote", "moe", "mixture-of-experts", "ternary", "bitnet", "mote-convert")


def base_model_of(model_dir: Path) -> str | None:
    """The ``base_model`` an existing card names (a checkpoint that mote-convert wrote), or None."""
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(model_dir / CARD).data.base_model
    except Exception:  # noqa: BLE001  (no card, or one huggingface_hub cannot parse: no base named)
        return None


def card_text(report: InspectionReport, base_model: str | None, title: str) -> str:
    """The card's markdown body (no metadata) for an inspected MoTE checkpoint."""
    mote = report.mote
    assert mote is not None  # noqa: S101  (only MoTE outputs get a card)
    base = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "a dense checkpoint"
    rows = [
        f"| {c.name.replace('_', ' ')} | {c.params} | {c.bytes} | {c.bits_per_weight:.6g} |"
        for c in report.memory.components
        if c.tensors
    ]
    total = report.memory.total
    lines = [
        f"# {title}",
        "",
        f"A Mixture of Ternary Experts (MoTE) model up-cycled from {base} by mote-convert {__version__}.",
        f"Each of {len(mote.moe_layers)} decoder FFNs (layers {', '.join(map(str, mote.moe_layers))}) is kept as a",
        f"frozen full-precision shared expert, beside {mote.num_experts} routed experts with ternary weights",
        "{-1, 0, +1} (BitNet b1.58: absmean weight scale, INT8 activations) and a float32 router that sends",
        f"each token to its top-{mote.top_k}. Routed experts are stored as `{mote.expert_format}`.",
        "",
        "## Size (from `mote-convert inspect`)",
        "",
        "| component | parameters | bytes | bits per weight |",
        "|---|---:|---:|---:|",
        *rows,
        f"| total | {total.params} | {total.bytes} | {total.bits_per_weight:.6g} |",
        "",
        "## Use",
        "",
        "Load it with this package installed (`pip install mote-convert`), which registers the `mote`",
        "quantizer with transformers:",
        "",
        "```python",
        "import mote_convert",
        "",
        'model = mote_convert.load_model("PATH_OR_REPO_ID", mode="packed")  # mode="train" to train it',
        "```",
        "",
        "**Without `import mote_convert`, stock `from_pretrained` loads the dense model** (the shared",
        "experts alone, the experts and routers left unused): scores measured that way are the dense",
        "model's, not this model's.",
        "",
        "Train the routers and experts: `mote-convert train PATH_OR_REPO_ID --data DATA.json "
        "--image-folder DIR -o OUT`;",
        "pack a trained latent checkpoint: `mote-convert pack IN -o OUT`; deploy to llama.cpp:",
        "`mote-convert export gguf IN -o model.gguf --mmproj mmproj.gguf`.",
    ]
    return "\n".join(lines) + "\n"


def write_model_card(model_dir: Path, base_model: str | None, title: str) -> None:
    """Write ``README.md`` into a MoTE checkpoint directory (replacing the one copied from its source,
    which described the dense model); ``title`` heads it (the base model's name: the same input gives the same card)."""
    from huggingface_hub import ModelCard, ModelCardData

    report = inspect_checkpoint(model_dir)
    data = ModelCardData(base_model=base_model, library_name="transformers", tags=list(TAGS))
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_text(report, base_model, title)}")
    (model_dir / CARD).write_text(str(card), encoding="utf-8")


def card_writer(source: str | Path, root: Path) -> Callable[[Path], None]:
    """The last step of a write (``write_plan``'s ``finish``): the card of an output made from
    ``source`` as the user named it (a Hub repo id is its base model; a local checkpoint that has a
    card of ours passes its base model on), resolved to the directory ``root``."""
    base = str(source) if is_repo_id(source) else base_model_of(root)
    return functools.partial(write_model_card, base_model=base, title=f"{base or root.name} (MoTE)")
