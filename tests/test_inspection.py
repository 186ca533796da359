"""inspect: byte counts against the files, the MoE-LLaVA arithmetic, damaged checkpoints, JSON keys."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from mote_convert.errors import CheckFailedError
from mote_convert.inspection import inspect_checkpoint
from mote_convert.io.shards import TensorSpec
from tests.conftest import tree_digest
from tests.helpers import read_all, sparse_checkpoint

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "inspect-json.md"


@pytest.fixture(scope="module")
def mote_ckpt(tiny_llava: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inspect") / "mote"
    mote_convert.upcycle(tiny_llava, out, num_experts=4, layers="all")
    return out


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _component(name: str) -> str:
    """The test's own classification of the tiny LLaVA's names (independent of mote_convert.memory)."""
    if name.startswith("vision_tower."):
        return "vision_tower"
    if name.startswith("multi_modal_projector."):
        return "projector"
    if ".mlp." in name:
        if ".router." in name:
            return "routers"
        return "routed_experts" if ".experts." in name else "ffn_or_shared"
    if "embed_tokens" in name or "lm_head" in name:
        return "embeddings"
    if ".self_attn." in name:
        return "attention"
    assert "norm" in name, name
    return "norms"


def _expected_bytes(root: Path) -> dict[str, int]:
    sums: dict[str, int] = {}
    for name, t in read_all(root).items():
        sums[_component(name)] = sums.get(_component(name), 0) + _nbytes(t)
    return sums


def _check_against_files(root: Path, memory: dict, files: list[dict]) -> None:
    expected = _expected_bytes(root)
    got = {k: v["bytes"] for k, v in memory["components"].items()}
    shared_or_ffn = got.pop("ffn") + got.pop("shared_experts")
    assert shared_or_ffn == expected.pop("ffn_or_shared")
    for component, nbytes in expected.items():
        assert got.pop(component) == nbytes, component
    assert all(v == 0 for v in got.values()), got  # nothing left over in other components
    tensors = read_all(root)
    assert memory["total"]["bytes"] == sum(_nbytes(t) for t in tensors.values())
    assert memory["total"]["tensors"] == len(tensors)
    for f in files:
        with safe_open(str(root / f["file"]), "pt") as handle:
            names = list(handle.keys())
            assert f["tensor_bytes"] == sum(_nbytes(handle.get_tensor(n)) for n in names)
        assert f["tensors"] == len(names) and f["bytes"] == (root / f["file"]).stat().st_size and f["readable"]


def test_byte_counts_equal_the_files(tiny_llava: Path, mote_ckpt: Path) -> None:
    dense = inspect_checkpoint(tiny_llava).to_dict()
    assert dense["kind"] == "dense" and dense["ok"]
    _check_against_files(tiny_llava, dense["memory"], dense["files"])
    mote = inspect_checkpoint(mote_ckpt).to_dict()
    assert mote["kind"] == "mote" and mote["ok"], mote["problems"]
    _check_against_files(mote_ckpt, mote["memory"], mote["files"])
    # what inspect says upcycle would write is what upcycle wrote, component by component
    assert dense["planned_memory"] == mote["memory"]
    assert mote["memory"]["components"]["routed_experts"]["bits_per_weight"] <= 2.01
    assert mote["model"] == dense["model"] | {"dtype": "F32"}
    assert mote["model"]["vision_tower"] == {"model_type": "clip_vision_model", "num_layers": 2, "hidden_size": 32}


def test_moe_llava_comparison_follows_the_arithmetic(tiny_llava: Path, mote_ckpt: Path) -> None:
    n = 4
    source = read_all(tiny_llava)
    ffn = {k: t for k, t in source.items() if ".mlp." in k and k.startswith("language_model.")}
    ffn_bytes = sum(_nbytes(t) for t in ffn.values())
    packed = sum(math.ceil(t.shape[0] / 4) * t.shape[1] + 4 for t in ffn.values())  # codes + float32 gamma
    routers = 2 * n * 64 * 4
    dense_total = sum(_nbytes(t) for t in source.values())
    for report in (inspect_checkpoint(tiny_llava), inspect_checkpoint(mote_ckpt)):
        cmp = report.to_dict()["comparison"]
        assert cmp["num_experts"] == n
        assert cmp["dense"] == {"expert_bytes": ffn_bytes, "total_bytes": dense_total}
        assert cmp["moe_llava"]["expert_bytes"] == n * ffn_bytes
        assert cmp["moe_llava"]["total_bytes"] == dense_total + (n - 1) * ffn_bytes + routers
        assert cmp["mote"]["expert_bytes"] == ffn_bytes + n * packed
        assert cmp["mote"]["total_bytes"] == dense_total + n * packed + routers
    assert cmp["mote"]["total_bytes"] == sum(_nbytes(t) for t in read_all(mote_ckpt).values())


def test_spec_figures_at_qwen2_5_3b_shapes(tmp_path: Path) -> None:
    """SPEC section 1: Qwen2.5-3B (36 layers, hidden 2048, intermediate 11008), N = 4 in bf16:
    MoTE expert memory 6.8 GiB against 18.1 GiB for MoE-LLaVA."""
    layers, hidden, inter = 36, 2048, 11008
    text = {"model_type": "qwen2", "num_hidden_layers": layers, "hidden_size": hidden, "intermediate_size": inter}
    config = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "text_config": text}
    specs = []
    for i in range(layers):
        p = f"language_model.model.layers.{i}.mlp"
        specs += [
            TensorSpec(f"{p}.gate_proj.weight", "BF16", (inter, hidden)),
            TensorSpec(f"{p}.up_proj.weight", "BF16", (inter, hidden)),
            TensorSpec(f"{p}.down_proj.weight", "BF16", (hidden, inter)),
        ]
    sparse_checkpoint(tmp_path / "qwen-3b-ffn", config, specs)
    cmp = inspect_checkpoint(tmp_path / "qwen-3b-ffn", mote_convert.UpcycleOptions(num_experts=4)).comparison
    assert round(cmp.moe_llava.expert_bytes / 2**30, 1) == 18.1
    assert round(cmp.mote.expert_bytes / 2**30, 1) == 6.8


# --- damaged checkpoints: each problem named, non-zero exit ---------------------------------------


def _damaged(mote_ckpt: Path, tmp_path: Path, edit) -> Path:
    """A copy of the MoTE checkpoint with its tensors edited by ``edit(tensors)``."""
    root = tmp_path / "damaged"
    shutil.copytree(mote_ckpt, root)
    tensors = read_all(root)
    edit(tensors)
    (path,) = root.glob("*.safetensors")
    save_file(tensors, str(path), metadata={"format": "pt", "mote_format": "1"})
    return root


def _check_fails(root: Path, *needles: str, args: tuple[str, ...] = ()) -> None:
    before = tree_digest(root)
    result = runner.invoke(app, ["inspect", str(root), *args])
    assert result.exit_code == CheckFailedError.exit_code, result.output
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem:")]
    assert problems, result.stderr
    for needle in needles:
        assert any(needle in line for line in problems), (needle, problems)
    assert result.stderr.splitlines()[-1].startswith("error:")
    assert tree_digest(root) == before  # inspect never writes


P = "language_model.model.layers.1.mlp"


def test_missing_expert_tensor(mote_ckpt: Path, tmp_path: Path) -> None:
    root = _damaged(mote_ckpt, tmp_path, lambda t: t.pop(f"{P}.experts.2.up_proj.weight_packed"))
    _check_fails(root, f"{P}.experts.2.up_proj.weight_packed: missing")


def test_invalid_code_with_stats(mote_ckpt: Path, tmp_path: Path) -> None:
    name = f"{P}.experts.3.down_proj.weight_packed"

    def edit(t: dict[str, torch.Tensor]) -> None:
        t[name][0, 0] |= 0b11  # one 0b11 field

    root = _damaged(mote_ckpt, tmp_path, edit)
    assert inspect_checkpoint(root).ok  # headers and scales alone cannot see it
    _check_fails(root, f"{name}: 1 invalid 2-bit codes (0b11)", args=("--stats",))
    stats = {s.tensor: s for s in inspect_checkpoint(root, stats=True).stats}
    assert stats[name].invalid == 1 and stats[f"{P}.experts.2.down_proj.weight_packed"].invalid == 0


def test_wrong_shape(mote_ckpt: Path, tmp_path: Path) -> None:
    name = f"{P}.experts.0.gate_proj.weight_packed"

    def edit(t: dict[str, torch.Tensor]) -> None:
        t[name] = t[name][:-1].clone()

    _check_fails(_damaged(mote_ckpt, tmp_path, edit), f"{name}: is U8 [31, 64], expected U8 [32, 64]")


def test_zero_scale(mote_ckpt: Path, tmp_path: Path) -> None:
    name = f"{P}.experts.1.up_proj.weight_scale"

    def edit(t: dict[str, torch.Tensor]) -> None:
        t[name] = torch.zeros(1)

    _check_fails(_damaged(mote_ckpt, tmp_path, edit), f"{name}: scale gamma is 0.0")


def test_non_finite_scale(mote_ckpt: Path, tmp_path: Path) -> None:
    name = f"{P}.experts.1.up_proj.weight_scale"

    def edit(t: dict[str, torch.Tensor]) -> None:
        t[name] = torch.tensor([float("nan")])

    _check_fails(_damaged(mote_ckpt, tmp_path, edit), f"{name}: scale gamma is nan, not finite")


def test_truncated_file(mote_ckpt: Path, tmp_path: Path) -> None:
    root = tmp_path / "truncated"
    shutil.copytree(mote_ckpt, root)
    path = root / "model.safetensors"
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 100)
    _check_fails(root, "model.safetensors: not a readable safetensors file")
    report = inspect_checkpoint(root).to_dict()
    assert report["files"] == [
        {"file": "model.safetensors", "bytes": path.stat().st_size, "tensors": 0, "tensor_bytes": 0, "readable": False}
    ]
    assert [p["where"] for p in report["problems"]] == ["model.safetensors"]  # not one per tensor it held


def test_truncated_shard_names_only_that_shard(tiny_llava: Path, tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    mote_convert.upcycle(tiny_llava, out, max_shard_size="100KB")
    shard = sorted(out.glob("model-*.safetensors"))[1]
    with open(shard, "r+b") as fh:
        fh.truncate(shard.stat().st_size - 1)
    report = inspect_checkpoint(out)
    assert not report.ok
    assert [p.where for p in report.problems] == [shard.name]  # tensors in it are not reported as missing
    assert [f.readable for f in report.files].count(False) == 1


def _edit_config(mote_ckpt: Path, tmp_path: Path, **changes) -> Path:
    root = tmp_path / "config"
    shutil.copytree(mote_ckpt, root)
    config = json.loads((root / "config.json").read_text())
    config["mote"].update(changes)
    (root / "config.json").write_text(json.dumps(config))
    return root


def test_mote_config_disagrees_with_tensors(mote_ckpt: Path, tmp_path: Path) -> None:
    root = _edit_config(mote_ckpt, tmp_path, num_experts=3)
    _check_fails(
        root, "config.json:mote.num_experts: is 3, but language_model.model.layers.0.mlp holds experts 0, 1, 2, 3"
    )
    # one problem per layer for the count and its router; the surplus expert's tensors are not repeated
    assert [p.where for p in inspect_checkpoint(root).problems] == [
        w
        for i in (0, 1)
        for w in ("config.json:mote.num_experts", f"language_model.model.layers.{i}.mlp.router.weight")
    ]


def test_mote_config_disagreements_are_named(mote_ckpt: Path, tmp_path: Path) -> None:
    cases = {
        "moe_layers": (
            {"moe_layers": [0], "layer_prefixes": {"0": "language_model.model.layers.0.mlp"}},
            "config.json:mote.moe_layers: omits layer 1",
        ),
        "expert_format": ({"expert_format": "latent"}, "config.json:mote.expert_format: is 'latent', but"),
        "top_k": ({"top_k": 5}, "config.json:mote.top_k"),
        "projections": ({"projections": ["fc1", "fc2"]}, "config.json:mote.projections"),
    }
    for i, (changes, needle) in enumerate(cases.values()):
        root = _edit_config(mote_ckpt, tmp_path / str(i), **changes)
        report = inspect_checkpoint(root)
        assert any(needle in str(p) for p in report.problems), (needle, [str(p) for p in report.problems])


def test_latent_checkpoint_and_stats(tiny_llava: Path, tmp_path: Path) -> None:
    latent = tmp_path / "latent"
    mote_convert.upcycle(tiny_llava, latent, latent=True)
    report = inspect_checkpoint(latent, stats=True)
    assert report.ok, report.problems
    packed = inspect_checkpoint(mote_convert.upcycle(tiny_llava, tmp_path / "packed").output, stats=True)
    # the latent experts quantize to exactly the packed codes and gammas
    strip = lambda s: {k: v for k, v in s.to_dict().items() if k != "tensor"}  # noqa: E731
    assert [strip(s) for s in report.stats] == [strip(s) for s in packed.stats]
    assert report.comparison == packed.comparison  # MoTE memory is the packed figure for both


def test_dense_with_options_and_plan_problems(tiny_llava: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["inspect", str(tiny_llava), "--num-experts", "8", "--layers", "odd", "--per-layer"])
    assert result.exit_code == 0, result.output
    assert "MoE-LLaVA: 8 × full precision" in result.stdout and "ok:" in result.stdout
    report = inspect_checkpoint(tiny_llava, mote_convert.UpcycleOptions(num_experts=8, layers="odd")).to_dict()
    assert report["mote"]["moe_layers"] == [1] and report["upcycle_options"]["num_experts"] == 8
    assert [row["moe"] for row in report["planned_memory"]["layers"]] == [False, True]
    # a dense checkpoint whose keys do not fit its architecture: the plan's problem, named
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llava, broken)
    tensors = read_all(broken)
    for f in broken.glob("*.safetensors"):
        f.unlink()
    (broken / "model.safetensors.index.json").unlink()
    tensors["language_model.model.layers.0.mlp.up_proj.weight"] = tensors[
        "language_model.model.layers.0.mlp.up_proj.weight"
    ][:5].clone()
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    bad = inspect_checkpoint(broken)
    assert (
        not bad.ok
        and bad.problems[0].where == "upcycle plan"
        and "up_proj.weight has shape [5, 64]" in bad.problems[0].message
    )


def _documented_keys() -> list[str]:
    keys = []
    for line in DOCS.read_text().splitlines():
        m = re.match(r"^\| `([a-z_.\[\]*]+)` \|", line)
        if m:
            keys.append(m.group(1))
    return keys


def _resolve(data: object, path: str) -> list[object]:
    """Values at a documented key path; ``[]`` walks list items, ``*`` object values."""
    values = [data]
    for part in re.findall(r"[a-z_]+|\[\]|\*", path):
        nxt: list[object] = []
        for v in values:
            if part == "[]":
                nxt += list(v)  # type: ignore[arg-type]
            elif part == "*":
                nxt += list(v.values())  # type: ignore[union-attr]
            else:
                assert isinstance(v, dict) and part in v, (path, part)
                nxt.append(v[part])
        values = nxt
    return values


def test_json_parses_and_holds_the_documented_keys(tiny_llava: Path, mote_ckpt: Path) -> None:
    keys = _documented_keys()
    assert len(keys) > 40 and "comparison.moe_llava" in keys and "stats[].counts" in keys
    for root, args in ((tiny_llava, ["--gguf"]), (mote_ckpt, ["--stats", "--gguf"])):
        result = runner.invoke(app, ["inspect", str(root), "--json", *args])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        top = {k for k in keys if "." not in k and "[" not in k}
        assert top == set(data), set(data) ^ top  # every top-level key documented, and only those
        for key in keys:
            if key.split(".")[0].split("[")[0] in data and data[key.split(".")[0].split("[")[0]] is not None:
                _resolve(data, key)
    assert (
        json.loads(runner.invoke(app, ["inspect", str(mote_ckpt), "--json"]).stdout)
        == inspect_checkpoint(mote_ckpt).to_dict()
    )


def test_header_only_inspect_loads_no_kernel_and_no_model(mote_ckpt: Path, tiny_llava: Path) -> None:
    """inspect reads headers (and the model's skeleton on the meta device): the kernels, the
    modeling code of this package and the weights are never loaded."""
    import subprocess
    import sys

    code = (
        "import sys, mote_convert; "
        f"assert mote_convert.inspect_checkpoint({str(mote_ckpt)!r}).ok; "
        f"assert mote_convert.inspect_checkpoint({str(tiny_llava)!r}).ok; "
        "print(sorted(m for m in sys.modules if m.startswith(('mote_convert.kernels', 'mote_convert.modeling'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_non_finite_router(mote_ckpt: Path, tmp_path: Path) -> None:
    """What an infinite initializer_range would have written: inspect no longer says ok."""
    name = f"{P}.router.weight"

    def edit(t: dict[str, torch.Tensor]) -> None:
        t[name] = t[name].clone()
        t[name][1, 3] = float("inf")

    _check_fails(_damaged(mote_ckpt, tmp_path, edit), f"{name}: 1 of 256 router weights are not finite")
