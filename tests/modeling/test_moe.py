"""MoTE blocks in loaded models: exactness, modes, gradients, memory (issue 3 acceptance)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import mote_convert
from mote_convert.errors import CheckFailedError, FormatError
from mote_convert.modeling.bitlinear import TernaryLinear
from mote_convert.modeling.load import mote_blocks
from mote_convert.quant.packing import pack_ternary
from tests.helpers import read_all, spec_gamma

PROJ = ("gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def upcycled(tiny_llava: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mote-model") / "mote"
    mote_convert.upcycle(tiny_llava, out)
    return out


def _inputs(config, batch: int = 2, seq: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.image_token_id - 1, (batch, seq), generator=g)
    ids[:, 1 : 1 + config.image_seq_length] = config.image_token_id
    return {"input_ids": ids, "pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}


def reference_moe(
    x: torch.Tensor, dense: dict[str, torch.Tensor], router: torch.Tensor, n: int, k: int
) -> torch.Tensor:
    """SPEC section 1 written out plainly, from the dense FFN weights and the router (float32)."""

    def bitlinear(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma = spec_gamma(w)
        t = torch.clamp(torch.round(w / gamma), -1, 1)
        s = 127.0 / torch.clamp(v.abs().amax(dim=-1, keepdim=True), min=1e-5)
        v_q = torch.clamp(torch.round(v * s), -128, 127)
        return (v_q @ t.t()) * gamma / s

    def expert(v: torch.Tensor) -> torch.Tensor:
        h = F.silu(bitlinear(v, dense["gate_proj"])) * bitlinear(v, dense["up_proj"])
        return bitlinear(h, dense["down_proj"])

    shared = F.linear(F.silu(F.linear(x, dense["gate_proj"])) * F.linear(x, dense["up_proj"]), dense["down_proj"])
    p = torch.softmax(x @ router.t(), dim=-1)
    top_p, top_i = p.topk(k, dim=-1)
    out = shared.clone()
    for token in range(x.shape[0]):
        for slot in range(k):
            out[token] += top_p[token, slot] * expert(x[token : token + 1])[0]
    return out


def _capture_block_io(model, inputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    captured = []
    hooks = [
        b.register_forward_hook(lambda m, a, o: captured.append((a[0].detach(), o.detach())))
        for b in mote_blocks(model)
    ]
    with torch.no_grad():
        model(**inputs)
    for h in hooks:
        h.remove()
    return captured


def test_packed_layers_equal_the_plain_reference(tiny_llava: Path, upcycled: Path) -> None:
    model = mote_convert.load_model(upcycled, mode="packed")
    dense, out = read_all(tiny_llava), read_all(upcycled)
    captured = _capture_block_io(model, _inputs(model.config))
    assert len(captured) == 2
    for layer, (x, y) in enumerate(captured):
        p = f"language_model.model.layers.{layer}.mlp"
        weights = {proj: dense[f"{p}.{proj}.weight"] for proj in PROJ}
        flat = x.reshape(-1, x.shape[-1])
        ref = reference_moe(flat, weights, out[f"{p}.router.weight"], 4, 1)
        torch.testing.assert_close(y.reshape(-1, y.shape[-1]), ref, rtol=1e-5, atol=1e-6)


def test_train_mode_matches_packed_mode(upcycled: Path) -> None:
    packed = mote_convert.load_model(upcycled, mode="packed")
    train = mote_convert.load_model(upcycled, mode="train")
    inputs = _inputs(packed.config)
    for (xp, yp), (xt, yt) in zip(_capture_block_io(packed, inputs), _capture_block_io(train, inputs), strict=True):
        torch.testing.assert_close(xt, xp, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(yt, yp, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(train(**inputs).logits, packed(**inputs).logits, rtol=1e-5, atol=1e-5)


def test_top_k_two_and_norm(tiny_llava: Path, tmp_path: Path) -> None:
    out = tmp_path / "k2"
    mote_convert.upcycle(tiny_llava, out, num_experts=3, top_k=2, layers="1")
    model = mote_convert.load_model(out)
    dense, saved = read_all(tiny_llava), read_all(out)
    ((x, y),) = _capture_block_io(model, _inputs(model.config))
    p = "language_model.model.layers.1.mlp"
    ref = reference_moe(
        x.reshape(-1, 64), {proj: dense[f"{p}.{proj}.weight"] for proj in PROJ}, saved[f"{p}.router.weight"], 3, 2
    )
    torch.testing.assert_close(y.reshape(-1, 64), ref, rtol=1e-5, atol=1e-6)


def test_forward_and_generate_in_packed_mode(upcycled: Path) -> None:
    model = mote_convert.load_model(upcycled, mode="packed")
    inputs = _inputs(model.config, batch=1)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, 24, model.config.text_config.vocab_size) and torch.isfinite(logits).all()
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 29)


def test_train_mode_gradients_reach_only_routers_and_experts(upcycled: Path) -> None:
    model = mote_convert.load_model(upcycled, mode="train")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".router." in n or ".experts." in n for n in trainable)
    inputs = _inputs(model.config, batch=4, seq=40)
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad <= trainable
    assert {n for n in with_grad if ".router." in n} == {n for n in trainable if ".router." in n}
    assert any(".experts." in n for n in with_grad)


def test_loss_includes_scaled_aux_loss(upcycled: Path) -> None:
    model = mote_convert.load_model(upcycled, mode="train")
    inputs = _inputs(model.config)
    out = model(**inputs, labels=inputs["input_ids"])
    aux = mote_convert.aux_loss(model)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    lm = F.cross_entropy(logits.float(), inputs["input_ids"][:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, lm + 0.01 * aux, rtol=1e-5, atol=1e-6)
    assert aux.item() >= 1.0 - 1e-5  # Switch loss is >= 1, = 1 when perfectly balanced


def test_packed_memory_is_the_packed_bytes(upcycled: Path) -> None:
    model = mote_convert.load_model(upcycled, mode="packed")
    with torch.no_grad():
        model(**_inputs(model.config))
    for block in mote_blocks(model):
        for expert in block.experts:
            for linear in expert.children():
                if not isinstance(linear, TernaryLinear):
                    continue
                tensors = dict(linear.named_buffers()) | dict(linear.named_parameters())
                assert set(tensors) == {"weight_packed", "weight_scale"}
                assert linear.weight_packed.dtype == torch.uint8
                stray = [k for k, v in vars(linear).items() if isinstance(v, torch.Tensor)]
                assert stray == []  # no decoded float copy kept between calls
                bits = (
                    8
                    * sum(t.numel() * t.element_size() for t in tensors.values())
                    / (linear.out_features * linear.in_features)
                )
                assert bits <= 2.01


class _NewStorages(TorchDispatchMode):
    """Records the byte size of every storage an op allocates (outputs that alias no input)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
        }
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.sizes.append((t.untyped_storage().nbytes(), str(func)))
        return out


