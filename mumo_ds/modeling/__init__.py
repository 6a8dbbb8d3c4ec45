"""The MuMo model, registered with the HF Auto classes on import."""

from transformers import AutoConfig, AutoModel

from .configuration_mumo import MODALITIES, PRESETS, MuMoConfig
from .delay_pattern import build_delay_pattern, revert_delay_pattern
from .modeling_mumo import MuMoForConditionalGeneration, MuMoOutput
from .moe import FeedForward, ModalityExpertFFN

AutoConfig.register(MuMoConfig.model_type, MuMoConfig, exist_ok=True)
AutoModel.register(MuMoConfig, MuMoForConditionalGeneration, exist_ok=True)

__all__ = [
    "MODALITIES",
    "PRESETS",
    "FeedForward",
    "ModalityExpertFFN",
    "MuMoConfig",
    "MuMoForConditionalGeneration",
    "MuMoOutput",
    "build_delay_pattern",
    "revert_delay_pattern",
]
