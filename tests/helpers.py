"""Helpers for tests that read checkpoints back."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open


def read_all(root: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory, by name (tests only: loads all into memory)."""
    index = root / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    )
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(root / f), "pt") as handle:
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name).clone()
    return tensors


def file_metadata(root: Path) -> list[dict[str, str]]:
    """The __metadata__ of every safetensors file under root."""
    out = []
    for f in sorted(root.glob("*.safetensors")):
        with safe_open(str(f), "pt") as handle:
            out.append(handle.metadata())
    return out


def raw_bytes(t: torch.Tensor) -> bytes:
    """A tensor's bytes as stored."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def spec_gamma(weight: torch.Tensor) -> torch.Tensor:
    """gamma as the method states it, written out plainly: the exact float64 sum of |W| (math.fsum),
    divided by the count, rounded once to float32, clamped at 1e-5."""
    values = weight.detach().double().abs().flatten().tolist()
    mean = math.fsum(values) / max(len(values), 1)
    return torch.clamp(torch.tensor(mean, dtype=torch.float64).float(), min=1e-5)


def spec_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The method written out plainly: gamma and the ternary codes of a dense weight."""
    gamma = spec_gamma(weight)
    return torch.clamp(torch.round(weight.float() / gamma), -1, 1), gamma


def assert_one_line_error(result, code: int, needle: str = "") -> str:  # noqa: ANN001 - typer's Result
    """A CLI result that failed as documented: the exit code, one 'error:' line, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    other = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("error:", "warning:", "problem:"))
    ]
    assert all("━" in line for line in other), result.stderr  # only a progress bar besides
    assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return lines[0]


def leftovers(parent: Path) -> list[str]:
    """Staging, lock and set-aside entries a run may leave beside its output (should be none)."""
    return sorted(
        p.name
        for p in parent.iterdir()
        if p.name.startswith(".") and (".partial-" in p.name or ".old-" in p.name or p.name.endswith(".mote-lock"))
    )


def sparse_checkpoint(root: Path, config: dict, specs: list) -> None:
    """A checkpoint whose header is real and whose data is a hole (headers are all inspect reads)."""
    from mote_convert.io.shards import encode_header

    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    header = encode_header(specs, {"format": "pt"})
    with open(root / "model.safetensors", "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + sum(s.nbytes for s in specs))


def save_llama(root: Path, *, layers: int, hidden: int, inter: int, seed: int = 0, dtypes: tuple = ()) -> Path:
    """A plain Llama LM checkpoint of random FFNs (and an embedding), written by safetensors directly:
    sizes no tiny transformers model has, in seconds. ``dtypes`` cycles over gate, up, down."""
    from safetensors.torch import save_file

    root.mkdir()
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "vocab_size": 64,
    }
    (root / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(seed)
    tensors = {"model.embed_tokens.weight": torch.randn(64, hidden, generator=g)}
    kinds = dtypes or (torch.float32,) * 3
    for i in range(layers):
        p = f"model.layers.{i}.mlp"
        for (name, shape), dtype in zip(
            (("gate_proj", (inter, hidden)), ("up_proj", (inter, hidden)), ("down_proj", (hidden, inter))),
            kinds,
            strict=True,
        ):
            tensors[f"{p}.{name}.weight"] = torch.randn(*shape, generator=g).to(dtype)
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    return root


def distinct_experts(
    latent: Path, out: Path, *, seed: int = 0, router_scale: float = 40.0, expert_scale: float = 1.0
) -> Path:
    """A copy of a latent MoTE checkpoint whose routed experts differ (each latent weight plus its own
    noise, half the weight's spread) and whose routers are decisive (scaled up, so tokens spread over
    the experts with clear winners): routing or expert order that is wrong changes every result.
    ``expert_scale`` multiplies the routed experts' weights (their share of each FFN's output)."""
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(latent, out)
    tensors = read_all(out)
    g = torch.Generator().manual_seed(seed)
    for name in sorted(tensors):
        t = tensors[name]
        if ".experts." in name and name.endswith(".weight"):
            noise = torch.randn(t.shape, generator=g) * t.float().std() * 0.5
            tensors[name] = ((t.float() + noise) * expert_scale).to(t.dtype)
        elif name.endswith(".router.weight"):
            tensors[name] = t * router_scale
    for f in out.glob("*.safetensors"):
        f.unlink()
    (out / "model.safetensors.index.json").unlink(missing_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt", "mote_format": "1"})
    return out


def spec_unpack(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """The SPEC's 2-bit layout decoded plainly: weight row j*R + r is in bits 2j..2j+1 of packed row r,
    code = t + 1."""
    rows = packed.shape[0]
    codes = torch.empty(4 * rows, packed.shape[1], dtype=torch.int64)
    for j in range(4):
        codes[j * rows : (j + 1) * rows] = ((packed.to(torch.int64) >> (2 * j)) & 0b11) - 1
    return codes[:out_features]


def spec_bitlinear(x: torch.Tensor, codes: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """A BitNet b1.58 linear as the SPEC writes it: INT8 activations per token, codes T, scale gamma."""
    s = 127.0 / torch.clamp(x.abs().amax(dim=-1, keepdim=True), min=1e-5)
    x_q = torch.clamp(torch.round(x * s), -128, 127)
    return (x_q @ codes.to(x_q.dtype).t()) * gamma.reshape(()) / s


def training_setup(root: Path, recipe: str | None = None) -> dict[str, Path]:
    """What the training tests start from: a tiny LLaVA with its processor (``dense``), its upcycle
    (``mote``), a LLaVA-format colour dataset (``data``) and, when given, a recipe file (``recipe``)."""
    import mote_convert
    from mote_convert.tiny import TINY_VOCAB_WITH_PROCESSOR, build_tiny_dataset, build_tiny_llava, build_tiny_processor

    dense = build_tiny_llava(root / "dense", vocab_size=TINY_VOCAB_WITH_PROCESSOR)
    build_tiny_processor(dense)
    setup = {
        "root": root,
        "dense": dense,
        "mote": mote_convert.upcycle(dense, root / "mote").output,
        "data": build_tiny_dataset(root / "data"),
    }
    if recipe is not None:
        (root / "recipe.yaml").write_text(recipe)
        setup["recipe"] = root / "recipe.yaml"
    return setup


def train_args(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """``mote-convert train``'s arguments for a :func:`training_setup`: its MoTE model, data and
    recipe, output ``out``, then ``extra``."""
    return [
        "train",
        str(setup["mote"]),
        "--data",
        str(setup["data"]),
        "--image-folder",
        str(setup["data"].parent),
        "-o",
        str(out),
        "--recipe",
        str(setup["recipe"]),
        *extra,
    ]


def torchrun_cli(*args: str, processes: int = 2) -> list[str]:
    """The command line of ``mote-convert ARGS`` under torchrun with ``processes`` local processes."""
    import sys

    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        "-m",
        "mote_convert.cli",
        *args,
    ]


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(cache: Path, repo_id: str, model: Path, extra: tuple[str, ...] = ("model.bin",)) -> Path:
    """``model``'s files in a Hugging Face cache as repo ``repo_id`` (refs/main -> one snapshot whose
    files link to content-addressed blobs), plus files a download must not need (``extra``)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    files = {p.relative_to(model): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    files |= {Path(name): b"not needed" for name in extra}
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(Path("../" * len(rel.parts) + "../blobs") / blob.name)
    return snapshot


def vlm_with_experts_that_matter(root: Path) -> dict[str, Path]:
    """A tiny LLaVA with a processor (``dense``) and its packed MoTE checkpoint (``mote``) whose experts
    differ, route decisively and weigh enough to change greedy answers: a dense fallback shows."""
    import mote_convert
    from mote_convert.tiny import build_tiny_vlm

    dense = build_tiny_vlm(root / "dense")
    latent = mote_convert.upcycle(dense, root / "latent", latent=True).output
    distinct = distinct_experts(latent, root / "distinct", router_scale=400.0, expert_scale=8.0)
    return {"dense": dense, "mote": mote_convert.pack(distinct, root / "mote").output}
