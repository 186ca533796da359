"""The Trainer's checkpoints of a ``train`` run: which one a resume uses, and whether it fits.

Every checkpoint is written as ``.checkpoint-N.partial/`` beside its place and renamed to
``checkpoint-N`` only when complete (:class:`~mote_convert.train.trainer.MoteTrainer`), so a stop at
any point leaves either a complete checkpoint or none under that name. A checkpoint can still be
damaged afterwards (a disk error, a truncating copy, an edit): :func:`resume_point` takes the latest
checkpoint that reads as complete, says which ones it skipped and why, and :func:`check_fits` refuses
one of another model (another hidden size, expert count, MoE layers) before any step runs.
:func:`check_checkpoints_path` and :class:`CheckpointsLock` keep the directory apart from the input
and the output, and to one run at a time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mote_convert.errors import (
    FormatError,
    InputNotFoundError,
    MoteError,
    OutputExistsError,
    OutputWriteError,
    write_error,
)
from mote_convert.format import expert_base, router_name
from mote_convert.io.index import load_index
from mote_convert.io.staging import acquire_lock, check_writable, release_lock

PREFIX = "checkpoint-"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
# What the Trainer writes with torch.save: zip archives, whose central directory (at the end) a
# truncated file lacks.
TORCH_FILES = ("*.pt", "*.pth")


def staging_name(step: int) -> str:
    """The hidden directory a checkpoint is written into before it is renamed to ``checkpoint-N``."""
    return f".{PREFIX}{step}.partial"


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a resume continues from, and the later ones it skipped (name, reason)."""

    path: Path
    step: int
    skipped: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """One line for the user: which checkpoint, and what was passed over."""
        skipped = "; ".join(f"skipped {name}: {reason}" for name, reason in self.skipped)
        return f"resuming from {self.path.name} (step {self.step})" + (f"; {skipped}" if skipped else "")


def checkpoints_in(directory: Path) -> list[tuple[int, Path]]:
    """The ``checkpoint-N`` directories under ``directory``, newest (highest N) first."""
    if not directory.is_dir():
        return []
    found = [(int(m[1]), p) for p in directory.iterdir() if (m := CHECKPOINT_NAME.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def damage(path: Path, step: int) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from (None when it reads as complete):
    the trainer state, the model weights' headers and sizes, and the torch files' zip directories."""
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        return f"no {TRAINER_STATE}"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{TRAINER_STATE} cannot be read ({type(exc).__name__})"
    if not isinstance(state, dict) or state.get("global_step") != step:
        return f"{TRAINER_STATE} does not record step {step}"
    try:
        load_index(path)
    except MoteError as exc:
        return f"its weights cannot be read ({str(exc).removeprefix(str(path)).lstrip(': /')})"
    for pattern in TORCH_FILES:
        for torch_file in sorted(path.glob(pattern)):
            try:
                with zipfile.ZipFile(torch_file):
                    pass
            except (OSError, zipfile.BadZipFile):
                return f"{torch_file.name} is truncated or damaged"
    return None


def resume_point(directory: Path) -> ResumePoint:
    """The latest complete checkpoint in ``directory``; the damaged later ones are named as skipped."""
    skipped: list[tuple[str, str]] = []
    for step, path in checkpoints_in(directory):
        reason = damage(path, step)
        if reason is None:
            return ResumePoint(path, step, tuple(skipped))
        skipped.append((path.name, reason))
    if skipped:
        listed = "; ".join(f"{name}: {reason}" for name, reason in skipped)
        raise InputNotFoundError(f"--resume: no complete checkpoint in {directory} ({listed})")
    raise InputNotFoundError(f"--resume: no checkpoint-* in {directory} to resume from")


def check_fits(model: Path, checkpoint: Path) -> None:
    """Refuse, before the model loads, a checkpoint that is not of ``model``: the MoE structure of
    ``config.json["mote"]`` and the shape of every router and latent expert weight must be the ones
    the model has (its shared experts' shapes)."""
    from mote_convert.checkpoint import read_mote_config

    _, _, want = read_mote_config(model)
    try:
        _, _, have = read_mote_config(checkpoint)
    except MoteError as exc:
        raise FormatError(f"--resume: {checkpoint} is not a MoTE checkpoint ({exc})") from None
    where = f"--resume: {checkpoint} is a checkpoint of another model"
    for what in ("num_experts", "top_k", "layer_prefixes", "projections", "norm_topk_prob"):
        if getattr(have, what) != getattr(want, what):
            raise FormatError(
                f"{where}: its {what} is {_show(getattr(have, what))}, the model's is {_show(getattr(want, what))}"
            )
    source, saved = load_index(model), load_index(checkpoint)
    for prefix in want.layer_prefixes.values():
        expected = {router_name(prefix): source.tensors.get(router_name(prefix))}
        for proj in want.projections:
            shared = source.tensors.get(f"{prefix}.{proj}.weight")
            expected.update({f"{expert_base(prefix, i, proj)}.weight": shared for i in range(want.num_experts)})
        for name, info in expected.items():
            found = saved.tensors.get(name)
            if found is None:
                raise FormatError(f"{where}: it has no {name}")
            if info is not None and found.shape != info.shape:
                raise FormatError(f"{where}: {name} is {list(found.shape)}, the model's is {list(info.shape)}")


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def check_checkpoints_path(checkpoints: Path, out: Path, model: Path) -> None:
    """The checkpoints directory must be a directory (or not exist yet), writable, apart from the
    input model and the output."""
    resolved = checkpoints.resolve()
    for other, what in ((model, "the input"), (out, "the output")):
        other = other.resolve()
        if resolved == other or resolved.is_relative_to(other) or other.is_relative_to(resolved):
            raise OutputExistsError(f"--checkpoints {checkpoints} overlaps {what} {other}; choose another directory")
    if os.path.lexists(checkpoints) and not checkpoints.is_dir():
        raise OutputWriteError(f"--checkpoints {checkpoints}: not a directory")
    check_writable(checkpoints)


class CheckpointsLock:
    """While training, a lock beside the checkpoints directory (``.NAME.mote-lock``): a second run
    into the same directory is refused at once. Leftovers of a killed run's saves (``.checkpoint-N.partial``,
    ``.*.old-*``) are removed under it. Only the launch's main process holds it."""

    def __init__(self, checkpoints: Path, hold: bool = True) -> None:
        self.directory = checkpoints.absolute()
        self.path = self.directory.parent / f".{self.directory.name}.mote-lock"
        self.hold = hold
        self._fd: int | None = None

    def __enter__(self) -> CheckpointsLock:
        if self.hold:
            try:
                self.directory.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise write_error(self.directory.parent, exc, "create the directory of the") from None
            self._fd = acquire_lock(self.path, self.directory)
            self._remove_leftovers()
        return self

    def _remove_leftovers(self) -> None:
        if not self.directory.is_dir():
            return
        for entry in self.directory.iterdir():
            if entry.name.startswith(".checkpoint-") and (entry.name.endswith(".partial") or ".old-" in entry.name):
                try:
                    shutil.rmtree(entry)
                except OSError as exc:
                    raise write_error(entry, exc, "remove a killed run's leftover in the") from None

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            release_lock(self._fd, self.path)
            self._fd = None
