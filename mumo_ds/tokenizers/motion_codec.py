"""Raw motion features <-> motion codes with a trained :class:`MotionVQVAE` (what the shard pipeline calls).

``features_to_codes``: features [T, 263] at any fps -> resample to the model's rate (50 fps, motion
preserved) -> normalise with the model's Mean/Std -> codes int16 [4, T50].
``codes_to_features``: codes [4, T] -> raw features [T, 263] at 50 fps (``recover_joints`` gives joints).
"""

from __future__ import annotations

import numpy as np
import torch

from mumo_ds.tokenizers.codes import check_codes
from mumo_ds.tokenizers.motion_features import at_rate, check_features
from mumo_ds.tokenizers.motion_vqvae import MotionVQVAE


def _check_stats(model: MotionVQVAE) -> None:
    if bool((model.feature_mean == 0).all()) and bool((model.feature_std == 1).all()):
        raise ValueError(
            "MotionVQVAE has no feature statistics (feature_mean is 0, feature_std is 1): it was not saved by "
            "data_prep.train_motion_vqvae; call model.set_feature_stats(mean, std) first"
        )


def features_to_codes(model: MotionVQVAE, feats: np.ndarray, fps: float, source: str = "features") -> np.ndarray:
    """Raw features [T, 263] at ``fps`` -> codes int16 [num_quantizers, T_50]."""
    _check_stats(model)
    feats = check_features(np.asarray(feats), source)
    resampled = at_rate(feats, fps, model.config.frame_rate)  # [T_50, 263]
    x = model.normalize(torch.from_numpy(resampled).to(model.feature_mean.device))[None]  # [1, T, 263]
    codes = model.encode(x)[0]  # [4, T]
    return codes.cpu().numpy().astype(np.int16)


def codes_to_features(model: MotionVQVAE, codes: np.ndarray, source: str = "codes") -> np.ndarray:
    """Codes [num_quantizers, T] (any int dtype) -> raw features [T, 263] float32 at the model's rate."""
    _check_stats(model)
    codes = check_codes(codes, model.config.num_quantizers, model.config.codebook_size, source, "motion")
    x = torch.from_numpy(codes.astype(np.int64))[None].to(model.feature_mean.device)  # [1, 4, T]
    feats = model.denormalize(model.decode(x))[0]  # [T, 263]
    return feats.float().cpu().numpy()


def decode_batch(model: MotionVQVAE, codes: torch.Tensor) -> np.ndarray:
    """Codes [B, num_quantizers, T] -> raw (denormalised) features [B, T, 263] float32, in one forward."""
    _check_stats(model)
    with torch.inference_mode():
        return model.denormalize(model.decode(codes.long())).float().cpu().numpy()
