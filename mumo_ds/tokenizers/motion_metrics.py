"""Metrics of the motion VQ-VAE: reconstruction MPJPE on recovered joints, code perplexity."""

from __future__ import annotations

import numpy as np

from mumo_ds.tokenizers.motion_kinematics import recover_joints


def mpjpe_mm(pred_feats: np.ndarray, true_feats: np.ndarray) -> dict[str, float]:
    """Raw (denormalised) features [T, 263] x 2 -> mean per-joint position error in millimetres.

    ``mpjpe_mm``: on the recovered world joints (root trajectory integrated from the velocities,
    so drift counts); ``mpjpe_root_relative_mm``: after subtracting each frame's root position.
    """
    pred, true = recover_joints(pred_feats).astype(np.float64), recover_joints(true_feats).astype(np.float64)  # [T, 22, 3]
    err = np.linalg.norm(pred - true, axis=-1)  # [T, 22]
    rel = np.linalg.norm((pred - pred[:, :1]) - (true - true[:, :1]), axis=-1)
    return {"mpjpe_mm": float(err.mean() * 1000), "mpjpe_root_relative_mm": float(rel.mean() * 1000)}


def perplexity_from_counts(counts: np.ndarray) -> float:
    """Assignments per code [K] -> exp(entropy of the usage distribution): the effective number of codes used."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def perplexity(codes: np.ndarray, codebook_size: int) -> float:
    """Code ids [N] -> :func:`perplexity_from_counts` of their histogram."""
    return perplexity_from_counts(np.bincount(codes.reshape(-1).astype(np.int64), minlength=codebook_size))