@pytest.mark.parametrize("tokens", [1, 8])
@pytest.mark.parametrize("kernel", ["fastest", "reference"])
def test_packed_forward_never_decodes_an_expert_weight(upcycled: Path, tokens: int, kernel: str, monkeypatch) -> None:
    """No op of a packed MoE layer's forward allocates as many bytes as an expert projection has
    weights: even a one-byte-per-weight decode would (the reference kernel shows the check bites)."""
    from mote_convert.kernels import KERNELS

    if kernel == "fastest" and not any(
        k.available() for n, k in KERNELS.items() if n != "reference" and "cpu" in k.devices
    ):
        pytest.skip("no compiled kernel here")
    if kernel == "reference":
        monkeypatch.setenv("MOTE_KERNEL", "reference")
    else:
        monkeypatch.delenv("MOTE_KERNEL", raising=False)
    model = mote_convert.load_model(upcycled, mode="packed")
    block = mote_blocks(model)[0]
    linears = [m for m in block.experts.modules() if isinstance(m, TernaryLinear)]
    smallest = min(m.out_features * m.in_features for m in linears)
    widest = max(max(m.out_features, m.in_features) for m in linears)
    x = torch.randn(1, tokens, block.router.in_features, generator=torch.Generator().manual_seed(0)).to(model.dtype)
    assert tokens * widest * 4 < smallest  # the layer's own float32 activations stay below the bar
    recorder = _NewStorages()
    with torch.no_grad(), recorder:
        block(x)
    decoded = [(n, op) for n, op in recorder.sizes if n >= smallest]
    if kernel == "reference":
        assert decoded  # it decodes the codes to float32 and multiplies: the check sees that
    else:
        assert decoded == []


