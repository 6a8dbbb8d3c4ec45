"""Write samples of one split into tar shards and record them in ``manifest.json``.

Usage::

    with ShardWriter("data/x", "train", samples_per_shard=1000,
                     codec={"name": "encodec_32khz", ...},
                     motion_tokenizer={"name": "motion-vqvae-v1", ...}) as w:
        w.write("clip0001_000", music=music_codes, motion=motion_codes,   # int [4, T] each
                meta={"captions": {"music": "...", "motion": "..."}, "source": "..."})

Every sample is validated before anything is written. Shards are written as
``<name>.partial`` and renamed to their final names all together on a clean close,
right before the manifest is updated (other splits already in it are kept) and the
split's shards from an earlier write that the new one does not reuse are deleted.
After an exception every ``.partial`` file is removed and the split's shards and
manifest are left as they were: a failed rewrite (``overwrite=True``) never replaces
a good split, and a crash never leaves a half-written ``*.tar`` under a final name.

The same checks and the same atomic write are available one shard at a time for
pipelines that plan shards themselves (``mumo_ds.data.prep``): ``encode_sample``
validates one sample into tar members, ``write_shard`` writes a list of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from .format import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    ShardInfo,
    SplitInfo,
    check_split,
    kind_of,
    shard_name,
    split_shards,
)
from .validate import check_captions, check_codes, check_key, check_pair

PARTIAL_SUFFIX = ".partial"


def npy_bytes(arr: np.ndarray) -> bytes:
    """Serialise with numpy's own .npy format (no pickle)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def encode_sample(
    key: str, music: Any, motion: Any, meta: dict, *, frame_rate: int, num_codebooks: int, codebook_size: int
) -> dict[str, Any]:
    """Validated sample dict of bytes members: {"__key__", "json", "music.npy"?, "motion.npy"?}.

    Checks the key, codes (dtype/shape/range, paired lengths) and captions; raises
    CodesError/ValueError naming the sample and field. Used by ShardWriter and data prep.
    """
    check_key(key)
    if music is None and motion is None:
        raise ValueError(f"sample {key!r}: needs music and/or motion codes, got neither")
    fmt = dict(num_codebooks=num_codebooks, codebook_size=codebook_size)
    streams = {}
    if music is not None:
        streams["music"] = check_codes(key, "music.npy", music, **fmt)
    if motion is not None:
        streams["motion"] = check_codes(key, "motion.npy", motion, **fmt)
    check_pair(key, streams.get("music"), streams.get("motion"))
    if not isinstance(meta, dict):
        raise ValueError(f"sample {key!r}, json: meta must be a dict, got {type(meta).__name__}")
    captions = check_captions(key, meta.get("captions", {}), streams)
    num_frames = next(iter(streams.values())).shape[1]
    meta = {"captions": captions, "fps": frame_rate, "duration": num_frames / frame_rate} | meta
    if meta["fps"] != frame_rate:
        raise ValueError(f"sample {key!r}, json.fps: {meta['fps']} but the data is at {frame_rate} frames/s")
    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as exn:
        raise ValueError(f"sample {key!r}, json: meta is not JSON-serialisable ({exn}); use str/int/float/list/dict") from exn
    sample = {"__key__": key, "json": meta_json.encode("utf-8")}
    for name, codes in streams.items():
        sample[f"{name}.npy"] = npy_bytes(codes)
    return sample


def write_shard(path: str | os.PathLike, samples: list[dict[str, Any]]) -> ShardInfo:
    """Write encoded samples (from ``encode_sample``) to one tar shard, atomically.

    The tar is written to ``<path>.partial``, fsynced and renamed to ``path`` only when
    complete; on any error the partial file is removed and nothing appears under ``path``.
    """
    path = Path(path)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with open(partial, "wb") as f:
            tar = wds.TarWriter(f, encoder=False, mtime=0)  # mtime=0: byte-reproducible shards
            for sample in samples:
                tar.write(sample)
            tar.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ShardInfo(path.name, len(samples), file_sha256(path))


