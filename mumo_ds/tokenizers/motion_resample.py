"""Resampling HumanML3D features to another frame rate while keeping the motion itself.

:func:`resample_features` (the method to use):

1. integrate the features at the source rate into absolute quantities (:class:`MotionState`):
   heading angle and world positions of all 22 joints, for frames 0..T (frame T is one past the
   last row, reached by the last row's velocities);
2. interpolate those linearly at the new frame times ``k / dst_fps``;
3. re-derive every per-frame channel at the new rate (:func:`state_to_features`): root angular
   and linear velocity, root height, root-relative positions, joint velocities.

Linear interpolation of positions shortens bones between frames (chords of arcs; up to 0.8 % at
60 -> 50 fps on the bundled clip), so each interpolated skeleton is rebuilt along the kinematic
chains from the root: bone directions kept, lengths set to the source's mean bone lengths. The
root is untouched, so the root trajectory stays exact.

Rotations (67:193) are interpolated linearly in 6D at the new frame times and re-orthonormalised
(Gram-Schmidt, as the 6D -> matrix map does), so every frame holds a valid rotation. Foot
contacts are re-detected from the interpolated foot speeds with HumanML3D's threshold expressed
as a speed (``contacts="threshold"``, the default) or copied from the nearest source row
(``contacts="nearest"``, which keeps the source labels and their frame-rate-dependent threshold).

The output has ``K = floor(T * dst_fps / src_fps)`` rows: row k covers times ``[k, k + 1] / dst_fps``,
all inside the source's ``[0, T / src_fps]``. Recovering it at ``dst_fps`` gives the source trajectory
at the new frame times (exact up to float rounding; tests check < 1 cm on the bundled clip).

:func:`resample_features_naive` is the known bug of the reference project (interpolate every
channel, velocities unscaled), kept so tests can show that it moves the root by decimetres.
"""

from __future__ import annotations

import numpy as np

from mumo_ds.tokenizers.motion_kinematics import (
    MotionState,
    bone_lengths,
    detect_contacts,
    features_to_state,
    state_to_features,
)

from mumo_ds.tokenizers.motion_layout import BONES

CONTACT_MODES = ("threshold", "nearest")


def interp_rows(x: np.ndarray, src_fps: float, times: np.ndarray) -> np.ndarray:
    """Rows ``x [N, ...]`` at frame times ``i / src_fps`` -> ``[len(times), ...]`` linearly interpolated (clamped at the ends)."""
    pos = np.clip(np.asarray(times, dtype=np.float64) * src_fps, 0.0, x.shape[0] - 1)  # fractional source row
    lo = np.minimum(np.floor(pos).astype(np.int64), x.shape[0] - 1)
    hi = np.minimum(lo + 1, x.shape[0] - 1)
    w = (pos - lo).reshape((-1,) + (1,) * (x.ndim - 1))
    return (1.0 - w) * x[lo] + w * x[hi]


def orthonormalize_6d(rot6d: np.ndarray) -> np.ndarray:
    """6D rotations ``[..., 6k]`` (pairs of columns a, b) -> the nearest valid ones by Gram-Schmidt."""
    r = rot6d.reshape(rot6d.shape[:-1] + (-1, 6))  # [..., k, 6]
    a, b = r[..., :3], r[..., 3:]
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b - (a * b).sum(-1, keepdims=True) * a
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.concatenate([a, b], axis=-1).reshape(rot6d.shape)


def restore_bone_lengths(joints: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Joints [N, 22, 3] -> the same bone directions with lengths ``lengths [21]``, rebuilt from the root out."""
    out = joints.copy()
    for (parent, child), length in zip(BONES, lengths):  # BONES runs parent-first along each chain
        d = joints[:, child] - joints[:, parent]  # [N, 3]
        out[:, child] = out[:, parent] + d * (length / np.linalg.norm(d, axis=-1, keepdims=True))
    return out


def _check_rates(src_fps: float, dst_fps: float, num_rows: int) -> int:
    if not (src_fps > 0 and dst_fps > 0):
        raise ValueError(f"resample_features: frame rates must be positive, got src_fps={src_fps}, dst_fps={dst_fps}")
    k = int(np.floor(num_rows * dst_fps / src_fps + 1e-9))
    if k < 1:
        raise ValueError(
            f"resample_features: {num_rows} rows at {src_fps} fps are shorter than one frame at {dst_fps} fps; "
            "pass a longer clip"
        )
    return k


def resample_features(feats: np.ndarray, src_fps: float, dst_fps: float, *, contacts: str = "threshold") -> np.ndarray:
    """Features [T, 263] at ``src_fps`` -> [K, 263] float32 at ``dst_fps``, K = floor(T * dst / src).

    See the module docstring for the method. ``src_fps == dst_fps`` re-derives the same features
    (up to float rounding, and contacts re-detected unless ``contacts="nearest"``).
    """
    if contacts not in CONTACT_MODES:
        raise ValueError(f"resample_features: contacts={contacts!r}; use one of {CONTACT_MODES}")
    k = _check_rates(src_fps, dst_fps, feats.shape[0])
    state = features_to_state(feats)  # N = T + 1 frames at src_fps
    frame_times = np.arange(k + 1) / dst_fps  # [K + 1] new frames, the last one ends row K-1
    row_times = frame_times[:-1]  # [K]
    lengths = bone_lengths(state.joints).mean(axis=0)  # [21]
    joints = restore_bone_lengths(interp_rows(state.joints, src_fps, frame_times), lengths)  # [K + 1, 22, 3]
    new = MotionState(
        half_yaw=interp_rows(state.half_yaw, src_fps, frame_times),  # [K + 1]
        joints=joints,
        rot6d=orthonormalize_6d(interp_rows(state.rot6d, src_fps, row_times)),  # [K, 126]
        contacts=(
            detect_contacts(joints, dst_fps)
            if contacts == "threshold"
            else state.contacts[np.minimum(np.round(row_times * src_fps).astype(np.int64), feats.shape[0] - 1)]
        ),  # [K, 4]
    )
    return state_to_features(new)


def resample_features_naive(feats: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """THE KNOWN BUG, for tests only: interpolate every channel, velocities left per source frame.

    [T, 263] -> [K, 263] at the same row times as :func:`resample_features`.
    """
    k = _check_rates(src_fps, dst_fps, feats.shape[0])
    return interp_rows(feats.astype(np.float64), src_fps, np.arange(k) / dst_fps).astype(np.float32)
