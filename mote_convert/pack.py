"""``pack``: a latent MoTE checkpoint in, the packed-2bit one out; every other tensor byte-identical."""

from __future__ import annotations

from pathlib import Path

from mote_convert.arch import architecture_of
from mote_convert.card import card_writer
from mote_convert.check import require_sound
from mote_convert.checkpoint import model_type_of, one_read_per_file, read_mote_config
from mote_convert.errors import FormatError
from mote_convert.format import ExpertFormat, expert_base, get_codec, router_name
from mote_convert.io.index import load_index
from mote_convert.io.shards import ProgressFn, TensorSpec
from mote_convert.io.source import resolve_model
from mote_convert.options import DEFAULT_MAX_SHARD_SIZE, parse_size
from mote_convert.plan import COPY, UPCAST, ConversionPlan, PlanEntry, encode_entries, validate
from mote_convert.write import ConversionResult, write_plan

# A training engine that holds every parameter in bf16 (DeepSpeed) saves its bf16 copy of the
# routers; pack widens them to the format's float32 (exactly).
ENGINE_ROUTER_DTYPES = ("F32", "BF16", "F16")


@one_read_per_file()
def build_pack_plan(root: str | Path, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> ConversionPlan:
    """Plan ``pack``: each latent expert weight becomes the packed codec's tensors; routers stored in
    bf16 / fp16 are widened to float32; the rest is copied."""
    root = Path(root)
    config, _, mote = read_mote_config(root)
    if mote.expert_format is not ExpertFormat.LATENT:
        raise FormatError(
            f"{root} is already packed (expert_format {mote.expert_format.value!r}); pack needs a latent checkpoint"
        )
    max_shard_size = parse_size(max_shard_size)
    index = load_index(root)
    # what inspect reports is refused before any write; the latent values are checked as they stream
    # (a non-finite weight would pack to a non-finite gamma), naming the tensor
    model_type_of(config, root)
    arch = architecture_of(config)
    require_sound(root, index, config, arch, mote, router_dtypes=ENGINE_ROUTER_DTYPES)
    latent = get_codec(ExpertFormat.LATENT)
    weights = {
        f"{expert_base(prefix, i, proj)}.{latent.primary}": layer
        for layer, prefix in mote.layer_prefixes.items()
        for i in range(mote.num_experts)
        for proj in mote.projections
    }
    prefixes = set(mote.layer_prefixes.values())
    routers = {router_name(prefix) for prefix in prefixes}
    entries: list[PlanEntry] = []
    for info in index:
        layer = weights.get(info.name)
        if info.name in routers and info.dtype in ("BF16", "F16"):
            entries.append(PlanEntry(TensorSpec(info.name, "F32", info.shape), UPCAST, info.name))
            continue
        if layer is None:
            entries.append(PlanEntry(TensorSpec(info.name, info.dtype, info.shape), COPY, info.name))
            continue
        entries += encode_entries(info.name.removesuffix(f".{latent.primary}"), info, ExpertFormat.PACKED_2BIT, layer)
    entries.sort(key=lambda e: e.out.name)
    plan = ConversionPlan(index, config, mote.with_format(ExpertFormat.PACKED_2BIT), tuple(entries), (), max_shard_size)
    validate(plan)
    return plan


@one_read_per_file()
def pack(
    in_path: str | Path,
    out_path: str | Path,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
    revision: str | None = None,
) -> ConversionResult:
    """Turn a latent MoTE checkpoint (e.g. after training; a directory, or a Hub repo id at
    ``revision``) into the packed-2bit one."""
    source = resolve_model(in_path, revision)
    plan = build_pack_plan(source, max_shard_size)
    card = card_writer(in_path, source)
    return write_plan(plan, Path(out_path), overwrite=overwrite, dry_run=dry_run, progress=progress, finish=card)
