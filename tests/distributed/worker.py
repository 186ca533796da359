"""Three SGD steps of a MoTE model on one engine; run by tests/distributed/test_engines.py.

    python worker.py single MODEL OUT            # one process, the ranks' batches accumulated
    torchrun --nproc_per_node 2 worker.py ENGINE MODEL OUT [--bf16]   # ENGINE: ddp fsdp2 zero2 zero3

Every rank draws its own batches (rank r, step s: seed 1000 * s + r), short enough that routing
leaves some expert without a token on some rank (the routing counts are saved, and the test checks
that it happened). ``single`` runs the same batches in one process: per step, the loss of each
rank's batch divided by the world size, backpropagated in turn (the gradient data parallelism
averages). Each rank saves its trainable parameters, gathered whole, to OUT/rank{r}.pt; rank 0
also saves every frozen parameter.

FSDP2 is applied with ``fully_shard`` directly (mote_convert.modeling.distributed): accelerate and
the Trainer fall back to DDP on the CPU when asked for FSDP, so they would not test it here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

WORLD = 2
STEPS = 3
SEQ = 5
# SGD, not AdamW: its update is proportional to the gradient, so a gradient off by a constant factor
# (a sum across ranks instead of a mean) moves the weights by another amount; lr large enough that
# three steps move them far beyond the comparison tolerance.
LR = 1.0


def batch(step: int, rank: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    ids = torch.randint(0, vocab - 1, (1, SEQ), generator=g)  # the last id is LLaVA's image token
    return {"input_ids": ids, "labels": ids.clone()}


def record_routing(model: torch.nn.Module, log: list[list[int]]) -> None:
    """Append each router call's per-expert token counts to ``log`` (forward hooks)."""
    from mote_convert.modeling.load import mote_blocks

    for block in mote_blocks(model):

        def hook(module, args, output, n=block.num_experts):  # noqa: ANN001, ANN202
            log.append(torch.bincount(output.detach().argmax(-1).reshape(-1), minlength=n).tolist())

        block.router.register_forward_hook(hook)


def full(p: torch.Tensor) -> torch.Tensor:
    return (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().to("cpu", torch.float32).clone()


def accelerate_fsdp2(model: torch.nn.Module, bf16: bool) -> torch.nn.Module:
    """accelerate's own FSDP2 preparation (what the Trainer's ``fsdp`` option runs on GPUs), called
    directly: on the CPU, accelerate would pick DDP instead. The routers are sharded first as
    ``mote-convert train`` does (mote_convert.modeling.distributed.shard_routers)."""
    from types import SimpleNamespace

    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from mote_convert.modeling.distributed import shard_routers

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["LlamaDecoderLayer", "CLIPEncoderLayer"],
        mixed_precision_policy=policy,
        cpu_ram_efficient_loading=False,
    )
    accelerator = SimpleNamespace(
        state=SimpleNamespace(fsdp_plugin=plugin),
        torch_device_mesh=None,
        mixed_precision="bf16" if bf16 else "no",
        is_main_process=True,
        device=torch.device("cpu"),
    )
    shard_routers(model)
    return fsdp2_prepare_model(accelerator, model)


def main() -> None:
    engine, model_path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    bf16 = "--bf16" in sys.argv
    import mote_convert

    torch.manual_seed(0)
    rank = 0
    if engine != "single":
        import torch.distributed as dist

        dist.init_process_group("gloo")
        rank = dist.get_rank()
        assert dist.get_world_size() == WORLD
    model = mote_convert.load_model(model_path, mode="train", dtype=torch.float32)
    model.train()
    vocab = model.config.text_config.vocab_size
    routing: list[list[int]] = []
    record_routing(model, routing)
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    router_dtypes: list[str] = []

    if engine == "single":
        optimizer = torch.optim.SGD(trainable, lr=LR)
        for step in range(STEPS):
            optimizer.zero_grad()
            for r in range(WORLD):
                (model(**batch(step, r, vocab)).loss / WORLD).backward()
            optimizer.step()
        params = {names[id(p)]: full(p) for p in trainable}
    elif engine in ("ddp", "fsdp2", "accelerate-fsdp2"):
        if engine == "ddp":
            wrapped = torch.nn.parallel.DistributedDataParallel(model)
        elif engine == "accelerate-fsdp2":
            wrapped = accelerate_fsdp2(model, bf16)
        else:
            from torch.distributed.fsdp import MixedPrecisionPolicy

            from mote_convert.modeling.distributed import fully_shard_mote

            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
            wrapped = fully_shard_mote(model, mp_policy=policy)
        if bf16 and engine != "ddp":
            from mote_convert.modeling.load import mote_blocks

            def probe(module, args, output):  # noqa: ANN001, ANN202
                router_dtypes.append(f"{module.weight.dtype}/{output.dtype}")

            for block in mote_blocks(model):
                block.router.register_forward_hook(probe)
        if engine != "ddp":
            # fully_shard replaces every parameter by a sharded (DTensor) one
            names = {id(p): n for n, p in model.named_parameters()}
            trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=LR)
        for step in range(STEPS):
            optimizer.zero_grad()
            wrapped(**batch(step, rank, vocab)).loss.backward()
            optimizer.step()
        params = {names[id(p)]: full(p) for p in trainable}
    elif engine in ("zero2", "zero3"):
        import deepspeed

        config = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": int(engine[-1])},
            "zero_allow_untested_optimizer": True,
        }
        optimizer = torch.optim.SGD(trainable, lr=LR)
        ds, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        for step in range(STEPS):
            loss = ds(**batch(step, rank, vocab)).loss
            ds.backward(loss)
            ds.step()
        with deepspeed.zero.GatheredParameters(list(model.parameters()), enabled=engine == "zero3"):
            params = {names[id(p)]: full(p) for p in trainable}
            frozen_after = {n: full(p) for n, p in model.named_parameters() if not p.requires_grad}
    else:
        raise SystemExit(f"unknown engine {engine!r}")

    if engine not in ("zero2", "zero3"):
        frozen_after = {n: full(p) for n, p in model.named_parameters() if not p.requires_grad}
    result = {
        "params": params,
        "routing": routing,
        "router_dtypes": router_dtypes,
        "frozen_unchanged": all(torch.equal(frozen_before[n].float(), frozen_after[n]) for n in frozen_before),
        "frozen_count": len(frozen_before),
    }
    torch.save(result, out / f"rank{rank}.pt")
    if engine != "single":
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
