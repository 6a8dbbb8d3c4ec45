"""Metrics of the motion VQ-VAE: reconstruction MPJPE on recovered joints, code perplexity."""

from __future__ import annotations

import numpy as np

from mumo_ds.tokenizers.motion_kinematics import recover_joints
from mumo_ds.tokenizers.motion_layout import RIC, ROOT_HEIGHT


def mpjpe_mm(pred_feats: np.ndarray, true_feats: np.ndarray) -> dict[str, float]:
    """Raw (denormalised) features [T, 263] x 2 -> mean per-joint position error in millimetres.

    ``mpjpe_mm``: on the recovered world joints (root trajectory and heading integrated from the
    velocities over the whole sequence, so drift counts); ``mpjpe_root_relative_mm``: the same after
    subtracting each frame's root position (heading drift still counts); ``mpjpe_local_mm``: the
    22 joints in each frame's own heading frame, root XZ at the origin (no integration, no drift).
    """
    pred, true = recover_joints(pred_feats).astype(np.float64), recover_joints(true_feats).astype(np.float64)  # [T, 22, 3]
    err = np.linalg.norm(pred - true, axis=-1)  # [T, 22]
    rel = np.linalg.norm((pred - pred[:, :1]) - (true - true[:, :1]), axis=-1)
    local = np.linalg.norm(_local_joints(pred_feats) - _local_joints(true_feats), axis=-1)
    return {
        "mpjpe_mm": float(err.mean() * 1000),
        "mpjpe_root_relative_mm": float(rel.mean() * 1000),
        "mpjpe_local_mm": float(local.mean() * 1000),
    }


def _local_joints(feats: np.ndarray) -> np.ndarray:
    """[T, 263] -> [T, 22, 3]: root (0, height, 0) and joints 1..21 as stored (heading frame)."""
    t = feats.shape[0]
    root = np.zeros((t, 1, 3))
    root[:, 0, 1] = feats[:, ROOT_HEIGHT][:, 0]
    return np.concatenate([root, feats[:, RIC].astype(np.float64).reshape(t, -1, 3)], axis=1)


def perplexity_from_counts(counts: np.ndarray) -> float:
    """Assignments per code [K] -> exp(entropy of the usage distribution): the effective number of codes used."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def perplexity(codes: np.ndarray, codebook_size: int) -> float:
    """Code ids [N] -> :func:`perplexity_from_counts` of their histogram."""
    return perplexity_from_counts(np.bincount(codes.reshape(-1).astype(np.int64), minlength=codebook_size))