class ShardWriter:
    """Context manager that writes validated samples of one split into ``out_dir``.

    Args:
        out_dir: directory of the shards and ``manifest.json`` (created if missing).
        split: split name, e.g. "train"; shards are ``{split}-{index:06d}.tar``.
        samples_per_shard: samples per shard (the last one may hold fewer).
        codec: music codec settings recorded in the manifest (``name`` required).
        motion_tokenizer: motion tokenizer settings recorded in the manifest (``name`` required).
        frame_rate, num_codebooks, codebook_size: the code format of every sample.
        overwrite: replace this split if it already exists in ``out_dir``; otherwise refuse.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        split: str,
        *,
        samples_per_shard: int,
        codec: dict,
        motion_tokenizer: dict,
        frame_rate: int = 50,
        num_codebooks: int = 4,
        codebook_size: int = 2048,
        overwrite: bool = False,
    ):
        check_split(split)
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard={samples_per_shard}: must be >= 1")
        if not 1 <= codebook_size <= np.iinfo(np.int16).max + 1:
            raise ValueError(f"codebook_size={codebook_size}: codes are stored as int16, so 1..32768")
        for label, d in (("codec", codec), ("motion_tokenizer", motion_tokenizer)):
            if not isinstance(d, dict) or not isinstance(d.get("name"), str):
                raise ValueError(f"{label}={d!r}: must be a dict with at least a 'name' string")
        self.out_dir = Path(out_dir)
        self.split = split
        self.samples_per_shard = samples_per_shard
        self.codec = dict(codec)
        self.motion_tokenizer = dict(motion_tokenizer)
        self.frame_rate = frame_rate
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.overwrite = overwrite
        self.info = SplitInfo()
        self._keys: set[str] = set()
        self._tar: wds.TarWriter | None = None
        self._file = None
        self._in_shard = 0
        self._closed = False
        self._stale: list[Path] | None = None  # this split's shards found on entry
        self._finished: list[Path] = []  # complete shards, still under their .partial names until close()

    # -- context manager -------------------------------------------------------------
    def __enter__(self) -> "ShardWriter":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        existing = split_shards(self.out_dir, self.split)
        if existing and not self.overwrite:
            raise FileExistsError(
                f"{existing[0]}: split {self.split!r} already has shards in {self.out_dir}; "
                "delete them, choose another directory, or pass overwrite=True"
            )
        self._stale = existing
        self._load_other_splits()  # refuse a format clash before writing anything
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    # -- writing ---------------------------------------------------------------------
    def write(self, key: str, music: Any = None, motion: Any = None, *, meta: dict) -> None:
        """Validate and append one sample; music/motion are int arrays [num_codebooks, T]."""
        if self._closed:
            raise RuntimeError(f"ShardWriter({self.out_dir}, {self.split!r}) is closed")
        if self._stale is None:
            raise RuntimeError("use ShardWriter as a context manager: `with ShardWriter(...) as w:`")
        sample = self._encode(key, music, motion, meta)
        if self._tar is None:
            self._open_shard()
        self._tar.write(sample)
        self._keys.add(key)
        self._in_shard += 1
        self.info.num_samples += 1
        self.info.counts[kind_of(music is not None, motion is not None)] += 1
        if self._in_shard == self.samples_per_shard:
            self._finish_shard()

    def _encode(self, key: str, music: Any, motion: Any, meta: dict) -> dict[str, Any]:
        """Validated sample dict of bytes members: {"__key__", "json", "music.npy"?, "motion.npy"?}."""
        check_key(key)
        if key in self._keys:
            raise ValueError(f"sample key {key!r}: already written to split {self.split!r}; keys must be unique")
        if music is None and motion is None:
            raise ValueError(f"sample {key!r}: needs music and/or motion codes, got neither")
        return encode_sample(
            key, music, motion, meta,
            frame_rate=self.frame_rate, num_codebooks=self.num_codebooks, codebook_size=self.codebook_size,
        )

    # -- shards ------------------------------------------------------------------------
    def _shard_path(self, suffix: str = "") -> Path:
        """Path of the shard being written (``suffix=PARTIAL_SUFFIX`` while it is open)."""
        return self.out_dir / (shard_name(self.split, len(self.info.shards)) + suffix)

    def _open_shard(self) -> None:
        self._file = open(self._shard_path(PARTIAL_SUFFIX), "wb")
        # encoder=False: members are already bytes; mtime=0 makes shards byte-reproducible.
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=0)
        self._in_shard = 0

    def _finish_shard(self) -> None:
        """Close the open shard, fsync it and record its sha256; it keeps its .partial name until close()."""
        partial, final = self._shard_path(PARTIAL_SUFFIX), self._shard_path()
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._tar = self._file = None
        self._finished.append(partial)
        self.info.shards.append(ShardInfo(final.name, self._in_shard, file_sha256(partial)))
        self._in_shard = 0

    def _abort(self) -> None:
        """After an exception: drop every .partial file of this write, leave shards and manifest untouched."""
        if self._tar is not None:
            self._tar.close()
            self._file.close()
            self._finished.append(self._shard_path(PARTIAL_SUFFIX))
            self._tar = self._file = None
        for partial in self._finished:
            partial.unlink(missing_ok=True)
        self._closed = True

    def close(self) -> None:
        """Finish the last shard, move every shard into place, update manifest.json, delete stale shards."""
        if self._closed:
            return
        if self._tar is not None:
            self._finish_shard()
        for partial in self._finished:
            os.replace(partial, partial.with_name(partial.name.removesuffix(PARTIAL_SUFFIX)))
        self._update_manifest()
        written = {s.name for s in self.info.shards}
        for path in self._stale or []:
            if path.name not in written:
                path.unlink()
        self._closed = True

    def _manifest(self) -> Manifest:
        """This writer's manifest header (no splits yet)."""
        return Manifest(
            codec=self.codec,
            motion_tokenizer=self.motion_tokenizer,
            frame_rate=self.frame_rate,
            num_codebooks=self.num_codebooks,
            codebook_size=self.codebook_size,
        )

    def _load_other_splits(self) -> dict[str, SplitInfo]:
        """Other splits of an existing manifest, refused if they use another code format."""
        path = self.out_dir / MANIFEST_NAME
        if not path.exists():
            return {}
        old = Manifest.load(path)
        others = {k: v for k, v in old.splits.items() if k != self.split}
        ours = self._manifest()
        for field in ("codec", "motion_tokenizer", "frame_rate", "num_codebooks", "codebook_size"):
            if others and getattr(old, field) != getattr(ours, field):
                raise ManifestError(
                    f"{path}: splits {sorted(others)} have {field}={getattr(old, field)!r}, this writer "
                    f"uses {field}={getattr(ours, field)!r}; write split {self.split!r} into another "
                    "directory or re-tokenize the other splits"
                )
        return others

    def _update_manifest(self) -> None:
        """Write manifest.json: the other splits as they are now (re-read) plus this one."""
        manifest = self._manifest()
        others = self._load_other_splits()
        manifest.splits = dict(sorted((others | {self.split: self.info}).items()))
        manifest.save(self.out_dir / MANIFEST_NAME)
