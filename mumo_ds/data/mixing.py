"""``MixedLoader``: batches whose kind follows one seeded schedule on every rank.

Each batch holds one kind of sample (paired, music-only or motion-only). The
kind of the i-th batch is drawn from the mix weights with an RNG seeded by
``(seed, i)``, so at every micro-step all data-parallel ranks run the same
streams. That keeps the module-call sequence identical across ranks, which
ZeRO-3 needs (parameters are gathered collectively, module by module: a rank
that runs the text encoder once while another runs it twice hangs both).

Kind names: "paired" = music + motion, "music" = music only, "motion" = motion
only, after the stage's ``streams`` are applied (with streams=("motion",), a
paired sample's music is dropped and it counts as "motion").
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from .loader import CodesLoader, LoaderStats

KIND_STREAMS = {"paired": ("music", "motion"), "music": ("music",), "motion": ("motion",)}


class MixedLoader:
    """Infinite batches from one :class:`CodesLoader` per kind, chosen by a rank-independent schedule.

    Args:
        mix: kind name -> weight (> 0), e.g. ``{"paired": 0.8, "music": 0.1, "motion": 0.1}``.
        seed: seeds the kind schedule and every per-kind loader.
        **loader_kwargs: passed to each :class:`CodesLoader` (``batch_size``, ``crop_frames``,
            ``streams``, ``rank``, ``world_size``, ``expect``, ...).
    """

    def __init__(self, data_dir, split: str, *, mix: dict[str, float], seed: int = 0, **loader_kwargs):
        unknown = sorted(set(mix) - set(KIND_STREAMS))
        if unknown or not mix or any(w <= 0 for w in mix.values()):
            raise ValueError(f"mix={mix!r}: weights must be > 0 for kinds among {sorted(KIND_STREAMS)}")
        self.names = sorted(mix)
        weights = np.array([mix[n] for n in self.names], dtype=np.float64)
        self.probs = weights / weights.sum()
        self.seed = seed
        self.loaders = {
            n: CodesLoader(data_dir, split, seed=seed, kinds=(KIND_STREAMS[n],), **loader_kwargs) for n in self.names
        }
        self._draws = 0

    def kind_of(self, index: int) -> str:
        """The kind of batch number ``index``: the same on every rank."""
        return self.names[int(np.random.default_rng([self.seed, index]).choice(len(self.names), p=self.probs))]

    def __iter__(self) -> Iterator[dict]:
        iterators = {n: iter(loader) for n, loader in self.loaders.items()}
        while True:
            batch = next(iterators[self.kind_of(self._draws)])
            self._draws += 1
            yield batch

    def state_dict(self) -> dict:
        return {"draws": self._draws, "loaders": {n: loader.state_dict() for n, loader in self.loaders.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position; call before ``iter()``."""
        self._draws = int(state["draws"])
        for n, loader in self.loaders.items():
            loader.load_state_dict(state["loaders"][n])

    @property
    def stats(self) -> LoaderStats:
        """Counts summed over the per-kind loaders (each reads every shard, so bad samples count once per kind)."""
        total = LoaderStats()
        for loader in self.loaders.values():
            for f in dataclasses.fields(LoaderStats):
                setattr(total, f.name, getattr(total, f.name) + getattr(loader.stats, f.name))
        return total
