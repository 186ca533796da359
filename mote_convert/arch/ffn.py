"""FFN kinds: the projections of a decoder FFN and each one's [out, in] shape in model dimensions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mote_convert.errors import UnsupportedArchitectureError

HIDDEN = "hidden"
INTERMEDIATE = "intermediate"
GATE_UP = "2*intermediate"  # a fused gate and up projection, stacked along the output dimension


@dataclass(frozen=True)
class FfnKind:
    """A family of FFN layouts. ``shapes[proj]`` is (out, in) in terms of hidden / intermediate."""

    name: str
    projections: tuple[str, ...]
    shapes: dict[str, tuple[str, str]]
    description: str

    def expected_shape(self, proj: str, hidden: int, intermediate: int) -> tuple[int, int]:
        """The [out, in] shape of ``proj``'s weight for the given model dimensions."""
        dims = {HIDDEN: hidden, INTERMEDIATE: intermediate, GATE_UP: 2 * intermediate}
        out_dim, in_dim = self.shapes[proj]
        return dims[out_dim], dims[in_dim]


FFN_KINDS: dict[str, FfnKind] = {}


def register_ffn_kind(factory: Callable[[], FfnKind]) -> Callable[[], FfnKind]:
    """Decorator: register the FfnKind a factory returns under its name."""
    kind = factory()
    if kind.name in FFN_KINDS:
        raise ValueError(f"FFN kind {kind.name!r} registered twice")
    FFN_KINDS[kind.name] = kind
    return factory


@register_ffn_kind
def _gated() -> FfnKind:
    return FfnKind(
        name="gated",
        projections=("gate_proj", "up_proj", "down_proj"),
        shapes={
            "gate_proj": (INTERMEDIATE, HIDDEN),
            "up_proj": (INTERMEDIATE, HIDDEN),
            "down_proj": (HIDDEN, INTERMEDIATE),
        },
        description="act(gate_proj(x)) * up_proj(x) -> down_proj (SwiGLU / GeGLU)",
    )


@register_ffn_kind
def _plain() -> FfnKind:
    return FfnKind(
        name="plain",
        projections=("fc1", "fc2"),
        shapes={"fc1": (INTERMEDIATE, HIDDEN), "fc2": (HIDDEN, INTERMEDIATE)},
        description="fc2(act(fc1(x)))",
    )


@register_ffn_kind
def _fused_gated() -> FfnKind:
    return FfnKind(
        name="fused_gated",
        projections=("gate_up_proj", "down_proj"),
        shapes={"gate_up_proj": (GATE_UP, HIDDEN), "down_proj": (HIDDEN, INTERMEDIATE)},
        description="gate, up = gate_up_proj(x).chunk(2); down_proj(act(gate) * up) (Phi-3)",
    )


def get_ffn_kind(name: str) -> FfnKind:
    """Look up an FFN kind; an unknown name lists the known ones."""
    try:
        return FFN_KINDS[name]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"unknown FFN kind {name!r}; known: {', '.join(sorted(FFN_KINDS))}"
        ) from None
