"""Input records -> one sample of music and/or motion codes on one shared 50 Hz timeline.

Input: a JSONL manifest, one record per line (paths relative to the JSONL's folder)::

    {"id": "gBR_sBM_c01_d04_mBR0_ch01",
     "music": "audio/mBR0.wav",                       # or null: motion-only
     "motion": {"path": "motion/gBR_ch01.npy", "fps": 60},   # or "motion": "x.npy" + "motion_fps": 60; or null
     "captions": {"music": "break beat, 120 bpm", "motion": "a b-boy toprocks"},
     "offsets": {"music_seconds": 0.0, "motion_seconds": 0.0},  # optional, default 0
     "duration": 12.0}                                # optional: at most this many seconds

Timeline: music second ``offsets.music_seconds`` and motion second ``offsets.motion_seconds``
are the same instant, frame 0 of the sample. Motion is resampled to 50 frames/s from
its file start and cut at the nearest frame ``round(motion_seconds * 50)``; the audio is
cut at the exact sample that matches that frame (``music_seconds`` plus the rounding),
so the streams stay aligned to the audio sample. A paired sample is cut to the shorter
stream (and to ``duration``): same start, same length T. Music-only and motion-only
records give single-stream samples. Captions are kept per present modality; an empty
caption is an input error.

Every problem raises ``InputError`` (reason, file, message); the pipeline lists it in
rejects.jsonl and goes on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from mumo_ds.tokenizers.audio_io import AudioError
from mumo_ds.tokenizers.motion_features import at_rate

from .prep_motion import InputError, default_resample, load_motion
from .validate import CodesError, check_key


@dataclasses.dataclass
class Record:
    """One parsed input line; ``index`` is its 0-based position among the JSONL's records.

    ``music`` / ``motion`` are resolved paths; ``sources`` keeps them as written in the JSONL.
    """

    index: int
    line: int
    id: str
    music: str | None
    motion: str | None
    motion_fps: float | None
    captions: dict[str, str]
    music_offset: float = 0.0
    motion_offset: float = 0.0
    duration: float | None = None
    sources: dict[str, str] = dataclasses.field(default_factory=dict)

    def files(self) -> list[str]:
        return [p for p in (self.music, self.motion) if p]


def _num(obj: dict, name: str, where: str, default: float | None) -> float | None:
    value = obj.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError("bad_record", None, f"{where}: field {name!r} = {value!r}; expected a number >= 0 (seconds)")
    return float(value)


def parse_record(obj: Any, index: int, base: Path, where: str, line: int = 0) -> Record:
    """Check one JSONL object and resolve its paths against ``base``; raises InputError."""
    if not isinstance(obj, dict):
        raise InputError("bad_record", None, f"{where}: expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id")
    try:
        check_key(rid)
    except CodesError as exn:
        raise InputError("bad_record", None, f"{where}: field 'id': {exn}") from exn
    music, motion = obj.get("music"), obj.get("motion")
    fps = obj.get("motion_fps")
    if isinstance(motion, dict):
        motion, fps = motion.get("path"), motion.get("fps", fps)
    for name, value in (("music", music), ("motion", motion)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InputError("bad_record", None, f"{where}: field {name!r} = {value!r}; expected a file path or null")
    if music is None and motion is None:
        raise InputError("bad_record", None, f"{where}: record {rid!r} has neither music nor motion; give at least one path")
    if motion is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0):
        raise InputError("bad_record", None, f"{where}: record {rid!r}: motion fps {fps!r}; give \"motion\": {{\"path\": ..., \"fps\": 20}}")
    captions = obj.get("captions") or {}
    if not isinstance(captions, dict):
        raise InputError("bad_record", None, f"{where}: field 'captions' = {captions!r}; expected {{\"music\": str, \"motion\": str}}")
    present = [m for m, p in (("music", music), ("motion", motion)) if p is not None]
    kept = {}
    for m in present:
        text = captions.get(m)
        if not isinstance(text, str) or not text.strip():
            raise InputError(
                "empty_caption", None,
                f"{where}: record {rid!r}: captions.{m} is {text!r}; every present modality needs a non-empty caption",
            )
        kept[m] = text.strip()
    offsets = obj.get("offsets") or {}
    if not isinstance(offsets, dict):
        raise InputError("bad_record", None, f"{where}: field 'offsets' = {offsets!r}; expected {{\"music_seconds\", \"motion_seconds\"}}")
    duration = _num(obj, "duration", where, None)
    if duration is not None and duration <= 0:
        raise InputError("bad_record", None, f"{where}: field 'duration' = {duration}; expected > 0 seconds or leave it out")
    return Record(
        index=index, line=line, id=rid,
        music=None if music is None else str(base / music),
        motion=None if motion is None else str(base / motion),
        motion_fps=None if motion is None else float(fps),
        captions=kept,
        music_offset=_num(offsets, "music_seconds", f"{where}: offsets", 0.0),
        motion_offset=_num(offsets, "motion_seconds", f"{where}: offsets", 0.0),
        duration=duration,
        sources={m: p for m, p in (("music", music), ("motion", motion)) if p is not None},
    )


def read_records(path: str | os.PathLike) -> list[tuple[Record | None, dict | None]]:
    """All non-blank lines of a JSONL manifest in order: (record, None) or (None, reject).

    A reject is ``{"index", "line", "id", "file", "reason", "message"}``; bad lines do not
    stop the reading, and a duplicate id is rejected at its second occurrence.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input manifest not found; pass the JSONL of records with --input")
    out: list[tuple[Record | None, dict | None]] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            index, where, obj = len(out), f"{path}:{lineno}", None
            try:
                try:
                    obj = json.loads(line)
                except ValueError as exn:
                    raise InputError("bad_record", None, f"{where}: not valid JSON ({exn})") from exn
                rec = parse_record(obj, index, path.resolve().parent, where, lineno)
                if rec.id in seen:
                    raise InputError("bad_record", None, f"{where}: duplicate id {rec.id!r}; ids must be unique")
                seen.add(rec.id)
                out.append((rec, None))
            except InputError as exn:
                rid = obj.get("id") if isinstance(obj, dict) else None
                out.append((None, reject_entry(index, rid, exn, line=lineno)))
    return out


