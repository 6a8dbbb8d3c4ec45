"""Motion VQ-VAE: normalised HumanML3D features at 50 fps <-> 4 x 2048 codes per frame at 50 codes/s.

::

    features [B, T, 263] --encoder (1-D convs, no downsampling)--> z [B, T, D]
        --residual VQ (4 EMA codebooks x 2048)--> codes [B, 4, T] (same 50 Hz timeline as the music codes)
        --sum of code vectors--> [B, T, D] --decoder (1-D convs)--> features [B, T, 263]

Usage::

    model = MotionVQVAE.from_pretrained("runs/motion_vqvae/model")
    codes = model.encode(normalised_features_50fps)       # LongTensor [B, 4, T]
    feats = model.decode(codes)                            # [B, T, 263], normalised
    model.denormalize(feats)                               # with the dataset Mean/Std saved in the model

The model is single-device code. Training (:mod:`data_prep.train_motion_vqvae`) calls ``forward``
for the loss and the codebook statistics, sums the statistics over ranks, then
:meth:`MotionVQVAE.update_codebooks` (EMA step + dead-code restart).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from mumo_ds.tokenizers.motion_rvq import ResidualVQ
from mumo_ds.tokenizers.motion_vqvae_config import MotionVQVAEConfig

__all__ = ["MotionVQVAE", "MotionVQVAEConfig"]


class ResBlock(nn.Module):
    """``x + conv1x1(relu(conv_k,dilated(relu(x))))`` over [B, C, T]; length preserved."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2))
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(torch.relu(self.conv(torch.relu(x))))


def conv_stack(c_in: int, c_out: int, config: MotionVQVAEConfig) -> nn.Sequential:
    """[B, c_in, T] -> [B, c_out, T]: conv in, one residual block per dilation, relu, conv out."""
    h, k = config.hidden_size, config.kernel_size
    return nn.Sequential(
        nn.Conv1d(c_in, h, k, padding=k // 2),
        *[ResBlock(h, k, d) for d in config.dilations],
        nn.ReLU(),
        nn.Conv1d(h, c_out, k, padding=k // 2),
    )


class MotionVQVAEPreTrainedModel(PreTrainedModel):
    config_class = MotionVQVAEConfig
    base_model_prefix = "motion_vqvae"
    main_input_name = "features"
    supports_gradient_checkpointing = False
    _no_split_modules = ["ResBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        """Convolutions keep PyTorch's default init; codebook buffers start as built (restarted from data)."""


class MotionVQVAE(MotionVQVAEPreTrainedModel):
    """Encoder, residual VQ and decoder over normalised 263-d features at ``config.frame_rate``.

    Buffers ``feature_mean`` / ``feature_std`` [263] hold the dataset statistics the model was
    trained with (set by the trainer), so a saved folder can normalise raw features itself.
    """

    def __init__(self, config: MotionVQVAEConfig):
        super().__init__(config)
        self.encoder = conv_stack(config.feature_dim, config.code_dim, config)
        self.quantizer = ResidualVQ(
            config.num_quantizers,
            config.codebook_size,
            config.code_dim,
            config.ema_decay,
            config.ema_eps,
            config.dead_code_threshold,
        )
        self.decoder = conv_stack(config.code_dim, config.feature_dim, config)
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        self.post_init()

    # ------------------------------------------------------------ statistics
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the dataset Mean/Std [263] the training features were normalised with."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=self.feature_mean.dtype))
        self.feature_std.copy_(torch.as_tensor(std, dtype=self.feature_std.dtype))

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Raw features [..., 263] -> normalised."""
        return (features - self.feature_mean) / self.feature_std

    def denormalize(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised features [..., 263] -> raw."""
        return features * self.feature_std + self.feature_mean

    # ------------------------------------------------------------ model
    def _check(self, features: torch.Tensor) -> None:
        if features.ndim != 3 or features.shape[-1] != self.config.feature_dim:
            raise ValueError(
                f"MotionVQVAE: features have shape {list(features.shape)}, expected [B, T, {self.config.feature_dim}] "
                f"(normalised HumanML3D features at {self.config.frame_rate} fps)"
            )

    def _latent(self, features: torch.Tensor) -> torch.Tensor:
        """[B, T, 263] -> [B, T, D]."""
        self._check(features)
        return self.encoder(features.transpose(1, 2)).transpose(1, 2)  # [B, 263, T] -> [B, D, T] -> [B, T, D]

    def _features(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, T, 263]."""
        return self.decoder(latent.transpose(1, 2)).transpose(1, 2)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised features [B, T, 263] -> dict with ``loss`` (reconstruction MSE + weighted commitment),
        ``recon_loss``, ``commit_loss``, ``reconstruction`` [B, T, 263], ``codes`` [B, L, T] and the
        detached codebook statistics ``counts`` [L, K], ``sums`` [L, K, D], ``residuals`` [L, B*T, D]
        for :meth:`update_codebooks`. Buffers are not changed here."""
        vq = self.quantizer(self._latent(features))
        reconstruction = self._features(vq.pop("quantized"))  # [B, T, 263]
        recon_loss = nn.functional.mse_loss(reconstruction, features)
        loss = recon_loss + self.config.commitment_weight * vq["commit_loss"]
        return {"loss": loss, "recon_loss": recon_loss, "reconstruction": reconstruction, **vq}

    @torch.no_grad()
    def update_codebooks(self, counts: torch.Tensor, sums: torch.Tensor, residuals: torch.Tensor) -> list[int]:
        """EMA codebook step with (rank-summed) ``counts``/``sums`` and dead-code restart from ``residuals``.

        Returns the number of codes restarted per level."""
        return self.quantizer.update(counts, sums, residuals)

    @torch.no_grad()
    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised features [B, T, 263] at 50 fps -> codes LongTensor [B, 4, T] in 0..2047."""
        z = self._latent(features)  # [B, T, D]
        return self.quantizer(z)["codes"]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, 4, T] -> normalised features [B, T, 263]."""
        c = self.config
        if codes.ndim != 3 or codes.shape[1] != c.num_quantizers:
            raise ValueError(f"MotionVQVAE.decode: codes have shape {list(codes.shape)}, expected [B, {c.num_quantizers}, T]")
        if codes.numel() and (codes.min() < 0 or codes.max() >= c.codebook_size):
            raise ValueError(f"MotionVQVAE.decode: codes outside 0..{c.codebook_size - 1} (min {int(codes.min())}, max {int(codes.max())})")
        return self._features(self.quantizer.decode(codes.long()))


def _register_auto_classes() -> None:
    """Let ``AutoConfig`` / ``AutoModel`` load saved motion VQ-VAE folders."""
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(MotionVQVAEConfig.model_type, MotionVQVAEConfig, exist_ok=True)
    AutoModel.register(MotionVQVAEConfig, MotionVQVAE, exist_ok=True)


_register_auto_classes()
