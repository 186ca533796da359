"""``pack``: a latent MoTE checkpoint in, the packed-2bit one out; every other tensor byte-identical."""

from __future__ import annotations

import re
from pathlib import Path

from mote_convert.errors import FormatError
from mote_convert.io.index import load_index
from mote_convert.io.writer import ProgressFn, TensorSpec
from mote_convert.options import DEFAULT_MAX_SHARD_SIZE, parse_size
from mote_convert.plan import (
    COPY,
    EXPERT_PACKED,
    EXPERT_SCALE,
    ConversionPlan,
    PlanEntry,
    read_config,
    read_mote_section,
    validate,
)
from mote_convert.quant.layout import packed_rows
from mote_convert.upcycle import ConversionResult, write_plan


def build_pack_plan(root: str | Path, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> ConversionPlan:
    """Plan ``pack``: each latent ``P.experts.{i}.{proj}.weight`` becomes ``weight_packed`` + ``weight_scale``."""
    root = Path(root)
    config = read_config(root)
    mote = read_mote_section(config, root)
    if mote["expert_format"] != "latent":
        raise FormatError(f"{root} is already packed (expert_format {mote['expert_format']!r}); pack needs a latent checkpoint")
    index = load_index(root)
    projections = "|".join(re.escape(p) for p in mote["projections"])
    prefixes = "|".join(re.escape(p) for p in mote["layer_prefixes"].values())
    latent = re.compile(rf"^(?:{prefixes})\.experts\.\d+\.(?:{projections})\.weight$")
    entries: list[PlanEntry] = []
    found = 0
    for info in index:
        if latent.match(info.name):
            found += 1
            base = info.name[: -len(".weight")]
            if len(info.shape) != 2:
                raise FormatError(f"{root}: latent expert {info.name} is not 2-D ({list(info.shape)})")
            shape = (packed_rows(info.shape[0]), info.shape[1])
            entries.append(PlanEntry(TensorSpec(f"{base}.weight_packed", "U8", shape), EXPERT_PACKED, info.name))
            entries.append(PlanEntry(TensorSpec(f"{base}.weight_scale", "F32", (1,)), EXPERT_SCALE, info.name))
        else:
            entries.append(PlanEntry(TensorSpec(info.name, info.dtype, info.shape), COPY, info.name))
    expected = int(mote["num_experts"]) * len(mote["projections"]) * len(mote["layer_prefixes"])
    if found != expected:
        raise FormatError(f"{root}: {found} latent expert weights found, config.json['mote'] implies {expected}")
    entries.sort(key=lambda e: e.out.name)
    plan = ConversionPlan(
        index, config, {**mote, "expert_format": "packed-2bit"}, tuple(entries), (), parse_size(max_shard_size)
    )
    validate(plan)
    return plan


def pack(
    in_path: str | Path,
    out_path: str | Path,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
) -> ConversionResult:
    """Turn a latent MoTE checkpoint (e.g. after training) into the packed-2bit one."""
    plan = build_pack_plan(in_path, max_shard_size)
    return write_plan(plan, Path(out_path), overwrite=overwrite, dry_run=dry_run, progress=progress)