def reject_entry(index: int, rid: str | None, exn: Exception, line: int | None = None) -> dict:
    """The rejects.jsonl entry of a failed record."""
    return {
        "index": index, "line": line, "id": rid,
        "file": getattr(exn, "path", None), "reason": getattr(exn, "reason", type(exn).__name__), "message": str(exn),
    }


def make_sample(rec: Record, music_tok, motion_tok, mean: np.ndarray | None, std: np.ndarray | None,
                *, frame_rate: int = 50, min_frames: int = 1) -> dict:
    """Tokenize one record -> {"key", "music"?: int [K, T], "motion"?: int [K, T], "meta"}.

    ``music_tok`` is a MusicTokenizer (or None when no record has music), ``motion_tok`` a
    motion tokenizer (see prep_motion) and mean/std its normalisation. Raises InputError.
    """
    streams: dict[str, np.ndarray] = {}
    music_start, motion_start = rec.music_offset, rec.motion_offset  # seconds into each file
    limit = None if rec.duration is None else int(math.floor(rec.duration * frame_rate + 1e-9))  # frames
    if rec.motion is not None:
        if motion_tok is None:
            raise InputError("bad_record", rec.motion, "record has motion but no motion tokenizer was configured; pass --motion-model")
        resample = getattr(motion_tok, "resample", default_resample)
        feats = at_rate(load_motion(rec.motion), rec.motion_fps, frame_rate, resample)  # [T_src, 263] -> [T50, 263]
        start = int(round(rec.motion_offset * frame_rate))
        if music_start + start / frame_rate - rec.motion_offset < 0:  # rounding down would cut before the audio
            start += 1
        music_start += start / frame_rate - rec.motion_offset  # same instant as motion frame `start`
        motion_start = start / frame_rate
        feats = feats[start : None if limit is None else start + limit]
        if feats.shape[0] < min_frames:
            raise InputError("too_short", rec.motion, f"{feats.shape[0]} motion frame(s) after offset {rec.motion_offset} s; need {min_frames}")
        if mean is None or std is None:  # a tokenizer may carry its own statistics
            mean, std = getattr(motion_tok, "mean", None), getattr(motion_tok, "std", None)
        if mean is None or std is None:
            raise InputError("bad_record", rec.motion, "no motion Mean/Std to normalise with; pass --motion-mean and --motion-std")
        normed = ((feats - mean) / std).astype(np.float32)  # [T, 263]
        streams["motion"] = np.asarray(motion_tok.encode(normed))  # [K, T_motion]
        limit = streams["motion"].shape[1]
    if rec.music is not None:
        if music_tok is None:
            raise InputError("bad_record", rec.music, "record has music but no music codec was configured; pass --codec-model")
        try:
            wav = music_tok.load(rec.music, music_start, None if limit is None else limit / frame_rate)
        except AudioError as exn:
            raise InputError(exn.reason, exn.path, exn.detail) from exn
        streams["music"] = music_tok.encode([wav])[0]  # [K, T_music]
    num_frames = min(s.shape[1] for s in streams.values())
    if num_frames < min_frames:
        raise InputError("too_short", rec.files()[0], f"{num_frames} frame(s) on the shared timeline; need {min_frames}")
    streams = {m: s[:, :num_frames] for m, s in streams.items()}  # dtype kept: encode_sample range-checks, then casts
    meta = {
        "captions": {m: rec.captions[m] for m in streams},
        "source": {"id": rec.id, **{m: rec.sources.get(m, getattr(rec, m)) for m in streams}},
        "duration": num_frames / frame_rate,
        "fps": frame_rate,
        "offsets": {m: round(music_start if m == "music" else motion_start, 6) for m in streams},  # as cut
    }
    return {"key": rec.id, **streams, "meta": meta}
