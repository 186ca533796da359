"""Rich tables of what the commands report (rendering stays in the CLI; the library returns data)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from mote_convert.cli.app import fmt_bytes, fmt_count

if TYPE_CHECKING:
    from mote_convert.memory import ComponentMemory, MemoryTable
    from mote_convert.report import InspectionReport


def summary_table(title: str, summary: dict) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    layers = ", ".join(map(str, summary["layers"]))
    table.add_row("MoE layers", f"{summary['moe_layers']}: {layers}" if layers else str(summary["moe_layers"]))
    table.add_row("routed experts per layer", str(summary["num_experts"]))
    table.add_row("routing", f"top-{summary['top_k']}" + (", renormalised" if summary["norm_topk_prob"] else ""))
    table.add_row("aux-loss coefficient", f"{summary['router_aux_loss_coef']:g}")
    if summary["seed"] is not None:
        table.add_row("router seed", str(summary["seed"]))
    table.add_row("expert format", summary["expert_format"])
    table.add_row("tensors in / out", f"{summary['tensors_in']} / {summary['tensors_out']}")
    table.add_row("bytes in", fmt_bytes(summary["bytes_in"]))
    table.add_row("bytes out", fmt_bytes(summary["bytes_out"]))
    table.add_row("routed expert bytes", fmt_bytes(summary["expert_weight_bytes"]))
    table.add_row("routed expert bits per weight", f"{summary['expert_bits_per_weight']:.4f}")
    table.add_row("router bytes", fmt_bytes(summary["router_bytes"]))
    table.add_row("shards", str(summary["shards"]))
    return table


def model_table(report: InspectionReport) -> Table:
    model, mote = report.model, report.mote
    table = Table(title=f"{report.path} ({report.kind})", show_header=False, title_justify="left")
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("model type", f"{model.model_type} (architecture {model.architecture})")
    table.add_row(
        "text model",
        f"{model.text_model_type or '-'}: {model.num_layers} layers, hidden {model.hidden_size}, intermediate {model.intermediate_size}",
    )
    if model.vision_model_type is not None:
        table.add_row(
            "vision tower",
            f"{model.vision_model_type}: {model.vision_num_layers} layers, hidden {model.vision_hidden_size}",
        )
    table.add_row("dtype", model.dtype or "-")
    if mote is not None:
        label = "upcycle would make" if report.kind == "dense" else "MoE"
        layers = ", ".join(map(str, mote.moe_layers))
        table.add_row(label, f"{mote.num_experts} experts, top-{mote.top_k}, {mote.expert_format}; layers {layers}")
    readable = sum(f.readable for f in report.files)
    table.add_row(
        "files",
        f"{len(report.files)} safetensors ({readable} readable), {fmt_bytes(sum(f.bytes for f in report.files))}",
    )
    return table


def memory_table(report: InspectionReport) -> Table:
    table = Table(title="memory by component", title_justify="left")
    # Component names may wrap; numbers never do, and never get cut (params are compact, see _fmt_count).
    table.add_column("component", style="bold", overflow="fold", min_width=8)
    planned = report.planned
    if planned is None:
        heads = ("params", "bytes", "bits/w")
    else:  # dense input: the source beside what upcycle would write
        heads = ("params", "bytes", "params after", "bytes after", "bits/w")
    for head in heads:
        table.add_column(head, justify="right", no_wrap=True)

    def cells(rows: list[ComponentMemory]) -> list[str]:
        out = [cell for r in rows for cell in ([fmt_count(r.params), fmt_bytes(r.bytes)] if r.tensors else ["", ""])]
        last = rows[-1]  # bits per weight of what is (or would be) written
        return out + [f"{last.bits_per_weight:.3f}" if last.tensors else ""]

    tables = [report.memory] + ([planned] if planned is not None else [])
    for c in report.memory.components:
        rows = [t[c.name] for t in tables]
        if any(r.tensors for r in rows):
            table.add_row(c.name.replace("_", " "), *cells(rows))
    table.add_section()
    table.add_row("total", *cells([t.total for t in tables]), style="bold")
    return table


def comparison_table(report: InspectionReport) -> Table:
    cmp = report.comparison
    table = Table(title=f"MoE layers' FFN memory with N = {cmp.num_experts} experts", title_justify="left")
    table.add_column("variant", style="bold", no_wrap=True)
    table.add_column("expert memory", justify="right")
    table.add_column("total", justify="right")
    table.add_column("× MoTE", justify="right")
    rows = (
        ("dense", cmp.dense),
        (f"MoE-LLaVA: {cmp.num_experts} × full precision", cmp.moe_llava),
        (f"MoTE: shared + {cmp.num_experts} × ternary", cmp.mote),
    )
    for label, v in rows:
        ratio = v.expert_bytes / cmp.mote.expert_bytes if cmp.mote.expert_bytes else 0.0
        table.add_row(label, fmt_bytes(v.expert_bytes), fmt_bytes(v.total_bytes), f"{ratio:.2f}")
    return table


def layer_table(memory: MemoryTable, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("layer", "right"),
        ("MoE", "center"),
        ("FFN / shared", "right"),
        ("routed experts", "right"),
        ("router", "right"),
    ):
        table.add_column(name, justify=justify)
    table.add_column("", no_wrap=True, overflow="crop")
    largest = max((row.total_bytes for row in memory.layers), default=0) or 1
    width = 16
    for row in memory.layers:
        ffn = round(width * row.ffn_bytes / largest)
        routed = round(width * (row.routed_expert_bytes + row.router_bytes) / largest)
        bar = f"[blue]{'█' * ffn}[/][magenta]{'█' * routed}[/]"
        table.add_row(
            str(row.layer),
            "yes" if row.moe else "",
            fmt_bytes(row.ffn_bytes),
            fmt_bytes(row.routed_expert_bytes) if row.moe else "",
            fmt_bytes(row.router_bytes) if row.moe else "",
            bar,
        )
    return table


def stats_table(report: InspectionReport) -> Table:
    table = Table(title="routed expert codes", title_justify="left")
    for name in ("layer", "expert", "projection", "-1", "0", "+1", "invalid", "gamma"):
        table.add_column(name, justify="left" if name == "projection" else "right")
    for s in report.stats or ():
        invalid = f"[bold red]{s.invalid}[/]" if s.invalid else "0"
        gamma = "-" if s.gamma is None else f"{s.gamma:.4g}"
        table.add_row(
            str(s.layer),
            str(s.expert),
            s.projection,
            f"{s.share(s.minus):.1%}",
            f"{s.share(s.zero):.1%}",
            f"{s.share(s.plus):.1%}",
            invalid,
            gamma,
        )
    return table
