"""Configuration of the motion VQ-VAE (HumanML3D features at 50 fps <-> 4 x 2048 codes at 50 codes/s)."""

from __future__ import annotations

import copy

from transformers import PretrainedConfig

# Size presets are data. "tiny" is for tests, "small" trains in minutes on a CPU, "base" is the production shape.
PRESETS = {
    "tiny": dict(hidden_size=32, dilations=[1, 3], code_dim=16),
    "small": dict(hidden_size=128, dilations=[1, 3, 9, 1, 3, 9], code_dim=64),
    "base": dict(hidden_size=512, dilations=[1, 3, 9, 27, 1, 3, 9, 27], code_dim=128),
}


class MotionVQVAEConfig(PretrainedConfig):
    """Sizes and options of :class:`~mumo_ds.tokenizers.motion_vqvae.MotionVQVAE`.

    Every size is an explicit field; build a preset with ``MotionVQVAEConfig.from_preset("tiny")``.

    Args:
        feature_dim: channels per frame of the (normalised) HumanML3D features.
        frame_rate: frames per second of the input features and of the codes (no downsampling).
        hidden_size: channels of the 1-D conv encoder and decoder.
        dilations: one residual block per entry (kernel 3 with this dilation), in the encoder and
            again in the decoder; the receptive field grows with their sum.
        kernel_size: kernel of the input/output convolutions and of the residual blocks.
        code_dim: width of the quantised latent.
        num_quantizers: residual VQ levels (codes per frame).
        codebook_size: codes per level.
        ema_decay: decay of the EMA codebook statistics.
        ema_eps: Laplace smoothing of the EMA cluster sizes.
        dead_code_threshold: a code whose EMA cluster size (assignments per step) falls below this
            is restarted from a random recent encoder output of its level.
        commitment_weight: weight of the commitment loss (encoder output to its quantisation).
        motion_features: name of the feature format the model reads (checked by the data pipeline).
    """

    model_type = "mumo_motion_vqvae"

    def __init__(
        self,
        feature_dim: int = 263,
        frame_rate: int = 50,
        hidden_size: int = 512,
        dilations: list[int] | tuple[int, ...] = (1, 3, 9, 27, 1, 3, 9, 27),
        kernel_size: int = 3,
        code_dim: int = 128,
        num_quantizers: int = 4,
        codebook_size: int = 2048,
        ema_decay: float = 0.99,
        ema_eps: float = 1e-5,
        dead_code_threshold: float = 0.1,
        commitment_weight: float = 0.02,
        motion_features: str = "humanml3d-263",
        **kwargs,
    ):
        if kernel_size % 2 != 1:
            raise ValueError(f"MotionVQVAEConfig.kernel_size={kernel_size}: must be odd so frames stay aligned")
        self.feature_dim = feature_dim
        self.frame_rate = frame_rate
        self.hidden_size = hidden_size
        self.dilations = list(dilations)
        self.kernel_size = kernel_size
        self.code_dim = code_dim
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.ema_decay = ema_decay
        self.ema_eps = ema_eps
        self.dead_code_threshold = dead_code_threshold
        self.commitment_weight = commitment_weight
        self.motion_features = motion_features
        super().__init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MotionVQVAEConfig":
        if name not in PRESETS:
            raise ValueError(f"MotionVQVAEConfig: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**copy.deepcopy(PRESETS[name]), **overrides})
