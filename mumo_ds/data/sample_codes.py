"""Placeholder tokenizers for the bundled sample data, until the real ones exist.

- Motion ("sample-lsh-v1"): normalise HumanML3D 263-d features with Mean/Std,
  resample to 50 frames/s by linear interpolation of the *normalised* features,
  then per codebook a fixed seeded random projection 263 -> 11 and its sign bits
  form an 11-bit code 0..2047 (locality-sensitive hashing: similar poses share codes).
  PLACEHOLDER: interpolating velocity channels without rescaling is the known
  resampling bug (notes/motion_features.md); the real resampler and the motion
  VQ-VAE are later issues.
- Music ("synthetic-v1"): deterministic, learnable codes from a 120 bpm beat clock
  and the motion codes of the same frame (so the two streams are correlated).
"""

from __future__ import annotations

import numpy as np

MOTION_TOKENIZER = {"name": "sample-lsh-v1", "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}
MUSIC_CODEC = {"name": "synthetic-v1", "sample_rate": 32000, "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}
LSH_BITS = 11  # 2**11 == 2048 codes
LSH_SEED = 1234
BEAT_FRAMES = 25  # 120 bpm at 50 frames/s
BEATS_PER_BAR = 4


def resample_linear(x: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """[T_src, D] -> [T_dst, D] by linear interpolation at times 0, 1/dst_fps, ... <= (T_src-1)/src_fps."""
    duration = (x.shape[0] - 1) / src_fps
    t_dst = np.arange(int(np.floor(duration * dst_fps + 1e-9)) + 1) / dst_fps  # [T_dst] seconds
    pos = t_dst * src_fps  # fractional source frame
    lo = np.minimum(np.floor(pos).astype(np.int64), x.shape[0] - 1)
    hi = np.minimum(lo + 1, x.shape[0] - 1)
    w = (pos - lo)[:, None]
    return (1 - w) * x[lo] + w * x[hi]  # [T_dst, D]


def lsh_codes(features: np.ndarray, *, num_codebooks: int = 4, seed: int = LSH_SEED) -> np.ndarray:
    """[T, D] normalised features -> int16 [num_codebooks, T] codes in 0..2047 (sign-bit LSH)."""
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((num_codebooks, features.shape[1], LSH_BITS))  # [K, D, 11]
    bits = np.einsum("td,kdb->ktb", features, proj) > 0  # [K, T, 11]
    weights = 1 << np.arange(LSH_BITS)  # [11]
    return (bits * weights).sum(-1).astype(np.int16)  # [K, T]


def motion_to_codes(features: np.ndarray, mean: np.ndarray, std: np.ndarray, src_fps: float) -> np.ndarray:
    """HumanML3D features [T_src, 263] at src_fps -> int16 [4, T_50] "sample-lsh-v1" codes."""
    normalised = (features - mean) / std  # [T_src, 263]
    return lsh_codes(resample_linear(normalised, src_fps, MOTION_TOKENIZER["frame_rate"]))


def synthetic_music_codes(motion_codes: np.ndarray) -> np.ndarray:
    """int16 [4, T] "synthetic-v1" music codes for the clip whose motion codes are given.

    codebook 0: position in the bar (beat, frame in beat); 1: motion codebook 0 mixed with
    the beat; 2: motion codebook 1 folded; 3: bar counter. Frame t is the clip's frame t.
    """
    t = np.arange(motion_codes.shape[1])  # [T]
    frame_in_beat, beat = t % BEAT_FRAMES, t // BEAT_FRAMES
    beat_in_bar, bar = beat % BEATS_PER_BAR, beat // BEATS_PER_BAR
    cb0 = beat_in_bar * BEAT_FRAMES + frame_in_beat
    cb1 = (motion_codes[0].astype(np.int64) * 7 + frame_in_beat) % 2048
    cb2 = (motion_codes[1].astype(np.int64) // 2 + 1024 * (frame_in_beat == 0)) % 2048
    cb3 = 1000 + bar % 8
    return np.stack([cb0, cb1, cb2, cb3]).astype(np.int16)  # [4, T]
