"""The vision tower and projector of a checkpoint as llama.cpp's ``mmproj`` GGUF (its multimodal
library, mtmd / clip), with the key and tensor names llama.cpp's clip loader reads. One planner per
family (:data:`PROJECTORS`, by ``model_type``):

* ``llava`` (LLaVA-1.5): a CLIP vision encoder and the 2-layer MLP projector, projector type ``mlp``.
  LLaVA takes the image features of vision layer ``vision_feature_layer`` (-2: the second to last),
  so the encoder is written up to that layer (``clip.vision.feature_layer``), and the CLS token is
  dropped (LLaVA's ``vision_feature_select_strategy="default"``, what clip does for this projector).
* ``idefics3`` / ``smolvlm`` (Idefics3, SmolVLM): a SigLIP-style encoder (no CLS token, a final
  layer norm) and the connector's pixel shuffle by ``scale_factor`` then one linear layer, projector
  type ``idefics3``; mtmd splits large images into tiles as the Idefics3 processor does.
* ``mistral3`` (Mistral Small 3.1): a Pixtral encoder (RMS norms, gated FFN, 2D RoPE) and the
  projector's RMS norm, patch merger and 2-layer MLP, projector type ``pixtral``; the ``[IMG_BREAK]``
  token's text embedding goes in too, as mtmd puts it after each row of image tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mote_convert.arch.values import config_float, config_int, config_mapping
from mote_convert.errors import CorruptCheckpointError, FormatError, UnsupportedArchitectureError
from mote_convert.export.gguf_file import GgufPlan, GgufTensor
from mote_convert.export.gguf_text import _copy
from mote_convert.export.tensors import TYPES, Encoded, TensorType, encode, gguf_name
from mote_convert.io.index import CheckpointIndex
from mote_convert.io.jsonfile import SIDE_FILES, JsonFileError, load_json
from mote_convert.io.reader import TensorReader
from mote_convert.io.source import model_name
from mote_convert.numbers import is_number

SUPPORTED = (
    "LLaVA-1.5-style models (model_type llava: a CLIP vision tower and a 2-layer GELU MLP projector), "
    "Idefics3 / SmolVLM (idefics3, smolvlm) and Mistral 3 (mistral3: Pixtral)"
)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SIGLIP_MEAN = SIGLIP_STD = [0.5, 0.5, 0.5]
# a CLIP encoder layer's modules -> llama.cpp's tensor kinds (gguf's MODEL_TENSOR)
LAYER_NAMES = {
    "self_attn.q_proj": "V_ENC_ATTN_Q",
    "self_attn.k_proj": "V_ENC_ATTN_K",
    "self_attn.v_proj": "V_ENC_ATTN_V",
    "self_attn.out_proj": "V_ENC_ATTN_O",
    "layer_norm1": "V_ENC_INPUT_NORM",
    "layer_norm2": "V_ENC_POST_ATTN_NORM",
    "mlp.fc1": "V_ENC_FFN_UP",
    "mlp.fc2": "V_ENC_FFN_DOWN",
}


def _check(config: dict[str, Any]) -> Mapping[str, Any]:
    vision = config_mapping(config, "vision_config", "vision_config")
    problems = []
    if config.get("model_type") != "llava":
        problems.append(f"model_type is {config.get('model_type')!r}")
    if vision.get("model_type", "clip_vision_model") != "clip_vision_model":
        problems.append(f"the vision tower is {vision.get('model_type')!r}")
    if config.get("projector_hidden_act", "gelu") != "gelu":
        problems.append(f"the projector's activation is {config.get('projector_hidden_act')!r}")
    if config.get("vision_feature_select_strategy", "default") != "default":
        problems.append("vision_feature_select_strategy is not 'default'")
    feature = config.get("vision_feature_layer", -2)
    if isinstance(feature, bool) or not isinstance(feature, int):
        problems.append(f"vision_feature_layer is {str(feature)[:40]} (one layer index needed)")
    if problems:
        raise UnsupportedArchitectureError(f"--mmproj supports {SUPPORTED}; here {'; '.join(problems)}")
    return vision


def _image_stats(
    root: Path, default: tuple[list[float], list[float]] = (CLIP_MEAN, CLIP_STD)
) -> tuple[list[float], list[float]]:
    """The image processor's mean and std (from preprocessor_config.json or processor_config.json)."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = root / name
        if path.is_file():
            try:
                data = load_json(path, SIDE_FILES[name])
            except JsonFileError as exc:
                raise CorruptCheckpointError(f"{path}: {exc}") from None
            data = data.get("image_processor", data)
            if isinstance(data, dict) and "image_mean" in data and "image_std" in data:
                return _channels(path, data["image_mean"]), _channels(path, data["image_std"])
    return default


