"""The training recipe: a typed, frozen, validated description of one ``mote-convert train`` run.

The defaults are MoE-LLaVA's stage 3 (the MoE stage the MoTE paper builds on): learning rate 2e-5,
cosine schedule, warmup 3% of the steps, no weight decay, 1 epoch, bf16, global batch 128
(per-device batch x devices x accumulation), load-balancing coefficient 0.01, gradient
checkpointing on. ``configs/train/moe-llava-stage3.yaml`` writes them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from mote_convert.errors import OptionsError
from mote_convert.options import known_keys, read_recipe_file
from mote_convert.resources import train_recipe_dir

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
EXPERT_FORMATS = ("packed-2bit", "latent")
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class TrainRecipe:
    """Everything that decides how ``train`` trains (CLI flags override a recipe file's values)."""

    learning_rate: float = 2e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_steps: int = -1  # > 0: stop after this many optimizer steps (overrides epochs)
    global_batch_size: int = 128
    per_device_batch_size: int = 4
    bf16: bool | str = "auto"  # True, False, or "auto": bf16 where the device computes it natively
    gradient_checkpointing: bool = True
    router_aux_loss_coef: float = 0.01
    max_length: int = 2048
    expert_format: str = "packed-2bit"  # of the final checkpoint
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 1
    seed: int = 0
    dataloader_num_workers: int = 0
    deepspeed: str | None = None  # a DeepSpeed JSON config (configs/launch/zero2.json, zero3.json)
    report_to: tuple[str, ...] = ()  # the Trainer's loggers: tensorboard, wandb, mlflow, ... (none by default)

    def __post_init__(self) -> None:
        for name in ("learning_rate", "warmup_ratio", "weight_decay", "epochs", "router_aux_loss_coef"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise OptionsError(f"{name} must be a finite number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.warmup_ratio >= 1:
            raise OptionsError(f"warmup_ratio must be below 1, got {self.warmup_ratio}")
        for name, low in (
            ("max_steps", -1),
            ("global_batch_size", 1),
            ("per_device_batch_size", 1),
            ("max_length", 8),
            ("save_steps", 1),
            ("save_total_limit", 1),
            ("logging_steps", 1),
            ("seed", 0),
            ("dataloader_num_workers", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OptionsError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.max_steps == 0:
            raise OptionsError("max_steps must be positive (or -1: train for `epochs`)")
        if self.epochs == 0 and self.max_steps == -1:
            raise OptionsError("epochs must be above 0 (or give max_steps): a run of 0 epochs trains nothing")
        if self.seed > MAX_SEED:
            raise OptionsError(f"seed must be at most {MAX_SEED} (numpy's seeds are 32-bit), got {self.seed}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise OptionsError(f"gradient_checkpointing must be true or false, got {self.gradient_checkpointing!r}")
        if not isinstance(self.bf16, bool) and self.bf16 != "auto":
            raise OptionsError(f"bf16 must be true, false or auto, got {self.bf16!r}")
        object.__setattr__(self, "report_to", _report_to(self.report_to))
        if self.lr_scheduler not in SCHEDULERS:
            raise OptionsError(f"unknown lr_scheduler {self.lr_scheduler!r}; known: {', '.join(SCHEDULERS)}")
        if self.expert_format not in EXPERT_FORMATS:
            raise OptionsError(f"unknown expert_format {self.expert_format!r}; known: {', '.join(EXPERT_FORMATS)}")
        if self.deepspeed is not None and not isinstance(self.deepspeed, str):
            raise OptionsError(f"deepspeed must be the path of a DeepSpeed JSON config, got {self.deepspeed!r}")

    def uses_bf16(self) -> bool:
        """Whether the run trains under bf16: as the recipe says, or for "auto" where the device
        computes bf16 natively: a CUDA device that supports it, or a CPU with bf16 instructions
        (AVX512-BF16, AMX). Elsewhere bf16 is emulated, many times slower than float32
        (docs/training.md has the figures), so "auto" trains in float32."""
        if isinstance(self.bf16, bool):
            return self.bf16
        import torch

        if torch.cuda.is_available():
            return bool(torch.cuda.is_bf16_supported())
        return cpu_has_bf16()

    def accumulation_steps(self, world_size: int) -> int:
        """Gradient accumulation that makes ``global_batch_size`` from the per-device batch and the devices."""
        per_step = self.per_device_batch_size * world_size
        if self.global_batch_size % per_step:
            raise OptionsError(
                f"global_batch_size {self.global_batch_size} is not a multiple of per_device_batch_size "
                f"{self.per_device_batch_size} x {world_size} process(es) = {per_step}"
            )
        return self.global_batch_size // per_step

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainRecipe:
        """A recipe from a mapping; unknown keys are an error naming the known ones."""
        return cls(**known_keys(values, {f.name for f in fields(cls)}, "training option"))

    def with_overrides(self, **overrides: Any) -> TrainRecipe:
        """A copy with the non-None overrides applied (how CLI flags beat a recipe)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX tiles), as torch sees it."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private)
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def reporting_integrations() -> tuple[str, ...]:
    """The names the Trainer's ``report_to`` takes (its integrations, plus "all" and "none")."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return (*INTEGRATION_TO_CALLBACK, "all", "none")


def _report_to(value: Any) -> tuple[str, ...]:
    """``report_to`` as a tuple of known names: a list, or one name or a comma-separated string."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise OptionsError(f"report_to must be a list of names, got {value!r}")
    if not value:
        return ()
    known = reporting_integrations()
    unknown = [v for v in value if v not in known]
    if unknown:
        raise OptionsError(f"unknown report_to {unknown[0]!r}; known: {', '.join(known)}")
    return () if tuple(value) == ("none",) else tuple(value)


def load_train_recipe(name_or_path: str | Path | None) -> TrainRecipe:
    """A training recipe YAML by path, or by name from ``configs/train``; None gives the defaults."""
    if name_or_path is None:
        return TrainRecipe()
    path, data = read_recipe_file(name_or_path, train_recipe_dir(), "training recipe", "shipped")
    try:
        return TrainRecipe.from_mapping(data)
    except OptionsError as exc:
        raise OptionsError(f"training recipe {path}: {exc}") from None
