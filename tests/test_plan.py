"""The plan: every tensor decided and validated before anything is written."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mote_convert.errors import PlanError
from mote_convert.io.shards import TensorSpec
from mote_convert.options import UpcycleOptions
from mote_convert.plan import COPY, ENCODE, ROUTER, PlanEntry, validate
from mote_convert.upcycle import plan_upcycle


def test_plan_accounts_for_every_tensor(tiny_llava: Path) -> None:
    plan = plan_upcycle(tiny_llava, UpcycleOptions(num_experts=3))
    ops = [e.op for e in plan.entries]
    assert ops.count(ROUTER) == 2
    parts = [e.part for e in plan.entries if e.op == ENCODE]
    assert parts.count("weight_packed") == parts.count("weight_scale") == len(parts) // 2 == 2 * 3 * 3
    assert ops.count(COPY) == len(plan.source)
    # name order, except that each MoE layer's new tensors (experts, router) come right after the
    # other tensors of their decoder layer, whose copies they are encoded beside
    names = [e.out.name for e in plan.entries]
    old = [e.out.name for e in plan.entries if e.layer is None]
    assert old == sorted(old)
    for layer in plan.moe_layers:
        parent = layer.prefix.rsplit(".", 1)[0] + "."
        in_layer = [i for i, n in enumerate(names) if n.startswith(parent)]
        new = [i for i in in_layer if plan.entries[i].layer is not None]
        assert new == list(range(in_layer[-1] - len(new) + 1, in_layer[-1] + 1))  # the layer's last entries
        assert in_layer == list(range(in_layer[0], in_layer[-1] + 1))  # the layer stays in one piece
        assert [names[i] for i in new] == sorted(names[i] for i in new)
    s = plan.summary()
    assert s.tensors_in == len(plan.source) and s.tensors_out == len(plan.entries)
    assert s.bytes_out == sum(e.out.nbytes for e in plan.entries)


def test_validate_catches_broken_plans(tiny_llava: Path) -> None:
    plan = plan_upcycle(tiny_llava)
    entries = list(plan.entries)
    dropped = replace(plan, entries=tuple(e for e in entries if e.op != COPY or "norm" not in e.out.name), shards=())
    with pytest.raises(PlanError, match="not accounted for"):
        validate(dropped)
    i = next(k for k, e in enumerate(entries) if e.part == "weight_packed")
    bad = entries[i]
    entries[i] = replace(bad, out=TensorSpec(bad.out.name, "U8", (bad.out.shape[0] + 1, bad.out.shape[1])))
    with pytest.raises(PlanError, match="planned as U8"):
        validate(replace(plan, entries=tuple(entries), shards=()))
    with pytest.raises(PlanError, match="twice"):
        validate(replace(plan, entries=plan.entries + plan.entries[:1], shards=()))
    ghost = PlanEntry(TensorSpec("x", "F32", (1,)), COPY, "no.such.tensor")
    with pytest.raises(PlanError, match="does not hold"):
        validate(replace(plan, entries=plan.entries + (ghost,), shards=()))


def test_a_decoder_with_dense_ffns_in_some_layers_only(tiny_llava: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where only some layers have a dense FFN, those are up-cycled by default, and --layers selects
    among them (a layer without one, asked by index, is named)."""
    import mote_convert.upcycle_plan as upcycle_plan
    from mote_convert.arch import architecture_of
    from mote_convert.checkpoint import read_config

    real = architecture_of(read_config(tiny_llava))
    hybrid = replace(real, ffn_layers=(1,))
    monkeypatch.setattr(upcycle_plan, "dense_architecture", lambda config, root: hybrid)
    assert [m.layer for m in plan_upcycle(tiny_llava).moe_layers] == [1]
    assert [m.layer for m in plan_upcycle(tiny_llava, UpcycleOptions(layers="odd")).moe_layers] == [1]
    with pytest.raises(PlanError, match="layer 0 of llava has no dense FFN .*the layers that have one: 1"):
        plan_upcycle(tiny_llava, UpcycleOptions(layers="0,1"))
    with pytest.raises(PlanError, match="selects no layer of 2 that has a dense FFN"):
        plan_upcycle(tiny_llava, UpcycleOptions(layers="even"))
