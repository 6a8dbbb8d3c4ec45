"""From HumanML3D features to world-space motion and back (22 joints, metres, Y up).

Conventions of the original recovery (``notes/motion_features.md``):

- Heading: ``a[0] = 0``, ``a[t] = cumsum(feature0)[t-1]``; the heading quaternion of frame t is
  ``(cos a, 0, sin a, 0)``, a rotation by ``2a`` about Y that takes world vectors into the
  heading frame (:func:`to_heading`); its inverse is :func:`to_world`.
- Root XZ: ``root[0] = 0``, ``root[t] = root[t-1] + to_world(velocity row t-1, a[t])``.
- Joints: ``ric`` rotated back with the heading of their own frame, plus the root XZ (Y is absolute).

A :class:`MotionState` holds the absolute quantities (heading, world joint positions) that
resampling interpolates; :func:`state_to_features` re-derives the per-frame features from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mumo_ds.tokenizers.motion_layout import (
    BONES,
    CONTACT_FPS,
    CONTACT_SQ_DISP,
    FEATURE_DIM,
    FOOT_CONTACT,
    FOOT_JOINTS,
    LOCAL_VEL,
    NUM_JOINTS,
    RIC,
    ROOT_HEIGHT,
    ROOT_LIN_VEL,
    ROOT_ROT_VEL,
    ROT6D,
)


def _rotate_y(v: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate ``v [..., 2 or 3]`` (XZ or XYZ) by ``theta`` (broadcast over ``v[..., 0]``) as ``qrot((cos θ/2, 0, sin θ/2, 0), v)``."""
    c, s = np.cos(theta), np.sin(theta)
    out = v.copy()
    xi, zi = (0, 1) if v.shape[-1] == 2 else (0, 2)
    x, z = v[..., xi], v[..., zi]
    out[..., xi] = x * c + z * s
    out[..., zi] = z * c - x * s
    return out


def to_heading(v: np.ndarray, half_yaw: np.ndarray) -> np.ndarray:
    """World vectors -> the heading frame whose quaternion is ``(cos a, 0, sin a, 0)``, ``a = half_yaw``."""
    return _rotate_y(v, 2.0 * half_yaw)


