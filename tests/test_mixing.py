"""Batch-kind mixing: one schedule for all ranks, batches of the drawn kind, restorable position."""

from __future__ import annotations

import itertools

import pytest

from mumo_ds.data.mixing import MixedLoader
from mumo_ds.data.sample import build_sample_shards


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("mix")
    build_sample_shards(out)
    return out


def kind(batch: dict) -> str:
    has = ("music_codes" in batch, "motion_codes" in batch)
    return {(True, True): "paired", (True, False): "music", (False, True): "motion"}[has]


def test_all_ranks_draw_the_same_kinds(sample_data):
    mix = {"paired": 0.5, "music": 0.25, "motion": 0.25}
    ranks = [
        MixedLoader(sample_data, "train", mix=mix, seed=3, batch_size=2, crop_frames=16, rank=r, world_size=2)
        for r in range(2)
    ]
    kinds = [[kind(b) for b in itertools.islice(iter(loader), 24)] for loader in ranks]
    assert kinds[0] == kinds[1]
    assert kinds[0] == [ranks[0].kind_of(i) for i in range(24)]
    assert set(kinds[0]) == {"paired", "music", "motion"}
    paired = [
        MixedLoader(sample_data, "train", mix={"paired": 1.0}, seed=3, batch_size=2, crop_frames=16, rank=r, world_size=2)
        for r in range(2)
    ]
    keys = [{k for b in itertools.islice(iter(loader), 6) for k in b["keys"]} for loader in paired]  # within epoch 0
    assert len(keys[0]) == len(keys[1]) == 12 and not keys[0] & keys[1]  # ranks read disjoint shards


def test_motion_only_stream_drops_music(sample_data):
    loader = MixedLoader(sample_data, "train", mix={"motion": 1.0}, batch_size=4, crop_frames=16, streams=("motion",))
    for batch in itertools.islice(iter(loader), 10):
        assert "music_codes" not in batch and batch["motion_codes"].shape == (4, 4, 16)


def test_position_restores_exactly(sample_data):
    def make():
        return MixedLoader(sample_data, "train", mix={"paired": 0.6, "music": 0.2, "motion": 0.2}, seed=1,
                           batch_size=2, crop_frames=16)

    first = make()
    it = iter(first)
    for _ in range(7):
        next(it)
    state = first.state_dict()
    expected = [next(it)["keys"] for _ in range(5)]
    again = make()
    again.load_state_dict(state)
    assert [b["keys"] for b in itertools.islice(iter(again), 5)] == expected


def test_bad_mix_is_refused(sample_data):
    with pytest.raises(ValueError, match="weights must be > 0"):
        MixedLoader(sample_data, "train", mix={"dance": 1.0}, batch_size=2, crop_frames=16)
