"""Build small train/val shards from the bundled sample clip (``data_prep/sample_data``).

The sample set is one ~12 s AIST++ waacking clip (CC BY 4.0, see
``data_prep/sample_data/motion/README.md``) cut into overlapping windows. Every
``val_every``-th window goes to val, the rest to train, so val windows overlap
train frames: the set exercises the pipeline, it does not measure generalisation.
Windows alternate kinds: i % 4 == 1 is music only, i % 4 == 3 motion only, the rest
paired, so that every kind fills batches on every rank of a small 2-rank run.
Codes come from the weightless stand-in tokenizers in ``sample_codes``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .format import Manifest
from .sample_codes import MOTION_TOKENIZER, MUSIC_CODEC, motion_to_codes, synthetic_music_codes
from .writer import ShardWriter

SAMPLE_MOTION_DIR = Path(__file__).resolve().parents[2] / "data_prep" / "sample_data" / "motion"
CLIP_NAME = "gWA_sBM_cAll_d25_mWA0_ch01"
CLIP_FPS = 60
MOTION_CAPTIONS = (
    "waacking dance, basic",
    "a dancer performs basic waacking arm whips",
    "waacking, fast arm rotations on the beat",
)
MUSIC_CAPTIONS = (
    "upbeat funk with a steady beat",
    "disco funk groove at 120 bpm",
    "four-on-the-floor funk with bright horns",
)


def window_kind(index: int) -> tuple[bool, bool]:
    """(has_music, has_motion) of window ``index``: half paired, a quarter of each single modality."""
    if index % 4 == 1:
        return True, False
    if index % 4 == 3:
        return False, True
    return True, True


def load_clip_codes(motion_dir: Path = SAMPLE_MOTION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(music, motion) int16 codes [4, T] at 50 frames/s for the whole sample clip."""
    paths = {name: motion_dir / f"{name}.npy" for name in (CLIP_NAME, "Mean", "Std")}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: sample motion file missing; restore data_prep/sample_data from git")
    features, mean, std = (np.load(p, allow_pickle=False) for p in paths.values())
    motion = motion_to_codes(features, mean, std, CLIP_FPS)
    return synthetic_music_codes(motion), motion


def build_sample_shards(
    out_dir: str | os.PathLike,
    *,
    samples_per_shard: int = 8,
    window_seconds: float = 4.0,
    stride_seconds: float = 0.04,
    val_every: int = 5,
    motion_dir: str | os.PathLike = SAMPLE_MOTION_DIR,
) -> Manifest:
    """Write ``train`` and ``val`` shards + manifest.json into ``out_dir`` (replacing those splits).

    Defaults: 200-frame windows every 2 frames over the 599-frame clip -> 200 windows,
    160 train (20 shards) and 40 val (5 shards).
    """
    music, motion = load_clip_codes(Path(motion_dir))
    fps = MOTION_TOKENIZER["frame_rate"]
    length, stride = round(window_seconds * fps), max(1, round(stride_seconds * fps))
    if length > motion.shape[1]:
        raise ValueError(f"window_seconds={window_seconds}: longer than the {motion.shape[1] / fps:.2f} s sample clip")
    starts = range(0, motion.shape[1] - length + 1, stride)
    fmt = dict(samples_per_shard=samples_per_shard, codec=MUSIC_CODEC, motion_tokenizer=MOTION_TOKENIZER, overwrite=True)
    with ShardWriter(out_dir, "train", **fmt) as train, ShardWriter(out_dir, "val", **fmt) as val:
        for i, start in enumerate(starts):
            has_music, has_motion = window_kind(i)
            window = slice(start, start + length)
            captions = {}
            if has_music:
                captions["music"] = MUSIC_CAPTIONS[i % len(MUSIC_CAPTIONS)]
            if has_motion:
                captions["motion"] = MOTION_CAPTIONS[i % len(MOTION_CAPTIONS)]
            offset = start / fps
            meta = {
                "captions": captions,
                "source": f"AIST++ {CLIP_NAME} (CC BY 4.0), sample tokenizers",
                "offsets": {m: offset for m in captions},
            }
            writer = val if i % val_every == val_every - 1 else train
            writer.write(
                f"{CLIP_NAME}_{start:05d}",
                music=music[:, window] if has_music else None,
                motion=motion[:, window] if has_motion else None,
                meta=meta,
            )
    return Manifest.load(out_dir)
