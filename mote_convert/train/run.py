"""``mote-convert train``: stage-3 QAT of an upcycled MoTE checkpoint with the Hugging Face Trainer.

The Trainer (and through it accelerate, DDP, DeepSpeed ZeRO, FSDP) does the training; this module
only assembles it: the model in train mode (routers and routed experts trainable, the load-balancing
loss in ``outputs.loss``), LLaVA-format data rendered by the model's own processor, the recipe's
TrainingArguments, and at the end a MoTE checkpoint (packed by default) written beside ``out`` and
renamed when complete. The Trainer's own checkpoints (latent experts, optimizer and scheduler
state) go to ``checkpoints`` (default ``OUT.checkpoints``), from which ``resume=True`` continues.

Run it as one process, or under ``torchrun`` / ``accelerate launch``: every process runs the same
call; the final checkpoint is written by the main process only.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mote_convert.checkpoint import one_read_per_file
from mote_convert.errors import (
    CorruptCheckpointError,
    InputNotFoundError,
    Interrupted,
    MoteError,
    OptionsError,
)
from mote_convert.io.staging import check_output_path
from mote_convert.train.checkpoints import (
    CheckpointsLock,
    check_checkpoints_path,
    check_fits,
    checkpoints_in,
    resume_point,
)
from mote_convert.train.recipe import TrainRecipe

FINAL_LATENT = "final-latent"
MAX_DEEPSPEED_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class TrainResult:
    """What a training run did and wrote."""

    out: Path
    checkpoints: Path
    steps: int
    losses: tuple[float, ...]  # the training loss at each logging step
    world_size: int
    accumulation_steps: int
    main_process: bool  # this process wrote the output (the others of a launch only trained)
    resumed_from: Path | None = None  # the checkpoint the run continued from
    loss_curve: Path | None = None  # the picture of the losses (OUT.loss.png), by the main process
    steps_logged: tuple[int, ...] = ()  # the optimizer step of each entry of ``losses``
    recipe: TrainRecipe | None = None  # what the run applied
    bf16: bool = False  # whether it trained under bf16 (the recipe's, or "auto" resolved on this device)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (``train --json``): every applied option included."""
        from dataclasses import asdict

        return {
            "output": str(self.out),
            "checkpoints": str(self.checkpoints),
            "steps": self.steps,
            "processes": self.world_size,
            "accumulation_steps": self.accumulation_steps,
            "losses": [{"step": s, "loss": loss} for s, loss in zip(self.steps_logged, self.losses, strict=True)],
            "loss_curve": str(self.loss_curve) if self.loss_curve is not None else None,
            "resumed_from": str(self.resumed_from) if self.resumed_from is not None else None,
            "bf16": self.bf16,
            "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.recipe).items()}
            if self.recipe is not None
            else None,
        }


def world_size() -> int:
    """The number of processes of this launch (torchrun / accelerate set WORLD_SIZE; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def one_process_launch() -> None:
    """Give a process that no launcher started the environment torchrun gives one process (rank 0
    of 1, a free local port). DeepSpeed then sets up torch.distributed itself; without it, it looks
    for an MPI launcher and fails. Nothing changes under a launcher."""
    if any(key in os.environ for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")


def default_checkpoints(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoints")


def training_arguments(recipe: TrainRecipe, checkpoints: Path, world: int, **overrides: Any) -> Any:
    """The Trainer's arguments for ``recipe`` on ``world`` processes."""
    import torch
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = {
        "output_dir": str(checkpoints),
        "learning_rate": recipe.learning_rate,
        "lr_scheduler_type": recipe.lr_scheduler,
        "warmup_steps": recipe.warmup_ratio,  # a float below 1: a ratio of the total steps
        "weight_decay": recipe.weight_decay,
        "num_train_epochs": recipe.epochs,
        "max_steps": recipe.max_steps,
        "per_device_train_batch_size": recipe.per_device_batch_size,
        "gradient_accumulation_steps": recipe.accumulation_steps(world),
        "bf16": recipe.uses_bf16(),
        "activation_checkpointing": recipe.gradient_checkpointing,
        # non-reentrant: the aux loss's gradient and the frozen embeddings need nothing special
        "activation_checkpointing_kwargs": {"use_reentrant": False},
        "save_strategy": "steps",
        "save_steps": recipe.save_steps,
        "save_total_limit": recipe.save_total_limit,
        "logging_steps": recipe.logging_steps,
        "seed": recipe.seed,
        "dataloader_num_workers": recipe.dataloader_num_workers,
        "remove_unused_columns": False,  # pixel_values and labels go to the model as they are
        "report_to": list(recipe.report_to) or "none",
        "disable_tqdm": True,  # progress is the caller's (the CLI shows a rich one)
        "log_level": "error",  # the library never prints; the Trainer's notices stay quiet on every rank
        "log_level_replica": "error",
        "deepspeed": recipe.deepspeed,
        "use_cpu": not torch.cuda.is_available(),
    }
    if world > 1 and not torch.cuda.is_available():
        kwargs["ddp_backend"] = "gloo"  # CPU processes
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def fsdp2_launch(args: Any) -> bool:
    """Whether the Trainer will shard with FSDP2 (``accelerate launch`` with an FSDP2 config, or the
    ``fsdp`` arguments): on CUDA only, as accelerate falls back to DDP on the CPU."""
    import torch

    if not torch.cuda.is_available():
        return False
    from_env = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and os.environ.get("FSDP_VERSION") == "2"
    from_args = (
        bool(getattr(args, "fsdp", None)) and str((getattr(args, "fsdp_config", None) or {}).get("version")) == "2"
    )
    return from_env or from_args


