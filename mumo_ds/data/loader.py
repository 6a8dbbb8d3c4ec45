"""``CodesLoader``: an infinite, deterministic, resumable batch iterator over code shards.

Pipeline for one epoch on one rank::

    manifest shards --order(seed, epoch)--> every world_size-th from rank  (node split)
      --webdataset tar reader--> raw samples --decode/validate--> Sample   (bad: skip + count)
      --shuffle buffer(seed, epoch, rank)--> bucket by kind --batch_size--> crop/pad --> batch

Everything random is seeded by (seed, epoch[, rank, key]), so a run is a pure
function of its arguments and data. The position is (epoch, batches_in_epoch);
``load_state_dict`` replays that epoch's pipeline and drops the batches already
seen, so the next batch is exactly the one the original run would have produced
next. Samples left in partly filled buckets at the end of an epoch are dropped
(counted in ``stats.dropped_partial``). One process reads, with no worker processes: the
samples are pre-tokenized int16 codes, which one process yields far faster than a training
step uses them (bench/data_loading.py measures both rates on the machine at hand).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import webdataset as wds

from .collate import collate, crop_offset
from .decode import Sample, decode_sample
from .format import MANIFEST_NAME, MODALITIES, SAMPLE_DATA_COMMAND, Manifest, ManifestError, check_compatible
from .validate import CodesError
from .writer import file_sha256

log = logging.getLogger(__name__)

EXPECT_KEYS = ("num_codebooks", "codebook_size", "frame_rate", "music_codec", "motion_tokenizer")
MIN_SAMPLES_FOR_BAD_FRACTION = 20


def expect_for(config) -> dict:
    """``expect=`` for a model config (a ``MuMoConfig``): the code format the model was built for."""
    return {key: getattr(config, key) for key in EXPECT_KEYS}


class DataError(RuntimeError):
    """The data stream cannot go on: too many bad samples, or an epoch with no batch."""


@dataclasses.dataclass
class LoaderStats:
    """Counts since the loader was built (a resumed loader also counts the replayed part).

    ``skipped`` maps a reason to a count: "corrupt" (unreadable member), "unreadable"
    (tar-level read error), "missing" (fewer samples in a shard than its manifest
    entry says), "missing_codes", "dtype", "shape", "range", "length_mismatch".
    ``filtered``: samples with none of the selected streams (not bad).
    ``dropped_partial``: samples left in unfilled buckets at an epoch's end.
    """

    samples_ok: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    filtered: int = 0
    dropped_partial: int = 0

    @property
    def num_bad(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples_ok": self.samples_ok,
            "skipped": dict(self.skipped),
            "filtered": self.filtered,
            "dropped_partial": self.dropped_partial,
        }


def epoch_shards(names: list[str], epoch: int, *, seed: int, shuffle: bool, rank: int, world_size: int) -> list[str]:
    """This rank's shards for ``epoch``: the epoch's order, then every world_size-th from ``rank``.

    All ranks compute the same order, so their sets are disjoint and together cover all shards.
    """
    order = list(names)
    if shuffle:
        order = [order[i] for i in np.random.default_rng([seed, epoch]).permutation(len(order))]
    return order[rank::world_size]


def shuffle_buffer(items: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Approximate shuffle with a buffer of ``size`` items (webdataset-style, but seeded)."""
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        i = int(rng.integers(size))
        yield buf[i]
        buf[i] = item
    for i in rng.permutation(len(buf)):
        yield buf[i]


