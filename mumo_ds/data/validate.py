"""Checks on one sample's codes, shared by the writer (raises) and the loader (skips and counts).

Every failure is a ``CodesError`` whose ``reason`` is one of the loader's skip
reasons: "dtype", "shape", "range", "length_mismatch", "key".
"""

from __future__ import annotations

import numpy as np


class CodesError(ValueError):
    """A sample's codes break the format; ``reason`` is a short skip-reason label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_key(key: object) -> str:
    """A key is a non-empty str without '.', '/' or a leading '__' (tar member = key.ext)."""
    if not isinstance(key, str) or not key or "." in key or "/" in key or key.startswith("__"):
        raise CodesError(
            "key",
            f"sample key {key!r}: keys must be non-empty strings without '.' or '/' and must not "
            "start with '__' (webdataset splits member names at the first '.'); "
            "replace them, e.g. key.replace('.', '_')",
        )
    return key


def check_codes(key: str, field: str, codes: object, *, num_codebooks: int, codebook_size: int) -> np.ndarray:
    """Validate one stream's codes and return them as int16 [num_codebooks, T].

    Raises CodesError naming ``key`` and ``field`` (e.g. "music.npy") when the
    dtype is not an integer type, the shape is not [num_codebooks, T>0], or a
    value lies outside 0..codebook_size-1.
    """
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu":
        raise CodesError(
            "dtype",
            f"sample {key!r}, {field}: dtype {arr.dtype} is not an integer type; codes must be "
            "integer ids (store them as int16, e.g. codes.astype(np.int16))",
        )
    if arr.ndim != 2 or arr.shape[0] != num_codebooks or arr.shape[1] == 0:
        raise CodesError(
            "shape",
            f"sample {key!r}, {field}: shape {tuple(arr.shape)}, expected [{num_codebooks}, T] with T > 0 "
            "(codebooks first, then frames; transpose a [T, K] array)",
        )
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= codebook_size:
        raise CodesError(
            "range",
            f"sample {key!r}, {field}: values span {lo}..{hi}, expected 0..{codebook_size - 1}; "
            f"check the tokenizer's codebook_size (special ids such as {codebook_size} are added by the model, "
            "never stored)",
        )
    return arr.astype(np.int16)


def check_pair(key: str, music: np.ndarray | None, motion: np.ndarray | None) -> None:
    """A paired sample's streams share one timeline, so they must have the same T."""
    if music is not None and motion is not None and music.shape[1] != motion.shape[1]:
        raise CodesError(
            "length_mismatch",
            f"sample {key!r}: music.npy has T={music.shape[1]} frames, motion.npy has T={motion.shape[1]}; "
            "paired streams share one 50 frames/s timeline: trim both to the shorter length",
        )


def check_captions(key: str, captions: object, streams) -> dict:
    """``json.captions`` maps each present stream to a caption string (the loader gives a stream without one the
    empty caption ""); a caption of an absent stream, or one that is not a string, is an error naming the sample."""
    if not isinstance(captions, dict) or not all(k in streams and isinstance(v, str) for k, v in captions.items()):
        raise ValueError(
            f"sample {key!r}, json.captions: {captions!r}; expected a dict mapping each present "
            f"modality ({', '.join(streams)}) to a caption string"
        )
    return captions
