"""Motion features: loading checks, joint recovery, resampling that keeps the motion (bundled AIST++ clip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mumo_ds.tokenizers.motion_features import (
    bone_lengths,
    denormalize,
    load_features,
    load_stats,
    normalize,
    recover_joints,
    recover_root,
    resample_features,
    resample_features_naive,
)
from mumo_ds.tokenizers.motion_kinematics import features_to_state, state_to_features, to_world
from mumo_ds.tokenizers.motion_layout import FOOT_CONTACT, LOCAL_VEL, ROOT_LIN_VEL, ROT6D
from mumo_ds.tokenizers.motion_resample import interp_rows

MOTION_DIR = Path(__file__).resolve().parents[1] / "data_prep" / "sample_data" / "motion"
CLIP = MOTION_DIR / "gWA_sBM_cAll_d25_mWA0_ch01.npy"  # AIST++ (CC BY 4.0), 60 fps


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return load_features(CLIP)


def root_xz_error(resampled: np.ndarray, original: np.ndarray, dst_fps: float) -> np.ndarray:
    """Per-frame distance (m) between the root XZ recovered from ``resampled`` at ``dst_fps`` and the
    original 60 fps root trajectory interpolated at the new frame times."""
    _, root60 = recover_root(original)  # [T + 1, 3]
    reference = interp_rows(root60[:-1], 60.0, np.arange(resampled.shape[0]) / dst_fps)  # [K, 3]
    _, root = recover_root(resampled)
    return np.linalg.norm((root[:-1] - reference)[:, [0, 2]], axis=-1)


def test_load_features_shape_and_dtype(clip):
    assert clip.shape == (719, 263) and clip.dtype == np.float32


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((10, 262), np.float32), "expected \\[T, 263\\]"),
        (np.zeros((10,), np.float32), "expected \\[T, 263\\]"),
        (np.full((10, 263), np.nan, np.float32), "NaN/inf"),
        (np.pad(np.zeros((9, 263), np.float32), ((0, 1), (0, 0)), constant_values=np.inf), "first at frame 9"),
    ],
)
def test_load_features_refuses_bad_files_naming_them(tmp_path, bad, message):
    path = tmp_path / "bad_clip.npy"
    np.save(path, bad)
    with pytest.raises(ValueError, match=message) as err:
        load_features(path)
    assert "bad_clip.npy" in str(err.value)


def test_normalize_roundtrip(clip):
    mean, std = load_stats(MOTION_DIR / "Mean.npy", MOTION_DIR / "Std.npy")
    x = normalize(clip, mean, std)
    assert abs(float(x[:, 4:67].mean())) < 5.0
    np.testing.assert_allclose(denormalize(x, mean, std), clip, atol=1e-5)


def test_recovered_bone_lengths_are_constant(clip):
    joints = recover_joints(clip)
    assert joints.shape == (719, 22, 3)
    lengths = bone_lengths(joints.astype(np.float64))  # [T, 21]
    assert (lengths.std(0) / lengths.mean(0)).max() < 1e-4
    height = joints[:, 15, 1].mean() - joints[:, 10, 1].mean()  # head above left foot
    assert 1.4 < height < 1.7


def test_velocity_channels_match_recovered_positions(clip):
    """The recovery conventions: local joint velocities rotated back with the heading of their
    start frame equal the differences of the recovered joints (a wrong sign or shift gives mm)."""
    a, _ = recover_root(clip)
    joints = recover_joints(clip).astype(np.float64)
    vel = clip[:-1, LOCAL_VEL].astype(np.float64).reshape(-1, 22, 3)
    np.testing.assert_allclose(to_world(vel, a[:-2, None]), joints[1:] - joints[:-1], atol=1e-5)


def test_same_rate_roundtrip_features_joints_features(clip):
    state = features_to_state(clip)
    again = state_to_features(state)
    np.testing.assert_allclose(again[:, :67], clip[:, :67], atol=1e-6)  # root + positions
    np.testing.assert_allclose(again[:, LOCAL_VEL], clip[:, LOCAL_VEL], atol=1e-6)
    assert np.array_equal(again[:, ROT6D], clip[:, ROT6D])
    same_rate = resample_features(clip, 60, 60, contacts="nearest")  # the whole resampling path at 60 -> 60
    np.testing.assert_allclose(same_rate, clip, atol=1e-5)


@pytest.mark.parametrize("dst_fps, rows", [(50, 599), (20, 239)])
def test_resampling_keeps_root_trajectory(clip, dst_fps, rows):
    resampled = resample_features(clip, 60, dst_fps)
    assert resampled.shape == (rows, 263) and resampled.dtype == np.float32
    assert root_xz_error(resampled, clip, dst_fps).max() < 0.01  # measured ~1e-8 m


@pytest.mark.parametrize("dst_fps", [50, 20])
def test_naive_interpolation_moves_the_root(clip, dst_fps):
    naive = resample_features_naive(clip, 60, dst_fps)
    assert naive.shape == resample_features(clip, 60, dst_fps).shape
    assert root_xz_error(naive, clip, dst_fps).max() > 0.01  # measured 0.127 m (50 fps), 0.258 m (20 fps)


def test_resampled_skeleton_rotations_and_contacts_are_valid(clip):
    resampled = resample_features(clip, 60, 50)
    lengths = bone_lengths(recover_joints(resampled).astype(np.float64))
    assert (lengths.std(0) / lengths.mean(0)).max() < 1e-4
    np.testing.assert_allclose(lengths.mean(0), bone_lengths(recover_joints(clip).astype(np.float64)).mean(0), rtol=1e-4)
    rot = resampled[:, ROT6D].reshape(-1, 21, 2, 3).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(rot, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose((rot[:, :, 0] * rot[:, :, 1]).sum(-1), 0.0, atol=1e-5)
    contacts = resampled[:, FOOT_CONTACT]
    assert set(np.unique(contacts)) <= {0.0, 1.0} and 0.3 < contacts.mean() < 0.95


def test_nearest_contacts_copy_source_rows(clip):
    resampled = resample_features(clip, 60, 20, contacts="nearest")
    assert np.array_equal(resampled[:, FOOT_CONTACT], clip[::3][:239, FOOT_CONTACT])


def test_resampling_twice_equals_once_at_shared_frames(clip):
    """60 -> 20 fps frames are every third 60 fps frame: the root velocities are the 3-frame sums."""
    resampled = resample_features(clip, 60, 20)
    _, root60 = recover_root(clip)
    steps = root60[3::3, [0, 2]] - root60[:-3:3, [0, 2]]  # world XZ displacement over 3 source frames
    a20, _ = recover_root(resampled)
    np.testing.assert_allclose(to_world(resampled[:, ROOT_LIN_VEL].astype(np.float64), a20[1:]), steps[:239], atol=1e-6)


def test_resample_refuses_bad_rates(clip):
    with pytest.raises(ValueError, match="positive"):
        resample_features(clip, 0, 50)
    with pytest.raises(ValueError, match="shorter than one frame"):
        resample_features(clip[:2], 60, 20)
    with pytest.raises(ValueError, match="contacts"):
        resample_features(clip, 60, 50, contacts="median")
