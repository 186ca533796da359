"""FFN kinds: the projections of a decoder FFN and each one's [out, in] shape in model dimensions.

A kind is a *form* (what the FFN computes) under one family's projection names. The form is what
matters to the math (docs/method.md); the names are how transformers' modeling code spells it.
MoTE's experts run the dense FFN class's own ``forward``, so any names work once registered here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mote_convert.errors import UnsupportedArchitectureError

HIDDEN = "hidden"
INTERMEDIATE = "intermediate"
GATE_UP = "2*intermediate"  # a fused gate and up projection, stacked along the output dimension

GATED = "gated"  # down(act(gate(x)) * up(x)): SwiGLU / GeGLU
FUSED_GATED = "fused_gated"  # gate, up = gate_up(x).chunk(2); down(act(gate) * up)
PLAIN = "plain"  # out(act(in(x)))
FORMS: dict[str, tuple[tuple[str, str], ...]] = {
    GATED: ((INTERMEDIATE, HIDDEN), (INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)),
    FUSED_GATED: ((GATE_UP, HIDDEN), (HIDDEN, INTERMEDIATE)),
    PLAIN: ((INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)),
}
FORM_TEXT = {
    GATED: "act({0}(x)) * {1}(x) -> {2}",
    FUSED_GATED: "gate, up = {0}(x).chunk(2); {1}(act(gate) * up)",
    PLAIN: "{1}(act({0}(x)))",
}


@dataclass(frozen=True)
class FfnKind:
    """A family of FFN layouts. ``projections`` are in the form's order (gate, up, down; or in, out);
    ``shapes[proj]`` is (out, in) in terms of hidden / intermediate."""

    name: str
    form: str
    projections: tuple[str, ...]
    description: str

    @property
    def shapes(self) -> dict[str, tuple[str, str]]:
        """Each projection's (out, in) in terms of hidden / intermediate."""
        return dict(zip(self.projections, FORMS[self.form], strict=True))

    def expected_shape(self, proj: str, hidden: int, intermediate: int) -> tuple[int, int]:
        """The [out, in] shape of ``proj``'s weight for the given model dimensions."""
        dims = {HIDDEN: hidden, INTERMEDIATE: intermediate, GATE_UP: 2 * intermediate}
        out_dim, in_dim = self.shapes[proj]
        return dims[out_dim], dims[in_dim]


FFN_KINDS: dict[str, FfnKind] = {}


def register_ffn_kind(name: str, form: str, projections: tuple[str, ...], where: str) -> FfnKind:
    """Register a kind: a form under these projection names (``where``: which families use them)."""
    if name in FFN_KINDS:
        raise ValueError(f"FFN kind {name!r} registered twice")
    if len(projections) != len(FORMS[form]):
        raise ValueError(f"FFN kind {name!r}: the {form} form has {len(FORMS[form])} projections")
    kind = FfnKind(name, form, projections, f"{FORM_TEXT[form].format(*projections)} ({where})")
    FFN_KINDS[name] = kind
    return kind


register_ffn_kind("gated", GATED, ("gate_proj", "up_proj", "down_proj"), "Llama, Qwen, Gemma, Mistral, ...")
register_ffn_kind("gated_w", GATED, ("w1", "w3", "w2"), "LFM2")
register_ffn_kind("fused_gated", FUSED_GATED, ("gate_up_proj", "down_proj"), "Phi-3, GLM")
register_ffn_kind("plain", PLAIN, ("fc1", "fc2"), "Phi, ...")
register_ffn_kind("plain_up_down", PLAIN, ("up_proj", "down_proj"), "plain FFNs with up/down names")
register_ffn_kind("plain_fc_in_out", PLAIN, ("fc_in", "fc_out"), "GPT-J, CodeGen")
register_ffn_kind("plain_h_4h", PLAIN, ("dense_h_to_4h", "dense_4h_to_h"), "GPT-NeoX, Falcon, Persimmon")
register_ffn_kind("plain_c_fc", PLAIN, ("c_fc", "c_proj"), "StarCoder2, GPT-BigCode")


def get_ffn_kind(name: str) -> FfnKind:
    """Look up an FFN kind; an unknown name lists the known ones."""
    try:
        return FFN_KINDS[name]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"unknown FFN kind {name!r}; known: {', '.join(sorted(FFN_KINDS))}"
        ) from None