def _channels(path: Path, values: object) -> list[float]:
    """Three per-channel numbers (image_mean or image_std), or a CorruptCheckpointError naming the file."""
    if not (isinstance(values, list) and len(values) == 3 and all(is_number(v) for v in values)):
        raise CorruptCheckpointError(
            f"{path}: image_mean and image_std must be lists of 3 finite numbers, got {str(values)[:80]}"
        )
    return [float(v) for v in values]


ENCODER_SIZES = ("image_size", "patch_size", "hidden_size", "intermediate_size", "num_attention_heads")


def _sizes(vision: Mapping[str, Any]) -> dict[str, int]:
    """The vision encoder's sizes every projector's keys need, checked (``num_hidden_layers`` too)."""
    return {
        key: config_int(vision, key, f"vision_config.{key}", purpose="--mmproj")
        for key in ("num_hidden_layers", *ENCODER_SIZES)
    }


def _clip_plan(
    root: Path,
    projector: str,
    sizes: dict[str, int],
    *,
    projection: int,
    eps: float,
    blocks: int,
    stats: tuple[list[float], list[float]],
) -> GgufPlan:
    """An mmproj plan with the keys every projector's encoder has (llama.cpp's clip loader reads them)."""
    plan = GgufPlan("clip")
    plan.add("add_bool", "clip.has_vision_encoder", True)
    plan.add("add_string", "clip.projector_type", projector)
    plan.add("add_name", model_name(root))
    plan.add("add_uint32", "clip.vision.image_size", sizes["image_size"])
    plan.add("add_uint32", "clip.vision.patch_size", sizes["patch_size"])
    plan.add("add_uint32", "clip.vision.embedding_length", sizes["hidden_size"])
    plan.add("add_uint32", "clip.vision.feed_forward_length", sizes["intermediate_size"])
    plan.add("add_uint32", "clip.vision.projection_dim", projection)
    plan.add("add_uint32", "clip.vision.attention.head_count", sizes["num_attention_heads"])
    plan.add("add_float32", "clip.vision.attention.layer_norm_epsilon", eps)
    plan.add("add_uint32", "clip.vision.block_count", blocks)
    plan.add("add_array", "clip.vision.image_mean", stats[0])
    plan.add("add_array", "clip.vision.image_std", stats[1])
    return plan


def plan_mmproj(root: Path, index: CheckpointIndex, config: dict[str, Any]) -> GgufPlan:
    """Every key and tensor of the mmproj GGUF, from headers (the planner of the family's
    ``model_type``; a family of :data:`NO_PROJECTOR` is refused with its reason, any other naming
    what is supported)."""
    family = config.get("model_type")
    if family in NO_PROJECTOR:
        raise UnsupportedArchitectureError(f"{root}: --mmproj is not written for {family}: {NO_PROJECTOR[family]}")
    return PROJECTORS.get(family, _plan_llava)(root, index, config)


