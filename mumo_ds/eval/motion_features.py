"""Clip-level motion features for FID_k / FID_m, from 22-joint world positions [T, 22, 3] (metres, Y up).

Joint order (HumanML3D = the first 22 SMPL joints)::

    0 pelvis      1 l_hip      2 r_hip      3 spine1     4 l_knee     5 r_knee
    6 spine2      7 l_ankle    8 r_ankle    9 spine3    10 l_foot    11 r_foot
   12 neck       13 l_collar  14 r_collar  15 head      16 l_shoulder 17 r_shoulder
   18 l_elbow    19 r_elbow   20 l_wrist   21 r_wrist

Kinetic features (after AIST++ / Bailando): per joint, the mean horizontal kinetic energy
``0.5 (vx^2 + vz^2)``, the mean vertical kinetic energy ``0.5 vy^2`` and the mean energy
expenditure ``|a|`` (acceleration magnitude), velocities in m/s from finite differences at
the clip's frame rate: 22 x 3 = 66 numbers.

Geometric features: body-relative relations in the spirit of Müller et al.'s relational
features (the basis of Bailando's "manual" features), averaged over the clip: the fraction of
frames in which each boolean relation holds (hands above head, hands in front of the body,
feet raised, knees/elbows bent, hands apart, feet apart, ...), and the mean and standard
deviation of a few continuous relations. They are not a bit-for-bit port of Bailando's 32
features; numbers are comparable between runs of this code, not with published tables.
"""

from __future__ import annotations

import numpy as np

PELVIS, L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 0, 1, 2, 4, 5, 7, 8
SPINE3, L_FOOT, R_FOOT, NECK, HEAD = 9, 10, 11, 12, 15
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 16, 17, 18, 19, 20, 21
NUM_JOINTS = 22


def _check(joints: np.ndarray) -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or joints.shape[0] < 3:
        raise ValueError(f"joints: expected [T >= 3, 22, 3], got {list(joints.shape)}")
    if not np.isfinite(joints).all():
        raise ValueError("joints contain NaN or inf")
    return joints


def kinetic_features(joints: np.ndarray, fps: float) -> np.ndarray:
    """[T, 22, 3] -> [66]: per joint (horizontal KE, vertical KE, energy expenditure)."""
    joints = _check(joints)
    velocity = np.diff(joints, axis=0) * fps  # [T-1, 22, 3] m/s
    acceleration = np.diff(velocity, axis=0) * fps  # [T-2, 22, 3] m/s^2
    horizontal = 0.5 * (velocity[..., 0] ** 2 + velocity[..., 2] ** 2).mean(axis=0)
    vertical = 0.5 * (velocity[..., 1] ** 2).mean(axis=0)
    expenditure = np.linalg.norm(acceleration, axis=-1).mean(axis=0)
    return np.stack([horizontal, vertical, expenditure], axis=1).reshape(-1)  # [22, 3] -> [66]


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Angle at b (radians) of the segments b->a and b->c, per frame."""
    u, v = a - b, c - b
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-9)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def geometric_features(joints: np.ndarray) -> np.ndarray:
    """[T, 22, 3] -> [30]: fractions of frames for 18 boolean relations, mean/std of 6 continuous ones."""
    j = _check(joints)
    hip_width = np.linalg.norm(j[:, L_HIP] - j[:, R_HIP], axis=-1).mean() + 1e-9  # body scale
    up = j[..., 1]
    # facing direction in the horizontal plane: perpendicular to the hip line, pointing forward
    across = j[:, L_HIP] - j[:, R_HIP]
    forward = np.stack([across[:, 2], np.zeros(len(j)), -across[:, 0]], axis=-1)
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True) + 1e-9
    ahead = lambda joint: ((j[:, joint] - j[:, PELVIS]) * forward).sum(-1)  # noqa: E731
    knee_l = _angle(j[:, L_HIP], j[:, L_KNEE], j[:, L_ANKLE])
    knee_r = _angle(j[:, R_HIP], j[:, R_KNEE], j[:, R_ANKLE])
    elbow_l = _angle(j[:, L_SHOULDER], j[:, L_ELBOW], j[:, L_WRIST])
    elbow_r = _angle(j[:, R_SHOULDER], j[:, R_ELBOW], j[:, R_WRIST])
    hands = np.linalg.norm(j[:, L_WRIST] - j[:, R_WRIST], axis=-1) / hip_width
    feet = np.linalg.norm(j[:, L_ANKLE] - j[:, R_ANKLE], axis=-1) / hip_width
    floor = np.minimum(up[:, L_FOOT], up[:, R_FOOT]).min()
    relations = [
        up[:, L_WRIST] > up[:, HEAD], up[:, R_WRIST] > up[:, HEAD],
        up[:, L_WRIST] > up[:, NECK], up[:, R_WRIST] > up[:, NECK],
        up[:, L_WRIST] < up[:, PELVIS], up[:, R_WRIST] < up[:, PELVIS],
        ahead(L_WRIST) > hip_width, ahead(R_WRIST) > hip_width,
        ahead(L_ANKLE) > hip_width, ahead(R_ANKLE) > hip_width,
        up[:, L_FOOT] - floor > 0.5 * hip_width, up[:, R_FOOT] - floor > 0.5 * hip_width,
        knee_l < 2.6, knee_r < 2.6, elbow_l < 2.0, elbow_r < 2.0,
        hands > 4.0, feet > 2.5,
    ]
    continuous = [
        hands, feet, up[:, HEAD] - up[:, PELVIS], (knee_l + knee_r) / 2, (elbow_l + elbow_r) / 2,
        _angle(j[:, HEAD], j[:, PELVIS], j[:, PELVIS] + np.array([0.0, 1.0, 0.0])),  # torso lean
    ]
    booleans = np.array([r.mean() for r in relations])
    stats = np.array([f(c) for c in continuous for f in (np.mean, np.std)])
    return np.concatenate([booleans, stats])
