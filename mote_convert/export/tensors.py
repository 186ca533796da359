"""GGML tensor types of an export, and the conversion of one tensor into one, with the ``gguf``
package's own quantizers (pure array math: no file is touched here).

* ``tq2_0`` / ``tq1_0``: llama.cpp's ternary types (256-weight blocks, one fp16 scale per block,
  2.06 / 1.69 bits per weight). A MoTE expert weight is ``gamma * T`` with T in {-1, 0, 1}: its
  blocks quantize to exactly the codes T, with the block scale fp16(gamma) (0 for an all-zero block).
* ``bf16`` / ``f16`` / ``f32``: float copies (bf16 and f32 from a tensor of that dtype are bit-exact).
* ``q8_0`` / ``q4_0``: llama.cpp's 32-weight block quantizations, for the shared experts when asked.
* a ternary weight whose rows are not whole 256-weight blocks: ``q4_0`` blocks written here with the
  scale fp16(gamma) and the 4-bit values T + 8, so that they hold fp16(gamma) * T, the TQ types' own
  value (llama.cpp's Q4_0 quantizer picks its scale from a block's extreme and rounds -gamma to
  -7/8 gamma).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mote_convert.errors import OptionsError


@dataclass(frozen=True)
class TensorType:
    """One GGML type an export may write: its name and the row length it needs."""

    name: str
    block: int  # weights per block: a row's length must be a multiple of it

    @property
    def ggml(self):  # noqa: ANN201 - gguf's enum
        import gguf

        return gguf.GGMLQuantizationType[self.name.upper()]

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether rows of this shape (last dimension) split into whole blocks."""
        return shape[-1] % self.block == 0

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Bytes of a tensor of ``shape`` (row-major) in this type (gguf's block sizes)."""
        import gguf

        if not self.fits(shape):
            raise ValueError(f"{self.name} needs rows that are a multiple of {self.block}, not {shape[-1]}")
        block, type_size = gguf.GGML_QUANT_SIZES[self.ggml]
        return math.prod(shape) // block * type_size


TYPES = {
    t.name: t
    for t in (
        TensorType("f32", 1),
        TensorType("f16", 1),
        TensorType("bf16", 1),
        TensorType("q8_0", 32),
        TensorType("q4_0", 32),
        TensorType("q6_k", 256),
        TensorType("tq2_0", 256),
        TensorType("tq1_0", 256),
    )
}
EXPERT_TYPES = ("tq2_0", "tq1_0")
SHARED_TYPES = ("bf16", "f16", "f32", "q8_0", "q4_0")
# A ternary weight whose rows are not whole 256-weight blocks (Qwen2-0.5B's hidden size is 896) is
# written as Q4_0 instead (32-weight blocks, 4.5 bits per weight): see ternary_q4_0.
TERNARY_FALLBACK = "q4_0"


def gguf_name(kind: str, layer: int | None = None, suffix: str | None = "weight") -> str:
    """A tensor's name in the GGUF file, from gguf's own table (``TENSOR_NAMES``): ``gguf_name("ATTN_Q",
    3)`` is ``blk.3.attn_q.weight``; ``suffix=None`` for a tensor without one (``v.class_embd``)."""
    import gguf

    name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR[kind]].format(bid=layer)
    return name if suffix is None else f"{name}.{suffix}"


def get_type(name: str, allowed: tuple[str, ...]) -> TensorType:
    """The type called ``name``; one not in ``allowed`` lists the allowed ones."""
    if name not in allowed:
        raise OptionsError(f"unknown tensor type {name!r}; known: {', '.join(allowed)}")
    return TYPES[name]


def stored_type(tensor_dtype: str) -> TensorType:
    """The float type matching a safetensors dtype (F32, F16, BF16)."""
    return TYPES[{"F32": "f32", "F16": "f16", "BF16": "bf16"}[tensor_dtype]]


@dataclass(frozen=True)
class Encoded:
    """A tensor's bytes for the GGUF file: ``data`` as gguf's writer takes it, with its GGML type."""

    data: np.ndarray
    type: TensorType

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


def encode(tensor: torch.Tensor, ttype: TensorType) -> Encoded:
    """``tensor`` (a float tensor, row-major) as GGML type ``ttype``."""
    import gguf

    t = tensor.detach().contiguous()
    if ttype.name == "f32":
        return Encoded(t.to(torch.float32).numpy(), ttype)
    if ttype.name == "f16":
        return Encoded(t.to(torch.float16).numpy(), ttype)
    if ttype.name == "bf16":
        # bf16's bytes as they are (numpy has no bf16): gguf reads uint8 data with its raw type
        raw = t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8)
        return Encoded(raw.reshape(*t.shape[:-1], t.shape[-1] * 2), ttype)
    if not ttype.fits(tuple(t.shape)):
        raise OptionsError(f"{ttype.name} needs rows that are a multiple of {ttype.block} weights, not {t.shape[-1]}")
    return Encoded(gguf.quants.quantize(t.to(torch.float32).numpy(), ttype.ggml), ttype)


def encode_ternary(codes: torch.Tensor, gamma: torch.Tensor, ttype: TensorType) -> Encoded:
    """A ternary weight ``gamma * T`` (codes T in {-1, 0, 1}, one scale) as GGML type ``ttype``: the TQ
    types through gguf's quantizer (exact for ternary rows), Q4_0 through :func:`ternary_q4_0`."""
    if ttype.name == "q4_0":
        return Encoded(ternary_q4_0(codes, gamma), ttype)
    return encode(ternary_weight(codes, gamma), ttype)


def ternary_q4_0(codes: torch.Tensor, gamma: torch.Tensor) -> np.ndarray:
    """Q4_0 blocks holding exactly fp16(gamma) * T: per 32 weights, the scale fp16(gamma) then 16 bytes
    whose low nibbles are weights 0-15 and high nibbles weights 16-31, each T + 8 (llama.cpp's layout;
    a value is (q - 8) * d). Rows must be whole 32-weight blocks."""
    rows, cols = codes.shape
    if cols % 32:
        raise OptionsError(f"q4_0 needs rows that are a multiple of 32 weights, not {cols}")
    q = (codes.to(torch.int16) + 8).to(torch.uint8).numpy().reshape(rows, cols // 32, 32)
    nibbles = q[..., :16] | (q[..., 16:] << np.uint8(4))
    scale = np.full((rows, cols // 32, 1), float(gamma.reshape(())), dtype=np.float16).view(np.uint8)
    return np.concatenate([scale, nibbles], axis=-1).reshape(rows, cols // 32 * 18)


def ternary_weight(codes: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``gamma * T`` in float32: the value a TQ quantizer turns back into exactly T."""
    return codes.to(torch.float32) * gamma.to(torch.float32).reshape(())


def permute_rope(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder a q / k projection's output rows from Hugging Face's rotate-half RoPE layout to the
    interleaved one llama.cpp's "normal" RoPE architectures read (llama.cpp's own Llama conversion)."""
    rows = weight.shape[0]
    assert rows % (2 * n_head) == 0, (weight.shape, n_head)
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