def test_load_errors(upcycled: Path, tiny_llava: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    with pytest.raises(FormatError, match="not a MoTE checkpoint"):
        mote_convert.load_model(tiny_llava)
    with pytest.raises(FormatError, match="unknown mode"):
        mote_convert.load_model(upcycled, mode="fast")

    def broken(edit) -> Path:
        dst = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        shutil.copytree(upcycled, dst)
        f = dst / "model.safetensors"
        tensors = load_file(f)
        edit(tensors)
        save_file(tensors, f, metadata={"format": "pt", "mote_format": "1"})
        return dst

    p = "language_model.model.layers.1.mlp"
    expert = f"{p}.experts.2.up_proj.weight_packed"
    extra = "language_model.model.layers.0.mlp.experts.9.up_proj.weight_packed"
    cases = {
        "missing shared-expert weight": (lambda t: t.pop(f"{p}.gate_proj.weight"), rf"{p}.gate_proj.weight: missing"),
        "missing router": (lambda t: t.pop(f"{p}.router.weight"), rf"{p}.router.weight: missing"),
        "missing expert": (lambda t: t.pop(expert), rf"{expert}: missing"),
        "extra expert": (
            lambda t: t.__setitem__(extra, torch.zeros(32, 64, dtype=torch.uint8)),
            rf"holds experts 0, 1, 2, 3, 9 ({extra})",
        ),
        "wrong shape": (
            lambda t: t.__setitem__(expert, torch.zeros(3, 64, dtype=torch.uint8)),
            rf"{expert}: is U8 \[3, 64\], expected U8 \[32, 64\]",
        ),
        "missing dense weight": (
            lambda t: t.pop("language_model.model.layers.0.self_attn.q_proj.weight"),
            r"tensors missing: model.language_model.layers.0.self_attn.q_proj.weight",
        ),
        "misshapen dense weight": (
            lambda t: t.__setitem__("language_model.model.norm.weight", torch.ones(3)),
            r"of the wrong shape: model.language_model.norm.weight",
        ),
    }
    for case, (edit, needle) in cases.items():
        root = broken(edit)
        assert not mote_convert.inspect_checkpoint(root).ok or "dense" in case, case  # inspect sees the MoTE damage too
        for mode in ("packed", "train"):
            kind = CheckFailedError if "dense" not in case else FormatError  # the MoTE checks; transformers' report
            with pytest.raises(kind, match=needle.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
                mote_convert.load_model(root, mode=mode)
    assert json.loads((upcycled / "config.json").read_text())["mote"]["expert_format"] == "packed-2bit"


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("mode", ["packed", "train"])
def test_one_token_decoding_path_equals_the_general_path(
    tiny_llava: Path, tmp_path: Path, top_k: int, mode: str
) -> None:
    """Decoding (one token, no autograd) skips the sort, count and scatter: its output is the general
    path's, bit for bit (the general path runs while autograd records), and equal to the reference."""
    out = tmp_path / "k"
    mote_convert.upcycle(tiny_llava, out, num_experts=3, top_k=top_k)
    model = mote_convert.load_model(out, mode=mode)
    dense, saved = read_all(tiny_llava), read_all(out)
    for layer, block in enumerate(mote_blocks(model)):
        p = f"language_model.model.layers.{layer}.mlp"
        for seed in range(4):
            x = torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                fast = block(x)
            with torch.enable_grad():
                general = block(x).detach()
            assert torch.equal(fast, general)
            ref = reference_moe(
                x[0], {proj: dense[f"{p}.{proj}.weight"] for proj in PROJ}, saved[f"{p}.router.weight"], 3, top_k
            )
            torch.testing.assert_close(fast[0], ref, rtol=1e-5, atol=1e-6)


class _NoHostReads:
    """Every way a tensor's value reaches Python raises while active (what a CUDA sync would be)."""

    NAMES = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def __enter__(self) -> None:
        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("a tensor's value was read on the host")

        for name in self.NAMES:
            self.monkeypatch.setattr(torch.Tensor, name, refuse)

    def __exit__(self, *exc: object) -> None:
        self.monkeypatch.undo()


@pytest.mark.parametrize("top_k", [1, 2, 3])  # 3: the order of the sum shows
@pytest.mark.parametrize("kernel", ["reference", "cpu"])
def test_device_decoding_path_reads_nothing_on_the_host_and_equals_the_one_token_path(
    tiny_llava: Path, tmp_path: Path, top_k: int, kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU's one-token path (the expert picked by a device tensor, so a CUDA graph can hold it)
    gives the host-read one-token path's bits, and, with a kernel that does not validate codes on the
    host (every one but the reference), never reads a tensor's value on the host. The Triton kernel's
    indexed form is checked in tests/kernels/test_triton_kernel.py, on a GPU by the gpu group."""
    out = tmp_path / "k"
    mote_convert.upcycle(tiny_llava, out, num_experts=4, top_k=top_k)
    model = mote_convert.load_model(out)
    monkeypatch.setenv("MOTE_KERNEL", kernel)
    seen: set[int] = set()
    for block in mote_blocks(model):
        for expert in block.experts:  # distinct experts, or a wrong pick would go unseen
            for proj in PROJ:
                lin = getattr(expert, proj)
                codes = torch.randint(-1, 2, (lin.out_features, lin.in_features), dtype=torch.int8)
                lin.weight_packed = pack_ternary(codes)
        for seed in range(6):
            x = torch.randn(1, 64, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                weights, chosen = F.softmax(block.router(x), dim=-1).topk(top_k, dim=-1)
                want = block._route_one_token(x, weights, chosen)
                if kernel == "reference":  # the oracle checks the codes it decodes, on the host
                    got = block._route_one_token_on_device(x, weights, chosen)
                else:
                    with _NoHostReads(monkeypatch):
                        got = block._route_one_token_on_device(x, weights, chosen)
            assert torch.equal(got, want)
            seen.update(chosen[0].tolist())
    assert seen == {0, 1, 2, 3}
