"""Read audio files for the music tokenizer: decode, check, downmix to mono, resample.

    wav, sr = load_audio("song.flac")          # float32 [C, N], native rate
    mono = to_mono(wav)                        # float32 [N]
    mono = resample(mono, sr, 32000)           # float32 [N * 32000 / sr] (scipy.signal.resample_poly)

Every failure is an ``AudioError`` whose ``reason`` is a short label used in
``rejects.jsonl`` ("missing_file", "unsupported_format", "unreadable_audio",
"truncated_audio", "empty_audio", "bad_audio_values", "silent_audio") and whose
message names the file, what is wrong and what to do.

Silence policy: a track whose peak amplitude is below ``SILENCE_PEAK`` (-100 dBFS)
is almost always a failed export or a placeholder, and EnCodec codes of digital
silence teach the model nothing, so ``check_audible`` rejects it; callers that want
to keep such tracks pass ``allow_silent=True`` and get a warning instead.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-5  # -100 dBFS: below this the whole track counts as silent
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif")


class AudioError(ValueError):
    """An audio input that cannot be tokenized; ``reason`` labels it, ``path`` names the file."""

    def __init__(self, reason: str, path: str | os.PathLike, message: str):
        super().__init__(f"{path}: {message}")
        self.reason = reason
        self.path = str(path)
        self.detail = message


def _soundfile():
    """Import soundfile with an install hint (it wraps libsndfile: wav, flac, ogg, mp3 >= 1.1)."""
    try:
        import soundfile
    except ImportError as exn:  # pragma: no cover - a declared dependency
        raise ImportError("reading audio needs the soundfile package: pip install soundfile") from exn
    return soundfile


def _wav_truncated(path: Path) -> tuple[int, int] | None:
    """(declared, available) data bytes when a RIFF/WAVE file is shorter than its header says.

    libsndfile silently shortens a truncated WAV to the bytes present, so the header is
    checked here. Returns None for an intact file, a non-WAV file, or a streaming header.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                available = size - pos - 8
                if chunk_size in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                    return None
                return (chunk_size, available) if chunk_size > available else None
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode ``path`` to float32 [channels, samples] and its sample rate; raises AudioError."""
    path = Path(path)
    sf = _soundfile()
    if not path.is_file():
        raise AudioError("missing_file", path, "audio file not found; fix the path in the input manifest")
    if path.suffix.lower() == ".mp3" and "MP3" not in sf.available_formats():
        raise AudioError(
            "unsupported_format", path,
            f"this libsndfile ({sf.__libsndfile_version__}) cannot read MP3 (needs >= 1.1.0); "
            "convert the file to FLAC/WAV or install a newer soundfile wheel",
        )
    try:
        info = sf.info(str(path))
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [N, C]
    except (sf.LibsndfileError, RuntimeError, EOFError) as exn:
        raise AudioError(
            "unreadable_audio", path, f"cannot decode audio ({exn}); the file is corrupt or not audio: re-export it"
        ) from exn
    truncated = _wav_truncated(path)
    if truncated is not None:
        raise AudioError(
            "truncated_audio", path,
            f"WAV header declares {truncated[0]} data bytes but only {truncated[1]} are present; "
            "the file was cut short: re-copy or re-export it",
        )
    if 0 < data.shape[0] < info.frames:
        raise AudioError(
            "truncated_audio", path,
            f"decoded {data.shape[0]} of the {info.frames} frames the header declares; "
            "the file was cut short: re-copy or re-export it",
        )
    if data.shape[0] == 0:
        raise AudioError("empty_audio", path, "no audio frames; remove the record or fix the file")
    if not np.isfinite(data).all():
        raise AudioError("bad_audio_values", path, "NaN or inf samples; re-export the file")
    return np.ascontiguousarray(data.T), int(sr)  # [C, N]


def to_mono(wav: np.ndarray) -> np.ndarray:
    """[C, N] or [N] -> [N] by averaging channels."""
    return wav if wav.ndim == 1 else wav.mean(axis=0)


def resample(wav: np.ndarray, src_sr: int, dst_sr: int) -> np.ndarray:
    """[..., N] at src_sr -> [..., ceil(N * dst_sr / src_sr)] at dst_sr (polyphase, anti-aliased)."""
    if src_sr == dst_sr:
        return wav.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(int(src_sr), int(dst_sr))
    return resample_poly(wav, dst_sr // g, src_sr // g, axis=-1).astype(np.float32)


def check_audible(wav: np.ndarray, path: str | os.PathLike, *, allow_silent: bool = False) -> bool:
    """True when ``wav`` has signal; silent audio raises AudioError("silent_audio") unless allowed."""
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak >= SILENCE_PEAK:
        return True
    if not allow_silent:
        raise AudioError(
            "silent_audio", path,
            f"the audio is silent (peak {peak:.1e} < {SILENCE_PEAK:.0e}); remove the record, fix the file, "
            "or pass --allow-silent to keep silent tracks",
        )
    log.warning("%s: audio is silent (peak %.1e); kept because allow_silent=True", path, peak)
    return False


def load_mono(path: str | os.PathLike, sample_rate: int, *, allow_silent: bool | None = False) -> np.ndarray:
    """Decode, check, downmix and resample ``path`` to float32 [N] at ``sample_rate``. ``allow_silent=None`` leaves
    silence to the caller (which judges the part it cuts)."""
    wav, sr = load_audio(path)  # [C, N]
    mono = resample(to_mono(wav), sr, sample_rate)  # [N']
    if allow_silent is not None:
        check_audible(mono, path, allow_silent=allow_silent)
    return mono


def write_wav(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> Path:
    """Write float [N] or [C, N] audio as 16-bit PCM WAV; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
    _soundfile().write(str(path), data.T if data.ndim == 2 else data, sample_rate, subtype="PCM_16")
    return path
