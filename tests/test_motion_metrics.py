"""Motion metrics on the bundled AIST++ clip: itself < time-shifted copy < noise; beats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mumo_ds.eval.motion_features import JOINTS, RELATIONS, geometric_features, kinetic_features
from mumo_ds.eval.motion_metrics import beat_align_score, motion_beats, motion_metrics, music_beats
from mumo_ds.tokenizers.motion_features import load_features, recover_joints

CLIP = Path(__file__).resolve().parents[1] / "data_prep/sample_data/motion/gWA_sBM_cAll_d25_mWA0_ch01.npy"
FPS = 60


@pytest.fixture(scope="module")
def joints():
    return recover_joints(load_features(CLIP))  # [719, 22, 3]


def windows(joints, start=0, length=120, stride=40):
    return [joints[s : s + length] for s in range(start, len(joints) - length + 1, stride)]


def kinetic_by_loops(p, fps, reference_acceleration=True):
    """The AIST++ evaluation's definition written frame by frame, window by window (p: [T, J, 3])."""
    p = p - p[:1, :1]
    dt, n = 1 / fps, len(p)
    out = np.zeros((p.shape[1], 3))
    for i in range(1, n):
        valid = [j for j in range(-2, 3) if i + j - 1 >= 0 and i + j < n]
        v = sum(p[i + j] - p[i + j - 1] for j in valid) / (len(valid) * dt)
        out[:, 0] += (v[:, 0] ** 2 + v[:, 2] ** 2) / (n - 1)
        out[:, 1] += v[:, 1] ** 2 / (n - 1)
        valid = [j for j in range(-2, 3) if i + j - 1 >= 0 and i + j + 1 < n]
        acc = 0
        for j in valid:
            s = i + j
            earlier = p[s] - p[s - 1] / dt if reference_acceleration else (p[s] - p[s - 1]) / dt
            acc = acc + ((p[s + 1] - p[s]) / dt - earlier) / dt
        out[:, 2] += np.linalg.norm(acc / len(valid), axis=-1) / (n - 1)
    return out.reshape(-1)


def test_kinetic_features_match_the_reference_definition(joints):
    clip = joints[100:140].astype(np.float64)
    for reference_acceleration in (True, False):
        fast = kinetic_features(clip, 60, reference_acceleration)
        assert np.allclose(fast, kinetic_by_loops(clip, 60, reference_acceleration), rtol=1e-9, atol=1e-9)
    t = np.arange(10, dtype=np.float64)
    moving = np.zeros((10, 22, 3))
    moving[:, :, 0] = t[:, None] * 0.1  # every joint at 0.1 m/frame = 6 m/s along x
    k = kinetic_features(moving, fps=60, reference_acceleration=False).reshape(22, 3)
    assert np.allclose(k[:, 0], 6.0**2) and np.allclose(k[:, 1:], 0.0)  # |v_xz|^2, no vertical, no acceleration
    assert kinetic_features(moving, 60).shape == (66,)


def geometric_by_loops(p):
    """Each relation of RELATIONS evaluated frame by frame with scalar vectors (the reference's formulas)."""
    p = p - p[:1, :1]
    out = np.zeros(len(RELATIONS))
    for t in range(1, len(p)):
        def at(name, frame=t):
            fixed = {"zero": [0, 0, 0], "y_unit": [0, 1, 0], "minus_y_unit": [0, -1, 0], "y_min": [0, p[t, :, 1].min(), 0]}
            return np.array(fixed[name], float) if name in fixed else p[frame, JOINTS[name]]
        for r, (kind, names, limit) in enumerate(RELATIONS):
            a, b, c, d = (list(names) + [None] * 4)[:4]
            if kind == "fast":
                holds = np.linalg.norm(at(a) - at(a, t - 1)) * 120 > limit
            elif kind == "angle":
                u, v = at(b) - at(a), at(d) - at(c)
                angle = np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))
                holds = limit[0] < angle < limit[1]
            else:
                mover = {"move": c, "nmove": d}.get(kind)
                direction = {"move": at(b) - at(a), "nplane": at(b) - at(a)}.get(kind, np.cross(at(c) - at(a), at(b) - at(a)))
                if mover:
                    vector = (at(mover) - at(a) - (at(mover, t - 1) - at(a, t - 1))) * 120
                else:
                    vector = at(d) - (at(c) if kind == "nplane" else at(a))
                holds = vector @ direction / np.linalg.norm(direction) > limit
            out[r] += holds / (len(p) - 1)
    return out


def test_geometric_features_match_a_frame_by_frame_evaluation(joints):
    clip = joints[200:260].astype(np.float64)
    assert np.allclose(geometric_features(clip), geometric_by_loops(clip), rtol=0, atol=1e-12)


def test_geometric_relations_by_hand(joints):
    clip = joints[:60].copy()
    assert geometric_features(clip).shape == (32,)
    still = np.repeat(clip[:1], 30, axis=0)
    assert geometric_features(still)[[0, 1, 4, 5, 9, 10, 11, 12, 13, 21, 22, 31]].sum() == 0  # nothing moves
    base = geometric_features(clip)
    raised = clip.copy()
    raised[:, 20, 1] = raised[:, 15, 1] + 0.3  # left wrist above the head in every frame
    raised = geometric_features(raised)
    assert raised[3] == 1.0 and base[3] < 1.0  # lwrist more than 0.2 humerus above the neck, along the spine
    assert raised[30] == 0.0  # ... and so never near the floor
    drifting = still + np.arange(30)[:, None, None] * np.array([0.01, 0.0, 0.0])  # 1 cm/frame = 1.2 m/s at 1/120 s
    assert geometric_features(drifting)[31] == 1.0  # root fast: 1.2 m/s > 2.3 humerus lengths/s


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
