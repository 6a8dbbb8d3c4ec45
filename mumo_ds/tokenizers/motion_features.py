"""HumanML3D 263-d motion features: load, check, normalise, recover joints, resample.

The public entry points the data pipeline uses::

    feats = load_features("clip.npy")                  # [T, 263] float32, at the clip's own fps
    feats50 = resample_features(feats, 60, 50)         # [K, 263] at 50 fps, motion preserved
    mean, std = load_stats("Mean.npy", "Std.npy")      # [263] each
    x = normalize(feats50, mean, std)                  # what the motion VQ-VAE takes
    joints = recover_joints(denormalize(x, mean, std)) # [K, 22, 3] metres, for rendering/metrics

Layout of the 263 channels: :mod:`mumo_ds.tokenizers.motion_layout`; recovery conventions:
:mod:`mumo_ds.tokenizers.motion_kinematics`; resampling method: :mod:`mumo_ds.tokenizers.motion_resample`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mumo_ds.tokenizers.motion_kinematics import bone_lengths, recover_joints, recover_root
from mumo_ds.tokenizers.motion_layout import FEATURE_DIM
from mumo_ds.tokenizers.motion_resample import resample_features, resample_features_naive

__all__ = [
    "FEATURE_DIM",
    "bone_lengths",
    "check_features",
    "denormalize",
    "load_features",
    "load_stats",
    "normalize",
    "recover_joints",
    "recover_root",
    "resample_features",
    "resample_features_naive",
    "at_rate",
]


def check_features(feats: np.ndarray, source: str = "features") -> np.ndarray:
    """Refuse anything but a finite [T >= 2, 263] array; return it as float32. ``source`` names it in errors."""
    if feats.ndim != 2 or feats.shape[1] != FEATURE_DIM:
        raise ValueError(
            f"{source}: motion features have shape {list(feats.shape)}, expected [T, {FEATURE_DIM}] "
            "(HumanML3D 263-d features for 22 joints); convert joints with the HumanML3D feature extraction first"
        )
    if feats.shape[0] < 2:
        raise ValueError(f"{source}: {feats.shape[0]} frame(s); at least 2 frames are needed")
    bad = ~np.isfinite(feats)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(
            f"{source}: {int(bad.sum())} NaN/inf value(s), first at frame {rows[0]}, channel {cols[0]}; "
            "fix or drop this clip"
        )
    return feats.astype(np.float32, copy=False)


def load_features(path: str | Path) -> np.ndarray:
    """A ``.npy`` file of HumanML3D features -> [T, 263] float32 (any frame rate; no pickle)."""
    path = Path(path)
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read motion features as a .npy array ({err})") from err
    return check_features(np.asarray(feats), str(path))


def load_stats(mean_path: str | Path, std_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Dataset ``Mean.npy`` / ``Std.npy`` -> (mean [263], std [263]) float32, checked."""
    out = []
    for path in (Path(mean_path), Path(std_path)):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: motion statistics file not found; pass the dataset's Mean.npy / Std.npy")
        arr = np.load(path, allow_pickle=False).astype(np.float32)
        if arr.shape != (FEATURE_DIM,) or not np.isfinite(arr).all():
            raise ValueError(f"{path}: expected a finite [{FEATURE_DIM}] array of feature statistics, got {list(arr.shape)}")
        out.append(arr)
    if (out[1] <= 0).any():
        raise ValueError(f"{std_path}: {int((out[1] <= 0).sum())} channel(s) with std <= 0; use a std floor (e.g. 1e-3)")
    return out[0], out[1]


def normalize(feats: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[..., 263] features -> ``(feats - mean) / std`` (float32)."""
    return ((feats - mean) / std).astype(np.float32)


def denormalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize`: [..., 263] -> ``x * std + mean`` (float32)."""
    return (x * std + mean).astype(np.float32)


def at_rate(feats: np.ndarray, fps: float, rate: float, resample=resample_features) -> np.ndarray:
    """Features [T, 263] at ``fps`` -> at ``rate``: as they are when the rates agree (the clip's own contact
    labels kept), else ``resample(feats, fps, rate)`` (a tokenizer's own, or :func:`resample_features`). The one
    rule of training a motion tokenizer, encoding with it and building shards."""
    return feats if fps == rate else resample(feats, fps, rate)