class CodesLoader:
    """Infinite iterator of batches from ``data_dir``'s ``split`` (see the module docstring).

    Args:
        data_dir: directory with ``manifest.json`` and the shards.
        split: e.g. "train" or "val".
        batch_size: samples per batch; every batch has one kind (set of streams).
        crop_frames: frames per sample in the batch: random crop, or pad with 0 + mask.
        random_crop: False crops every sample from its first frame (prompts, reproducible evaluation).
        streams: modalities to use; ("motion",) keeps samples with motion and drops their music.
        rank, world_size: this process's place among data-parallel ranks.
        seed: seeds shard order, sample shuffle and crops (with the epoch).
        shuffle: shuffle shard order and samples; False reads shards and samples in order.
        shuffle_buffer: size of the sample shuffle buffer.
        max_bad_fraction: raise DataError once bad/(ok+bad) exceeds this, after >= 20 samples.
        expect: model format to check against the manifest, keys among
            num_codebooks, codebook_size, frame_rate, music_codec, motion_tokenizer.
        verify: check every shard's sha256 against the manifest now (reads all shards).
        kinds: keep only samples of these kinds (after ``streams``), e.g. ``(("music", "motion"),)``
            for paired samples only; others are counted in ``stats.filtered``. None keeps all.

    Yields batches as documented in ``collate.collate``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str,
        *,
        batch_size: int,
        crop_frames: int,
        streams: tuple[str, ...] = MODALITIES,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 256,
        max_bad_fraction: float = 0.1,
        expect: dict | None = None,
        verify: bool = False,
        kinds: tuple[tuple[str, ...], ...] | None = None,
        random_crop: bool = True,
    ):
        self.data_dir = Path(data_dir)
        manifest_path = self.data_dir / MANIFEST_NAME
        self.manifest = Manifest.load(manifest_path)
        unknown = sorted(set(expect or {}) - set(EXPECT_KEYS))
        if unknown:
            raise ValueError(f"expect: unknown keys {unknown}; allowed: {list(EXPECT_KEYS)}")
        check_compatible(self.manifest, **(expect or {}), source=str(manifest_path))
        if split not in self.manifest.splits:
            raise ManifestError(
                f"{manifest_path}: no split {split!r} (has {sorted(self.manifest.splits)}); "
                f"write it with data_prep (sample data: {SAMPLE_DATA_COMMAND})"
            )
        bad_streams = [s for s in streams if s not in MODALITIES]
        if not streams or bad_streams:
            raise ValueError(f"streams={streams!r}: choose one or both of {MODALITIES}")
        if batch_size < 1 or crop_frames < 1:
            raise ValueError(f"batch_size={batch_size}, crop_frames={crop_frames}: both must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size")
        self.split = split
        self.shards = {s.name: s for s in self.manifest.splits[split].shards}
        if len(self.shards) < world_size:
            raise ManifestError(
                f"{manifest_path}: split {split!r} has {len(self.shards)} shard(s) but world_size={world_size} "
                f"needs at least {world_size} (one per rank); rewrite it with a smaller --samples-per-shard"
            )
        for name in self.shards:
            path = self.data_dir / name
            if not path.is_file():
                raise ManifestError(f"{path}: shard listed in {manifest_path} is missing; copy it back or rewrite the split")
            if verify and file_sha256(path) != self.shards[name].sha256:
                raise ManifestError(
                    f"{path}: sha256 differs from {manifest_path} (shard changed or corrupt); "
                    "copy it again or rewrite the split"
                )
        self.batch_size = batch_size
        self.crop_frames = crop_frames
        self.random_crop = random_crop
        self.streams = tuple(m for m in MODALITIES if m in streams)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle, self.shuffle_buffer = shuffle, shuffle_buffer
        self.max_bad_fraction = max_bad_fraction
        self.kinds = None if kinds is None else {tuple(m for m in MODALITIES if m in k) for k in kinds}
        self.stats = LoaderStats()
        self._epoch = 0
        self._batches_in_epoch = 0

    # -- position ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """Position after the last batch handed out: {"epoch", "batches_in_epoch"}."""
        return {"epoch": self._epoch, "batches_in_epoch": self._batches_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position; the next ``iter(self)`` continues right after it.

        Call it before ``iter()``: an iterator already running keeps its own place.
        """
        epoch, done = int(state["epoch"]), int(state["batches_in_epoch"])
        if epoch < 0 or done < 0:
            raise ValueError(f"loader state {state!r}: epoch and batches_in_epoch must be >= 0")
        self._epoch, self._batches_in_epoch = epoch, done

    # -- iteration -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        """Batches forever, epoch after epoch, starting at the current position."""
        while True:
            epoch, skip = self._epoch, self._batches_in_epoch
            produced = 0
            for samples in self._epoch_groups(epoch):
                produced += 1
                if produced <= skip:  # replaying up to a restored position
                    continue
                self._batches_in_epoch = produced
                offsets = [crop_offset(s, self.crop_frames, seed=self.seed, epoch=epoch) if self.random_crop else 0
                           for s in samples]
                yield collate(samples, offsets, self.crop_frames)
            if produced == 0:
                wanted = f"samples of kind {sorted(self.kinds)}" if self.kinds else f"samples with streams {self.streams}"
                raise DataError(
                    f"{self.data_dir}: split {self.split!r}, rank {self.rank}/{self.world_size}, epoch {epoch}: "
                    f"this rank's shards hold fewer than {self.batch_size} {wanted} (stats {self.stats.as_dict()}). "
                    "Each rank reads its own shards, so every kind the mix draws must be spread over them: build the "
                    "shards from a JSONL whose kinds are interleaved (build_shards keeps the input order), or lower "
                    "the batch size, use fewer ranks, or add data"
                )
            log.info("epoch %d done on rank %d: %d batches, stats %s", epoch, self.rank, produced, self.stats.as_dict())
            self._epoch, self._batches_in_epoch = epoch + 1, 0

    def _epoch_groups(self, epoch: int) -> Iterator[list[Sample]]:
        """Lists of ``batch_size`` samples of one kind, in this epoch's deterministic order."""
        names = epoch_shards(
            list(self.shards), epoch, seed=self.seed, shuffle=self.shuffle, rank=self.rank, world_size=self.world_size
        )
        samples: Iterable[Sample] = (s for name in names for s in self._shard_samples(name))
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, self.rank])
            samples = shuffle_buffer(samples, self.shuffle_buffer, rng)
        buckets: dict[tuple[str, ...], list[Sample]] = collections.defaultdict(list)
        for sample in samples:
            bucket = buckets[sample.kind]
            bucket.append(sample)
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()
        self.stats.dropped_partial += sum(len(b) for b in buckets.values())

    def _shard_samples(self, name: str) -> Iterator[Sample]:
        """Good samples of one shard; bad ones are logged, counted and skipped."""
        path = self.data_dir / name

        def on_tar_error(exn: Exception) -> bool:
            self._bad("unreadable", name, f"tar read error: {exn}")
            return True  # skip and go on with the rest of the shard

        seen = 0
        raw_samples = wds.tariterators.tarfile_samples([{"url": str(path)}], handler=on_tar_error)
        for raw in raw_samples:
            seen += 1
            try:
                sample = decode_sample(
                    raw,
                    streams=self.streams,
                    num_codebooks=self.manifest.num_codebooks,
                    codebook_size=self.manifest.codebook_size,
                )
            except CodesError as exn:
                self._bad(exn.reason, name, str(exn))
                continue
            if sample is None or (self.kinds is not None and sample.kind not in self.kinds):
                self.stats.filtered += 1
                continue
            self.stats.samples_ok += 1
            self._check_bad_fraction(name)
            yield sample
        expected = self.shards[name].num_samples
        if seen < expected:
            self._bad("missing", name, f"read {seen} of {expected} samples (truncated or corrupt tar)", count=expected - seen)

    def _bad(self, reason: str, shard: str, detail: str, count: int = 1) -> None:
        log.warning("skipping bad data in %s [%s]: %s", self.data_dir / shard, reason, detail)
        self.stats.skipped[reason] += count
        self._check_bad_fraction(shard)

    def _check_bad_fraction(self, shard: str) -> None:
        bad = self.stats.num_bad
        total = bad + self.stats.samples_ok
        if total >= MIN_SAMPLES_FOR_BAD_FRACTION and bad > self.max_bad_fraction * total:
            raise DataError(
                f"{self.data_dir / shard}: {bad} of {total} samples read so far are bad "
                f"({dict(self.stats.skipped)}), more than max_bad_fraction={self.max_bad_fraction}; "
                "check the logged keys, rewrite the bad shards with data_prep, or raise max_bad_fraction"
            )