def to_world(v: np.ndarray, half_yaw: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_heading`."""
    return _rotate_y(v, -2.0 * half_yaw)


def heading_angles(feats: np.ndarray) -> np.ndarray:
    """Features [T, 263] -> half-yaw ``a`` [T + 1] (float64): a[0] = 0, a[t] = sum of feature 0 over rows < t.

    ``a[T]`` is the heading of the frame after the last row, reached by the last row's velocity.
    """
    f0 = feats[:, ROOT_ROT_VEL][:, 0].astype(np.float64)  # [T]
    return np.concatenate([[0.0], np.cumsum(f0)])  # [T + 1]


def recover_root(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features [T, 263] -> (half-yaw [T + 1], root positions [T + 1, 3]), float64.

    Frame T (one past the last row) is included so velocities of the last row are usable;
    its height comes from the root's local velocity (the feature rows carry heights for 0..T-1).
    """
    a = heading_angles(feats)  # [T + 1]
    vel = feats[:, ROOT_LIN_VEL].astype(np.float64)  # [T, 2] heading frame of the row's end frame
    steps = to_world(vel, a[1:])  # [T, 2] world XZ
    root = np.zeros((feats.shape[0] + 1, 3))
    root[1:, [0, 2]] = np.cumsum(steps, axis=0)  # [T + 1, XZ]
    root[:-1, 1] = feats[:, ROOT_HEIGHT][:, 0]
    root[-1, 1] = root[-2, 1] + feats[-1, LOCAL_VEL][1]  # joint 0's Y velocity (Y is not rotated)
    return a, root


def recover_joints(feats: np.ndarray) -> np.ndarray:
    """Features [T, 263] -> world joint positions [T, 22, 3] float32 (metres, Y up).

    Root from the integrated heading and velocity; joints 1..21 are ``ric`` rotated back into the
    world with the heading of their own frame, plus the root XZ (their Y is already absolute).
    """
    a, root = recover_root(feats)
    return _joints_from(feats, a[:-1], root[:-1]).astype(np.float32)


def _joints_from(feats: np.ndarray, a: np.ndarray, root: np.ndarray) -> np.ndarray:
    """[T, 263], half-yaw [T], root [T, 3] -> [T, 22, 3] float64."""
    ric = feats[:, RIC].astype(np.float64).reshape(-1, NUM_JOINTS - 1, 3)  # [T, 21, 3]
    world = to_world(ric, a[:, None])  # [T, 21, 3]
    world[..., 0] += root[:, None, 0]
    world[..., 2] += root[:, None, 2]
    return np.concatenate([root[:, None, :], world], axis=1)  # [T, 22, 3]


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """Joint positions [T, 22, 3] -> bone lengths [T, 21] along the kinematic chains."""
    parent, child = np.array(BONES).T
    return np.linalg.norm(joints[:, child] - joints[:, parent], axis=-1)


@dataclass
class MotionState:
    """Absolute motion: what resampling interpolates.

    Attributes:
        half_yaw: [N] heading half-angles (unwrapped), N = T + 1 frames.
        joints: [N, 22, 3] world joint positions; frame T is one past the last feature row.
        rot6d: [T, 126] local joint rotations (6D) of frames 0..T-1.
        contacts: [T, 4] foot contacts of frames 0..T-1.
    """

    half_yaw: np.ndarray
    joints: np.ndarray
    rot6d: np.ndarray
    contacts: np.ndarray


def features_to_state(feats: np.ndarray) -> MotionState:
    """Features [T, 263] -> :class:`MotionState` with N = T + 1 frames (float64).

    Frames 0..T-1 as :func:`recover_joints`; frame T adds the last row's joint velocities
    (heading frame of frame T-1) to frame T-1, with the root XZ from the root velocity.
    """
    a, root = recover_root(feats)  # [T + 1], [T + 1, 3]
    joints = _joints_from(feats, a[:-1], root[:-1])  # [T, 22, 3]
    last_vel = feats[-1, LOCAL_VEL].astype(np.float64).reshape(NUM_JOINTS, 3)  # [22, 3]
    last = joints[-1] + to_world(last_vel, a[-2])  # [22, 3]
    last[0] = root[-1]
    joints = np.concatenate([joints, last[None]], axis=0)  # [T + 1, 22, 3]
    return MotionState(
        half_yaw=a,
        joints=joints,
        rot6d=feats[:, ROT6D].astype(np.float64),
        contacts=feats[:, FOOT_CONTACT].astype(np.float64),
    )


def detect_contacts(joints: np.ndarray, fps: float) -> np.ndarray:
    """Joints [T + 1, 22, 3] at ``fps`` -> foot contacts [T, 4] (1.0 / 0.0).

    HumanML3D's rule (squared displacement per frame < 0.002 m^2 at 20 fps) as a speed threshold,
    so the same motion gives the same contacts at any frame rate (speed < 0.894 m/s).
    """
    disp = joints[1:, list(FOOT_JOINTS)] - joints[:-1, list(FOOT_JOINTS)]  # [T, 4, 3]
    threshold = CONTACT_SQ_DISP * (CONTACT_FPS / fps) ** 2
    return ((disp**2).sum(-1) < threshold).astype(np.float64)  # [T, 4]


def state_to_features(state: MotionState) -> np.ndarray:
    """:class:`MotionState` with N = T + 1 frames -> features [T, 263] float32 (inverse of :func:`features_to_state`)."""
    a, j = state.half_yaw, state.joints  # [T + 1], [T + 1, 22, 3]
    t = j.shape[0] - 1
    out = np.zeros((t, FEATURE_DIM))
    out[:, ROOT_ROT_VEL] = (a[1:] - a[:-1])[:, None]
    out[:, ROOT_LIN_VEL] = to_heading(j[1:, 0, [0, 2]] - j[:-1, 0, [0, 2]], a[1:])  # end frame's heading
    out[:, ROOT_HEIGHT] = j[:-1, 0, 1:2]
    rel = j[:-1, 1:] - j[:-1, :1] * np.array([1.0, 0.0, 1.0])  # [T, 21, 3] XZ relative, Y absolute
    out[:, RIC] = to_heading(rel, a[:-1, None]).reshape(t, -1)
    out[:, ROT6D] = state.rot6d
    out[:, LOCAL_VEL] = to_heading(j[1:] - j[:-1], a[:-1, None]).reshape(t, -1)  # start frame's heading
    out[:, FOOT_CONTACT] = state.contacts
    return out.astype(np.float32)
