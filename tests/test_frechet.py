"""Fréchet distance and diversity against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from mumo_ds.eval.frechet import diversity, frechet_distance, frechet_from_stats


def test_identical_sets_give_zero():
    x = np.random.default_rng(0).normal(size=(200, 6))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_shifted_gaussians_give_the_analytic_distance():
    # same covariance, means apart by m: d^2 = |m|^2
    cov = np.diag([1.0, 2.0, 0.5])
    assert frechet_from_stats(np.zeros(3), cov, np.array([1.0, 2.0, 2.0]), cov) == pytest.approx(9.0)
    # 1-D: d^2 = (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_from_stats(np.array([0.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == pytest.approx(9 + 1)
    # diagonal covariances: sum of per-axis 1-D distances
    c1, c2 = np.diag([1.0, 9.0]), np.diag([4.0, 1.0])
    assert frechet_from_stats(np.zeros(2), c1, np.ones(2), c2) == pytest.approx(2 + (1 - 2) ** 2 + (3 - 1) ** 2)


def test_nearly_singular_covariances_give_a_real_result():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 3))
    a = np.concatenate([base, base[:, :1] * 1e-9 + base[:, 1:2]], axis=1)  # rank-deficient: 4 dims, rank 3
    b = a + rng.normal(scale=1e-3, size=a.shape)
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = scipy.linalg.sqrtm(ca @ cb)
    value = frechet_from_stats(mu_a, ca, mu_b, cb)
    assert isinstance(value, float) and value >= 0
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(reference).real
    assert value == pytest.approx(expected, abs=1e-6)


def test_diversity_by_hand():
    points = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])  # pair distances 5, 4, 3
    assert diversity(points) == pytest.approx((5 + 4 + 3) / 3)