def _adder(root: Path, index: CheckpointIndex, plan: GgufPlan) -> Any:
    def add(name: str, source: str, ttype: TensorType | None = None) -> None:
        info = index.tensors.get(source)
        if info is None:  # e.g. a vision_config.num_hidden_layers larger than the tower
            raise FormatError(f"{root}: no {source} (config.json's vision_config and the tensors disagree)")
        if ttype is None:  # float32 for vectors, 16-bit weights as stored (float32 stays float32)
            ttype = TYPES["f32"] if len(info.shape) == 1 or info.dtype == "F32" else TYPES["f16"]
        plan.tensor(GgufTensor(name, info.shape, ttype, _copy(source, ttype), (source,)))

    return add


def _plan_llava(root: Path, index: CheckpointIndex, config: dict[str, Any]) -> GgufPlan:
    vision = _check(config)
    # "vision_tower.vision_model.embeddings..." (llava-hf's files) or "vision_tower.embeddings..." (transformers 5)
    patch = [n for n in index.tensors if n.endswith("embeddings.patch_embedding.weight") and "vision_tower." in n]
    linear = [n for n in index.tensors if n.endswith("multi_modal_projector.linear_1.weight")]
    if len(patch) != 1 or len(linear) != 1:
        raise UnsupportedArchitectureError(
            f"{root}: no CLIP vision tower and MLP projector found (--mmproj supports {SUPPORTED})"
        )
    vroot = patch[0].removesuffix("embeddings.patch_embedding.weight")
    proot = linear[0].removesuffix("linear_1.weight")

    sizes = _sizes(vision)
    n_layers = sizes["num_hidden_layers"]
    feature = config_int(
        config, "vision_feature_layer", "vision_feature_layer", default=-2, low=-n_layers, high=n_layers
    )
    feature = feature if feature >= 0 else n_layers + feature + 1  # an index into the hidden states
    projection = config_int(vision, "projection_dim", "vision_config.projection_dim", purpose="--mmproj", default=512)
    eps = config_float(vision, "layer_norm_eps", "vision_config.layer_norm_eps", default=1e-5)
    plan = _clip_plan(root, "mlp", sizes, projection=projection, eps=eps, blocks=feature, stats=_image_stats(root))
    plan.add("add_bool", "clip.has_llava_projector", True)
    plan.add("add_array", "clip.vision.feature_layer", [feature])
    plan.add("add_bool", "clip.use_gelu", vision.get("hidden_act", "quick_gelu") == "gelu")

    add = _adder(root, index, plan)
    add(gguf_name("V_ENC_EMBD_PATCH"), patch[0], TYPES["f16"])  # ggml's convolution takes f16 kernels
    add(gguf_name("V_ENC_EMBD_CLS", suffix=None), f"{vroot}embeddings.class_embedding", TYPES["f32"])
    add(gguf_name("V_ENC_EMBD_POS"), f"{vroot}embeddings.position_embedding.weight")
    add(gguf_name("V_PRE_NORM"), f"{vroot}pre_layrnorm.weight")
    add(gguf_name("V_PRE_NORM", suffix="bias"), f"{vroot}pre_layrnorm.bias")
    for layer in range(feature):
        for hf, kind in LAYER_NAMES.items():
            for part in ("weight", "bias"):
                add(gguf_name(kind, layer, part), f"{vroot}encoder.layers.{layer}.{hf}.{part}")
    for hf, index_in_mlp in (("linear_1", 0), ("linear_2", 2)):  # LLaVA's projector: Linear, GELU, Linear
        for part in ("weight", "bias"):
            add(gguf_name("V_MMPROJ", index_in_mlp, part), f"{proot}{hf}.{part}")
    return plan


