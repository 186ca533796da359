"""The MoTE format in one place: ``config.json["mote"]``, the expert formats and their codecs.

Every other module asks this package for names, specs and validation instead of spelling them.
"""

from mote_convert.format.codecs import (
    BIAS,
    CODECS,
    EXPERT_NAME,
    CodeStats,
    ExpertCodec,
    PartSpec,
    codec_of_suffix,
    expert_base,
    get_codec,
    register_codec,
    router_name,
)
from mote_convert.format.config import (
    ACTIVATION_BITS,
    FORMAT_VERSION,
    MAX_EXPERTS,
    MAX_LAYERS,
    SAFETENSORS_METADATA,
    WEIGHT_QUANT,
    ExpertFormat,
    MoteConfig,
    Problem,
    check_file_metadata,
    config_key,
    is_int,
    is_number,
)

__all__ = [
    "ACTIVATION_BITS",
    "BIAS",
    "CODECS",
    "EXPERT_NAME",
    "FORMAT_VERSION",
    "MAX_EXPERTS",
    "MAX_LAYERS",
    "SAFETENSORS_METADATA",
    "WEIGHT_QUANT",
    "CodeStats",
    "ExpertCodec",
    "ExpertFormat",
    "MoteConfig",
    "PartSpec",
    "Problem",
    "check_file_metadata",
    "codec_of_suffix",
    "config_key",
    "expert_base",
    "get_codec",
    "is_int",
    "is_number",
    "register_codec",
    "router_name",
]
