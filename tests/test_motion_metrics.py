"""Motion metrics on the bundled AIST++ clip: itself < time-shifted copy < noise; beats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mumo_ds.eval.motion_features import geometric_features, kinetic_features
from mumo_ds.eval.motion_metrics import beat_align_score, motion_beats, motion_metrics, music_beats
from mumo_ds.tokenizers.motion_features import load_features, recover_joints

CLIP = Path(__file__).resolve().parents[1] / "data_prep/sample_data/motion/gWA_sBM_cAll_d25_mWA0_ch01.npy"
FPS = 60


@pytest.fixture(scope="module")
def joints():
    return recover_joints(load_features(CLIP))  # [719, 22, 3]


def windows(joints, start=0, length=120, stride=40):
    return [joints[s : s + length] for s in range(start, len(joints) - length + 1, stride)]


def test_feature_shapes_and_kinetics_by_hand():
    t = np.arange(10, dtype=np.float64)
    still = np.zeros((10, 22, 3))
    moving = still.copy()
    moving[:, :, 0] = t[:, None] * 0.1  # every joint at 0.1 m/frame = 6 m/s along x
    k = kinetic_features(moving, fps=60).reshape(22, 3)
    assert np.allclose(k[:, 0], 0.5 * 6.0**2) and np.allclose(k[:, 1:], 0.0)
    assert kinetic_features(still, 60).shape == (66,)


def test_metrics_order_itself_shift_noise(joints):
    reference = windows(joints)
    shifted = windows(joints, start=20)
    rng = np.random.default_rng(0)
    noisy = [w + rng.normal(scale=0.05, size=w.shape) for w in reference]
    same = motion_metrics(reference, reference, FPS)
    shift = motion_metrics(shifted, reference, FPS)
    noise = motion_metrics(noisy, reference, FPS)
    assert same["fid_k"] == pytest.approx(0.0, abs=1e-6) and same["fid_m"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < shift["fid_k"] < noise["fid_k"]
    assert 0 < shift["fid_m"] < noise["fid_m"]
    assert same["div_k"] == pytest.approx(same["div_k_reference"])
    assert all(isinstance(v, float) for v in noise.values())


def test_geometric_features_see_raised_hands(joints):
    clip = joints[:60].copy()
    base = geometric_features(clip)
    clip[:, 20, 1] = clip[:, 15, 1] + 0.3  # left wrist above the head in every frame
    raised = geometric_features(clip)
    assert raised[0] == 1.0 and base[0] < 1.0


def test_beat_align_score():
    assert beat_align_score(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(1.0)
    assert beat_align_score(np.array([1.0, 2.0]), np.array([1.05, 2.0])) == pytest.approx((np.exp(-0.5) + 1) / 2)
    assert beat_align_score(np.array([1.0]), np.array([])) == 0.0


def test_motion_and_music_beats_of_a_periodic_signal():
    fps = 50
    t = np.arange(0, 6, 1 / fps)
    joints = np.zeros((len(t), 22, 3))
    joints[:, :, 1] = np.sin(2 * np.pi * 1.0 * t)[:, None] * 0.2  # up and down at 1 Hz: pauses twice a second
    beats = motion_beats(joints, fps)
    assert np.allclose(np.diff(beats), 0.5, atol=0.03)
    sr = 22050
    clicks = np.zeros(sr * 6, dtype=np.float32)
    for second in np.arange(0.5, 6, 0.5):  # a click every 0.5 s = 120 bpm
        clicks[int(second * sr) : int(second * sr) + 200] = 1.0
    found = music_beats(clicks, sr)
    assert len(found) >= 6 and np.allclose(np.median(np.diff(found)), 0.5, atol=0.03)
