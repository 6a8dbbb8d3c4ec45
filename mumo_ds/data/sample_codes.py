"""Tokenizers of the bundled sample data that need no weights.

The sample clip has no audio, and no trained motion VQ-VAE or EnCodec weights ship with the
repository (there is no model hub here), so the sample shards are tokenized by:

- Motion ("sample-lsh-v2"): resample the HumanML3D 263-d features to 50 frames/s keeping the
  motion (:func:`mumo_ds.tokenizers.motion_features.resample_features`), normalise with
  Mean/Std, then per codebook a fixed seeded random projection 263 -> 11 whose sign bits form
  an 11-bit code 0..2047 (locality-sensitive hashing: similar poses share codes). It has no
  decoder; real data uses the motion VQ-VAE (``data_prep.train_motion_vqvae``).
- Music ("synthetic-v1"): deterministic, learnable codes from a 120 bpm beat clock
  and the motion codes of the same frame (so the two streams are correlated).

The shard format, loader and training are the real ones; only the codes are stand-ins.
"""

from __future__ import annotations

import numpy as np

from mumo_ds.tokenizers.motion_features import resample_features

MOTION_TOKENIZER = {"name": "sample-lsh-v2", "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}
MUSIC_CODEC = {"name": "synthetic-v1", "sample_rate": 32000, "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}
LSH_BITS = 11  # 2**11 == 2048 codes
LSH_SEED = 1234
BEAT_FRAMES = 25  # 120 bpm at 50 frames/s
BEATS_PER_BAR = 4


def lsh_codes(features: np.ndarray, *, num_codebooks: int = 4, seed: int = LSH_SEED) -> np.ndarray:
    """[T, D] normalised features -> int16 [num_codebooks, T] codes in 0..2047 (sign-bit LSH)."""
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((num_codebooks, features.shape[1], LSH_BITS))  # [K, D, 11]
    bits = np.einsum("td,kdb->ktb", features, proj) > 0  # [K, T, 11]
    weights = 1 << np.arange(LSH_BITS)  # [11]
    return (bits * weights).sum(-1).astype(np.int16)  # [K, T]


def motion_to_codes(features: np.ndarray, mean: np.ndarray, std: np.ndarray, src_fps: float) -> np.ndarray:
    """HumanML3D features [T_src, 263] at src_fps -> int16 [4, T_50] "sample-lsh-v2" codes."""
    resampled = resample_features(features, src_fps, MOTION_TOKENIZER["frame_rate"])  # [T_50, 263]
    return lsh_codes((resampled - mean) / std)


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