@one_read_per_file()
def train(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    image_folder: str | Path | None = None,
    recipe: TrainRecipe | None = None,
    checkpoints: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    allow_images_outside: bool = False,
    callbacks: Sequence[Any] = (),
    notify: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the routers and routed experts of the MoTE checkpoint ``model`` on LLaVA-format ``data``
    (images under ``image_folder``; one elsewhere only with ``allow_images_outside``) and write the
    trained MoTE checkpoint to ``out``.

    ``callbacks`` are ``transformers.TrainerCallback`` objects (the CLI's progress display). With
    ``resume=True`` the run continues from the latest complete checkpoint in ``checkpoints``;
    ``notify`` is told which (and which later ones were skipped). Everything that can be refused is
    refused before the model loads; a stopping signal ends the run at the next micro-step with
    every complete checkpoint kept, and a non-finite gradient stops it before the optimizer step.
    """
    import torch
    from transformers import AutoProcessor, PrinterCallback

    from mote_convert.card import CARD
    from mote_convert.checkpoint import read_mote_config
    from mote_convert.io.jsonfile import JsonFileError, check_side_files, load_json
    from mote_convert.io.staging import InterruptSignals
    from mote_convert.modeling.distributed import release_float32, shard_routers
    from mote_convert.modeling.load import attach_aux_loss, load_model
    from mote_convert.pack import pack
    from mote_convert.train.curve import loss_curve_path, write_loss_curve
    from mote_convert.train.data import Collator, ConversationDataset, read_records
    from mote_convert.train.trainer import MoteTrainer, StopOnSignal

    recipe = recipe or TrainRecipe()
    model_path, out = Path(model), Path(out)
    checkpoints = Path(checkpoints) if checkpoints is not None else default_checkpoints(out)
    world = world_size()
    recipe.accumulation_steps(world)  # a batch that does not divide is refused before any work
    if recipe.deepspeed is not None:
        if not Path(recipe.deepspeed).is_file():
            raise InputNotFoundError(f"{recipe.deepspeed}: no such DeepSpeed config")
        try:
            load_json(Path(recipe.deepspeed), MAX_DEEPSPEED_CONFIG_BYTES)
        except JsonFileError as exc:
            raise OptionsError(f"deepspeed config {recipe.deepspeed}: {exc}") from None
    read_mote_config(model_path)  # a dense or malformed checkpoint is refused here, by name
    check_side_files(model_path)  # and a malformed tokenizer or processor file, before transformers parses it
    check_output_path(out, overwrite=overwrite, protect=(model_path,))
    check_checkpoints_path(checkpoints, out, model_path)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with CheckpointsLock(checkpoints, hold=main_rank):
        point = None
        if resume:
            point = resume_point(checkpoints)
            check_fits(model_path, point.path)  # a checkpoint of another model is refused before the model loads
            if notify is not None and main_rank:
                notify(point.describe())
        elif checkpoints_in(checkpoints) and not overwrite:
            raise OptionsError(
                f"{checkpoints} holds checkpoints of an earlier run: give --resume to continue it, or --overwrite"
            )

        records = read_records(data, image_folder, allow_outside=allow_images_outside)
        try:
            processor = AutoProcessor.from_pretrained(model_path)
        except (OSError, ValueError, TypeError) as exc:
            raise InputNotFoundError(f"{model_path}: no processor to render the data with ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - tokenizers refuses a malformed file with any kind (KeyError, ...)
            raise CorruptCheckpointError(
                f"{model_path}: transformers cannot load the processor ({type(exc).__name__}: {exc})"
            ) from exc
        dataset = ConversationDataset(records, processor, recipe.max_length)
        dataset.first_supervised()  # no record with an answer left after max_length: refused before the model loads
        check_first_step_learns(recipe, len(dataset), world)
        pad_id = processor.tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else processor.tokenizer.eos_token_id or 0

        # The frozen weights (dense model, shared experts) stay in the checkpoint's dtype (bf16 / fp16 for
        # real models), so that the output holds them unchanged. What trains must not be low precision:
        # a latent weight's small updates would round away in bf16. DeepSpeed's bf16 holds one dtype for
        # every parameter, with float32 master weights of its own; without it the routers and latent
        # experts are float32 parameters (autocast runs the products in bf16 where the recipe says bf16).
        try:
            net = load_model(model_path, mode="train")
        except (MoteError, OSError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - config values transformers' model classes accept, then fail to build with
            raise CorruptCheckpointError(
                f"{model_path}: transformers cannot build the model ({type(exc).__name__}: {exc})"
            ) from exc
        attach_aux_loss(net, recipe.router_aux_loss_coef)
        net.config.use_cache = False
        if recipe.deepspeed is not None and recipe.uses_bf16():
            release_float32(net)
        else:
            for param in net.parameters():
                if param.requires_grad:
                    param.data = param.data.to(torch.float32)
        if recipe.deepspeed is not None:
            one_process_launch()
        args = training_arguments(recipe, checkpoints, world)
        if fsdp2_launch(args):
            _ = args.device  # sets up the process group, as the Trainer would
            shard_routers(net)  # float32 FSDP units that accelerate's bf16 policy then leaves alone
        trainer = MoteTrainer(
            model=net,
            args=args,
            train_dataset=dataset,
            data_collator=Collator(pad_id),
            processing_class=processor,
            callbacks=[StopOnSignal(), *callbacks],
        )
        trainer.remove_callback(PrinterCallback)  # the library never prints
        with InterruptSignals():
            try:
                trainer.train(resume_from_checkpoint=str(point.path) if point is not None else None)
            except Interrupted as exc:
                raise Interrupted(exc.signum, _what_is_left(checkpoints)) from None

            final = checkpoints / FINAL_LATENT
            trainer.save_model(str(final))  # gathers sharded parameters (ZeRO-3, FSDP) as the engine does
        main = trainer.is_world_process_zero()
        if main:
            if (model_path / CARD).is_file():  # the input's card names the base model: the output's keeps it
                shutil.copy2(model_path / CARD, final / CARD)
            if recipe.expert_format == "packed-2bit":
                pack(final, out, overwrite=overwrite)
            else:
                _publish_copy(final, out, overwrite)
        trainer.accelerator.wait_for_everyone()
    logged = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    curve = None
    if main and logged:
        curve = write_loss_curve(logged, loss_curve_path(out), title=f"mote-convert train {out.name}")
    return TrainResult(
        out,
        checkpoints,
        trainer.state.global_step,
        tuple(loss for _, loss in logged),
        world,
        args.gradient_accumulation_steps,
        main,
        point.path if point is not None else None,
        curve,
        tuple(step for step, _ in logged),
        recipe,
        bool(args.bf16),
    )


def check_first_step_learns(recipe: TrainRecipe, records: int, world: int) -> None:
    """Refuse a run whose every optimizer step has a learning rate of 0: one step, under warm-up
    (the schedule's first step is at 0 while it warms up)."""
    if recipe.max_steps > 0:
        steps = recipe.max_steps
    else:
        batches = math.ceil(records / (recipe.per_device_batch_size * world))
        steps = math.ceil(recipe.epochs * max(batches // recipe.accumulation_steps(world), 1))
    if steps == 1 and recipe.warmup_ratio > 0 and recipe.lr_scheduler != "constant":
        raise OptionsError(
            f"this run makes 1 optimizer step ({records} records, global_batch_size {recipe.global_batch_size}), and "
            f"warm-up (warmup_ratio {recipe.warmup_ratio}) gives that step a learning rate of 0: nothing would learn. "
            "Lower global_batch_size, raise epochs or max_steps, or set warmup_ratio: 0"
        )


def _what_is_left(checkpoints: Path) -> str:
    found = checkpoints_in(checkpoints)
    if not found:
        return "no checkpoint was written yet"
    return f"the checkpoints in {checkpoints} are complete; --resume continues from {found[0][1].name}"


def _publish_copy(source: Path, out: Path, overwrite: bool) -> None:
    """Copy a finished latent checkpoint to ``out`` through a staged output."""
    from mote_convert.io.staging import StagedOutput

    with StagedOutput(out, overwrite=overwrite) as staging:
        for path in sorted(source.iterdir()):
            if path.is_file():
                shutil.copy2(path, staging / path.name)
