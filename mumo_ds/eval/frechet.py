"""Fréchet distance between two Gaussians fitted to feature sets (FID, FD, FAD all use it).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)

The last trace is computed from the eigenvalues of the symmetric product
``S1^1/2 S2 S1^1/2``, whose square roots are real once the tiny negative
eigenvalues of nearly singular covariances are clamped to 0. So the result is
always a real number (``scipy.linalg.sqrtm(S1 @ S2)`` returns complex values
like ``(16.82-1.06e-08j)`` on such inputs, which the reference code printed).
"""

from __future__ import annotations

import numpy as np


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues from rounding -> 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_from_stats(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape:
        raise ValueError(f"feature sizes differ: means {mu1.shape} vs {mu2.shape}, covariances {cov1.shape} vs {cov2.shape}")
    root1 = _sqrt_psd(cov1)
    product = root1 @ cov2 @ root1
    eigen = np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * np.sqrt(eigen).sum())
    return max(value, 0.0)  # rounding can give -1e-12 for identical sets


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] of features [N, D] (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians of feature sets ``a`` [N, D] and ``b`` [M, D]."""
    return frechet_from_stats(*feature_stats(a), *feature_stats(b))


def diversity(features: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of rows of ``features`` [N, D] (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] < 2:
        raise ValueError("diversity needs at least 2 samples")
    diff = features[:, None, :] - features[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    n = features.shape[0]
    return float(dist.sum() / (n * (n - 1)))
