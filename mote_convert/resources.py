"""Where the shipped data files (architecture definitions, recipes) live.

In a wheel they are packaged as ``mote_convert/configs``; in a source checkout (editable install)
they are the repository's top-level ``configs/``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def config_root() -> Path:
    """The directory holding ``architectures/`` and ``recipes/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "unsupported.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"mote-convert's configs/ directory was not found next to {here}")


def architecture_dir() -> Path:
    """``configs/architectures``: definition files, only for families that discovery needs help with."""
    return config_root() / "architectures"


def recipe_dir() -> Path:
    """``configs/recipes``: example upcycle recipes."""
    return config_root() / "recipes"


def unsupported_file() -> Path:
    """``configs/unsupported.yaml``: model types refused on purpose, with the reason."""
    return config_root() / "unsupported.yaml"


def train_recipe_dir() -> Path:
    """``configs/train``: training recipes (``mote-convert train --recipe``)."""
    return config_root() / "train"


def launch_dir() -> Path:
    """``configs/launch``: DeepSpeed and accelerate launcher configurations."""
    return config_root() / "launch"
