"""Where a model is: a local directory, or a Hugging Face Hub repo id resolved through
huggingface_hub (its cache, its token, ``HF_HUB_OFFLINE``), as transformers resolves one.

A local path that exists always wins. A repo id fetches only what mote-convert reads: config.json,
the safetensors files and their index, tokenizer, processor and generation files; never ``.bin``,
``.pt``, ``.gguf`` or ``.onnx`` weights.
"""

from __future__ import annotations

import re
from pathlib import Path

from mote_convert.errors import InputNotFoundError, InputReadError

# ORG/NAME as the Hub spells repo ids
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
NEEDED_FILES = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "chat_template*",
    "*processor*config.json",
    "preprocessor_config.json",
)


def is_repo_id(source: str | Path) -> bool:
    """Whether ``source`` reads as a Hub repo id (and not as a path that exists)."""
    text = str(source)
    return not Path(text).exists() and bool(REPO_ID.match(text)) and not text.startswith((".", "~"))


def resolve_model(source: str | Path, revision: str | None = None) -> Path:
    """The local directory of a model: ``source`` itself, or the snapshot of the Hub repo it names
    (downloaded where needed, with huggingface_hub's progress bars). A ``revision`` (branch, tag or
    commit) applies to repo ids only."""
    if not is_repo_id(source):
        if revision is not None:
            raise InputNotFoundError(f"{source}: --revision applies to a Hub repo id, not to a local path")
        return Path(source)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{source}{f'@{revision}' if revision else ''}"
    try:
        return Path(snapshot_download(repo_id=str(source), revision=revision, allow_patterns=list(NEEDED_FILES)))
    except LocalEntryNotFoundError:
        raise InputNotFoundError(
            f"{where}: no such local directory, and not in the Hugging Face cache while offline "
            "(HF_HUB_OFFLINE is set, or the Hub cannot be reached)"
        ) from None
    except GatedRepoError:
        raise InputNotFoundError(
            f"{where}: a gated repo; accept its terms on the Hub and log in (hf auth login)"
        ) from None
    except RevisionNotFoundError:
        raise InputNotFoundError(f"{where}: no such revision on the Hub") from None
    except RepositoryNotFoundError:
        raise InputNotFoundError(f"{where}: no such local directory or Hub repo (or it is private)") from None
    except (HfHubHTTPError, OSError) as exc:
        raise InputReadError(f"{where}: cannot download: {' '.join(str(exc).split())}") from None


def model_name(root: Path) -> str:
    """A model's name for the files made from it: the repo's name for a snapshot in the Hugging Face
    cache (``models--ORG--NAME/snapshots/COMMIT``: NAME, not the commit), else the directory's name."""
    parent = root.resolve().parent
    if parent.name == "snapshots" and parent.parent.name.startswith("models--"):
        return parent.parent.name.split("--")[-1]
    return root.name
