"""Turn one raw webdataset sample (member bytes) into validated codes and captions."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np

from .format import MODALITIES
from .validate import CodesError, check_codes, check_pair


@dataclasses.dataclass
class Sample:
    """One decoded sample; ``codes[m]`` is int16 [num_codebooks, T] for each kept modality m."""

    key: str
    codes: dict[str, np.ndarray]
    captions: dict[str, str]

    @property
    def kind(self) -> tuple[str, ...]:
        """The set of streams, in MODALITIES order: ("music", "motion"), ("music",) or ("motion",)."""
        return tuple(m for m in MODALITIES if m in self.codes)

    @property
    def num_frames(self) -> int:
        return next(iter(self.codes.values())).shape[1]


def read_npy(key: str, field: str, data: bytes) -> np.ndarray:
    """Parse .npy bytes without pickle; unreadable bytes raise CodesError("corrupt")."""
    try:
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError, SyntaxError) as exn:
        # numpy reports a bad magic/header/truncated body as ValueError, a short read as EOFError.
        raise CodesError("corrupt", f"sample {key!r}, {field}: unreadable .npy ({exn})") from exn


def read_meta(key: str, data: bytes | None) -> dict:
    """Parse the json member; a missing or unreadable one raises CodesError("corrupt")."""
    if data is None:
        raise CodesError("corrupt", f"sample {key!r}: no json member (captions/metadata)")
    try:
        meta = json.loads(data.decode("utf-8"))
    except ValueError as exn:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CodesError("corrupt", f"sample {key!r}, json: unreadable ({exn})") from exn
    captions = meta.get("captions", {}) if isinstance(meta, dict) else None
    if not isinstance(captions, dict):
        raise CodesError("corrupt", f"sample {key!r}, json.captions: expected a dict, got {captions!r}")
    return meta


def decode_sample(
    raw: dict, *, streams: tuple[str, ...], num_codebooks: int, codebook_size: int
) -> Sample | None:
    """Decode ``raw`` ({"__key__", "json", "music.npy"?, "motion.npy"?} of bytes).

    Modalities not in ``streams`` are dropped before decoding. Returns None when no
    selected modality is present (the sample is filtered, not bad). Raises
    CodesError with reason "corrupt", "missing_codes", "dtype", "shape", "range"
    or "length_mismatch".
    """
    key = raw["__key__"]
    if not any(f"{m}.npy" in raw for m in MODALITIES):
        raise CodesError("missing_codes", f"sample {key!r}: neither music.npy nor motion.npy")
    kept = [m for m in streams if f"{m}.npy" in raw]
    if not kept:
        return None
    meta = read_meta(key, raw.get("json"))
    codes = {}
    for m in kept:
        field = f"{m}.npy"
        arr = read_npy(key, field, raw[field])
        codes[m] = check_codes(key, field, arr, num_codebooks=num_codebooks, codebook_size=codebook_size)
    check_pair(key, codes.get("music"), codes.get("motion"))
    captions = {m: str(meta["captions"].get(m, "")) for m in codes}
    return Sample(key=key, codes=dict(sorted(codes.items(), key=lambda kv: MODALITIES.index(kv[0]))), captions=captions)
