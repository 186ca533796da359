"""The Hugging Face ``Trainer`` as ``train`` runs it: the stock loop, with four MoTE-specific hooks.

* **Checkpoints written beside their place.** ``_save_checkpoint`` saves into
  ``.checkpoint-N.partial/`` (every process of a launch writes its part there), and the main process
  renames it to ``checkpoint-N`` once everything is written; a stop (signal, disk full) removes it.
  Older checkpoints beyond ``save_total_limit`` are renamed away before they are deleted, so a
  ``checkpoint-N`` directory is always whole.
* **Resume that loads.** ``_load_from_checkpoint`` loads the routers and latent experts by their
  on-disk names (:func:`~mote_convert.modeling.load.load_trainable`), strictly: the stock method
  loads non-strictly by in-memory names, which match none of a saved checkpoint's (its tensors are
  under the checkpoint's own key style), and so silently loaded nothing.
* **A non-finite gradient stops training** before the optimizer step that would spread it into
  every weight (``_get_grad_norm``: the same global norm on every process, so all stop together).
* **Signals.** SIGINT / SIGTERM / SIGHUP are recorded while training and acted on at the next
  micro-step or save (:class:`StopOnSignal`).
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from mote_convert.errors import OutputWriteError, TrainingError, describe_os_error
from mote_convert.io.staging import check_interrupted
from mote_convert.train.checkpoints import checkpoints_in, staging_name


class StopOnSignal(TrainerCallback):
    """Raise :class:`~mote_convert.errors.Interrupted` at the first safe point after a stopping
    signal (the handlers of :class:`~mote_convert.io.staging.InterruptSignals` only record it)."""

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        check_interrupted()

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        check_interrupted()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        check_interrupted()


class MoteTrainer(Trainer):
    """``Trainer`` with staged checkpoints, a strict resume and a stop on non-finite gradients."""

    _staging_run_dir: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        # While a checkpoint is saved, the "run directory" the stock _save_checkpoint writes
        # checkpoint-N into is the staging directory.
        return self._staging_run_dir if self._staging_run_dir is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from safetensors import SafetensorError

        run_dir = Path(super()._get_output_dir(trial))
        step = self.state.global_step
        staging, final = run_dir / staging_name(step), run_dir / f"checkpoint-{step}"
        limit, self.args.save_total_limit = self.args.save_total_limit, None  # rotated below, after the rename
        self._staging_run_dir = str(staging)
        try:
            check_interrupted()
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every process's files are in place
            check_interrupted()
            if self.args.should_save:
                _commit(staging / final.name, final)
                _remove(staging)
                _rotate(run_dir, limit)
        except (OSError, SafetensorError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "PytorchStreamWriter" not in str(exc):
                raise
            if self.args.should_save:
                _remove(staging)
            detail = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            raise OutputWriteError(f"{final}: cannot write the checkpoint ({detail})") from None
        except BaseException:
            if self.args.should_save:
                _remove(staging)
            raise
        finally:
            self._staging_run_dir = None
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        from mote_convert.modeling.load import load_trainable

        if self.is_deepspeed_enabled or self.is_fsdp_enabled:  # their engines load their own checkpoint files
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_trainable(
            self.accelerator.unwrap_model(model if model is not None else self.model), resume_from_checkpoint
        )

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        value = float(norm.item() if hasattr(norm, "item") else norm)
        if not math.isfinite(value):
            raise TrainingError(
                f"step {self.state.global_step + 1}: the gradient norm is {value}; training stopped before the "
                "optimizer step (no weight took it). Lower learning_rate or router_aux_loss_coef, or check the data"
            )
        return norm

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        # save_pretrained asks the model's quantizer for the state dict to write, and a train-mode
        # MoTE model answers "the model's own": under ZeRO-3 that is the empty partitioned
        # parameters, and the whole tensors the Trainer gathered would be dropped. With a
        # gathered state dict (the latent experts under their on-disk names), write it as given.
        if state_dict is None:
            return super()._save(output_dir, state_dict=state_dict)
        model = self.accelerator.unwrap_model(self.model)
        quantizer = getattr(model, "hf_quantizer", None)
        model.hf_quantizer = None
        try:
            return super()._save(output_dir, state_dict=state_dict)
        finally:
            model.hf_quantizer = quantizer


def _commit(written: Path, final: Path) -> None:
    """Rename a complete checkpoint into place (one of the same step, from an earlier run, set aside first)."""
    if os.path.lexists(final):
        _remove(final)
    os.replace(written, final)


def _remove(path: Path) -> None:
    """Remove a directory by renaming it to a hidden name first: no ``checkpoint-N`` is ever half deleted."""
    if not os.path.lexists(path):
        return
    trash = path.with_name(f".{path.name.lstrip('.')}.old-{uuid.uuid4().hex[:8]}")
    os.replace(path, trash)
    shutil.rmtree(trash)


def _rotate(run_dir: Path, limit: int | None) -> None:
    """Keep the newest ``limit`` checkpoints."""
    if limit is None or limit <= 0:
        return
    for _, path in checkpoints_in(run_dir)[limit:]:
        _remove(path)


__all__ = ["MoteTrainer", "StopOnSignal"]