def _plan_idefics3(root: Path, index: CheckpointIndex, config: dict[str, Any]) -> GgufPlan:
    """Idefics3 / SmolVLM: SigLIP-style encoder, pixel shuffle, one linear layer."""
    vision = config_mapping(config, "vision_config", "vision_config")
    patch = [n for n in index.tensors if n.endswith("vision_model.embeddings.patch_embedding.weight")]
    proj = [n for n in index.tensors if n.endswith("connector.modality_projection.proj.weight")]
    if len(patch) != 1 or len(proj) != 1:
        raise UnsupportedArchitectureError(
            f"{root}: no Idefics3 vision model and connector found (--mmproj supports {SUPPORTED})"
        )
    if vision.get("hidden_act", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", "gelu"):
        raise UnsupportedArchitectureError(
            f"{root}: --mmproj of {config.get('model_type')}: the vision activation is {vision.get('hidden_act')!r}; "
            "llama.cpp's clip computes GELU"
        )
    vroot = patch[0].removesuffix("embeddings.patch_embedding.weight")
    sizes = _sizes(vision)
    n_layers = sizes["num_hidden_layers"]
    scale = config_int(config, "scale_factor", "scale_factor", purpose="--mmproj", default=2, low=1)
    eps = config_float(vision, "layer_norm_eps", "vision_config.layer_norm_eps", default=1e-6)
    plan = _clip_plan(
        root,
        "idefics3",
        sizes,
        projection=index.tensors[proj[0]].shape[0],
        eps=eps,
        blocks=n_layers,
        stats=_image_stats(root, (SIGLIP_MEAN, SIGLIP_STD)),
    )
    plan.add("add_uint32", "clip.vision.projector.scale_factor", scale)
    plan.add("add_bool", "clip.use_gelu", True)

    add = _adder(root, index, plan)
    add(gguf_name("V_ENC_EMBD_PATCH"), patch[0], TYPES["f16"])  # ggml's convolution takes f16 kernels
    add(gguf_name("V_ENC_EMBD_PATCH", suffix="bias"), f"{vroot}embeddings.patch_embedding.bias", TYPES["f32"])
    add(gguf_name("V_ENC_EMBD_POS"), f"{vroot}embeddings.position_embedding.weight")
    for layer in range(n_layers):
        for hf, kind in LAYER_NAMES.items():
            for part in ("weight", "bias"):
                add(gguf_name(kind, layer, part), f"{vroot}encoder.layers.{layer}.{hf}.{part}")
    add(gguf_name("V_POST_NORM"), f"{vroot}post_layernorm.weight")
    add(gguf_name("V_POST_NORM", suffix="bias"), f"{vroot}post_layernorm.bias")
    add(gguf_name("V_MMPROJ_FC"), proj[0])
    return plan


# a Pixtral encoder layer's modules -> llama.cpp's tensor kinds
PIXTRAL_LAYER = {
    "attention.q_proj": "V_ENC_ATTN_Q",
    "attention.k_proj": "V_ENC_ATTN_K",
    "attention.v_proj": "V_ENC_ATTN_V",
    "attention.o_proj": "V_ENC_ATTN_O",
    "attention_norm": "V_ENC_INPUT_NORM",
    "ffn_norm": "V_ENC_POST_ATTN_NORM",
    "feed_forward.gate_proj": "V_ENC_FFN_GATE",
    "feed_forward.up_proj": "V_ENC_FFN_UP",
    "feed_forward.down_proj": "V_ENC_FFN_DOWN",
}


def _token_id(root: Path, token: str) -> int:
    """The id of an added token, from tokenizer.json (one the projector's image layout needs)."""
    path = root / "tokenizer.json"
    try:
        added = load_json(path, SIDE_FILES["tokenizer.json"]).get("added_tokens") or [] if path.is_file() else []
    except JsonFileError as exc:
        raise CorruptCheckpointError(f"{path}: {exc}") from None
    ids = [t.get("id") for t in added if isinstance(t, dict) and t.get("content") == token]
    if len(ids) != 1 or not isinstance(ids[0], int):
        raise FormatError(f"{root}: the tokenizer has no {token} token (Mistral 3's image layout needs it)")
    return ids[0]


def _row(name: str, row: int) -> Any:
    """One row of a checkpoint tensor, as float32 (a token's embedding)."""

    def produce(reader: TensorReader) -> Encoded:
        return encode(reader.read(name)[row], TYPES["f32"])

    return produce


def _plan_pixtral(root: Path, index: CheckpointIndex, config: dict[str, Any]) -> GgufPlan:
    """Mistral 3: a Pixtral encoder (RMS norms, gated FFN, 2D RoPE) and the patch-merging projector."""
    vision = config_mapping(config, "vision_config", "vision_config")
    patch = [n for n in index.tensors if n.endswith("vision_tower.patch_conv.weight")]
    if len(patch) != 1:
        raise UnsupportedArchitectureError(f"{root}: no Pixtral vision tower found (--mmproj supports {SUPPORTED})")
    vroot = patch[0].removesuffix("patch_conv.weight")
    proot = vroot.removesuffix("vision_tower.") + "multi_modal_projector."

    sizes = _sizes(vision)
    n_layers = sizes["num_hidden_layers"]
    act = vision.get("hidden_act", "gelu")
    if act not in ("gelu", "silu"):
        raise UnsupportedArchitectureError(f"{root}: --mmproj of mistral3: the vision activation is {act!r}")
    merge = config_int(config, "spatial_merge_size", "spatial_merge_size", purpose="--mmproj", default=2, low=1)
    plan = _clip_plan(
        root,
        "pixtral",
        sizes,
        projection=index.tensors[f"{proot}linear_2.weight"].shape[0],
        eps=1e-5,  # Pixtral's RMS norms
        blocks=n_layers,
        stats=_image_stats(root),
    )
    plan.add("add_uint32", "clip.vision.spatial_merge_size", merge)
    plan.add("add_bool", "clip.use_silu" if act == "silu" else "clip.use_gelu", True)

    add = _adder(root, index, plan)
    add(gguf_name("V_ENC_EMBD_PATCH"), patch[0], TYPES["f16"])
    add(gguf_name("V_PRE_NORM"), f"{vroot}ln_pre.weight")
    for layer in range(n_layers):
        for hf, kind in PIXTRAL_LAYER.items():
            add(gguf_name(kind, layer), f"{vroot}transformer.layers.{layer}.{hf}.weight")
    embed = [n for n in index.tensors if n.endswith("embed_tokens.weight") and "language_model" in n]
    if len(embed) != 1:
        raise FormatError(f"{root}: no language model embed_tokens.weight (the [IMG_BREAK] embedding comes from it)")
    row = _token_id(root, "[IMG_BREAK]")
    plan.tensor(
        GgufTensor(
            gguf_name("V_TOK_EMBD_IMG_BREAK", suffix=None),
            (index.tensors[embed[0]].shape[1],),
            TYPES["f32"],
            _row(embed[0], row),
            (embed[0],),
        )
    )
    add(gguf_name("V_MM_INP_NORM"), f"{proot}norm.weight")
    add(gguf_name("V_MM_PATCH_MERGER"), f"{proot}patch_merger.merging_layer.weight")
    for hf, index_in_mlp in (("linear_1", 1), ("linear_2", 2)):
        add(gguf_name("V_MMPROJ", index_in_mlp), f"{proot}{hf}.weight")
        if f"{proot}{hf}.bias" in index.tensors:
            add(gguf_name("V_MMPROJ", index_in_mlp, "bias"), f"{proot}{hf}.bias")
    return plan


# model_type -> its mmproj planner; anything else goes to _plan_llava, whose checks name what is supported
PROJECTORS = {
    "llava": _plan_llava,
    "idefics3": _plan_idefics3,
    "smolvlm": _plan_idefics3,
    "mistral3": _plan_pixtral,
}

# vision families whose text side exports but whose image path llama.cpp's mtmd does not compute as
# transformers does, so an mmproj would hand the language model image tokens it was not trained on
NO_PROJECTOR = {
    "llava_next": "llama.cpp's mtmd slices LLaVA-NeXT images without its unpadding and image_newline rows "
    "(anyres), so the image tokens would not be the ones the model was trained on",
    "llava_onevision": "llama.cpp's mtmd has no LLaVA-OneVision image path (SigLIP tiles with anyres_max "
    "pooling, unpadding and image_newline rows)",
    "vipllava": "VipLLaVA projects features of several vision layers at once, which llama.cpp's clip "
    "projectors do not compute",
}
