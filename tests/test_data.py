"""Tests for mumo_ds.data: shard format, writer, loader and the sample shard builder."""

from __future__ import annotations

import hashlib
import json
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds

from data_prep.make_sample_shards import main as make_sample_main
from mumo_ds.data.format import Manifest, ManifestError, ShardInfo, SplitInfo, check_compatible, split_shards
from mumo_ds.data.check_shards import check_dir
from mumo_ds.data.loader import CodesLoader, DataError, epoch_shards
from mumo_ds.data.prep import PrepSettings
from mumo_ds.data.sample import build_sample_shards
from mumo_ds.data.validate import CodesError
from mumo_ds.data.writer import ShardWriter, npy_bytes

CODEC = {"name": "test-codec", "sample_rate": 32000, "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}
MOTION_TOK = {"name": "test-motion", "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}
EXPECT = {"num_codebooks": 4, "codebook_size": 2048, "frame_rate": 50}


def codes(t: int, start: int = 0) -> np.ndarray:
    """Distinct, in-range int16 codes [4, t]."""
    return ((np.arange(4 * t).reshape(4, t) + start) % 2048).astype(np.int16)


def writer(tmp_path, split="train", samples_per_shard=2, **kw) -> ShardWriter:
    return ShardWriter(tmp_path, split, samples_per_shard=samples_per_shard, codec=CODEC, motion_tokenizer=MOTION_TOK, **kw)


def write_three(tmp_path) -> dict:
    """paired (T=30), music-only (T=20), motion-only (T=25) in 2 shards; returns the arrays by key."""
    data = {
        "pair": (codes(30, 0), codes(30, 500)),
        "musiconly": (codes(20, 1000), None),
        "motiononly": (None, codes(25, 1500)),
    }
    with writer(tmp_path) as w:
        for key, (music, motion) in data.items():
            caps = {m: f"{m} caption of {key}" for m, a in (("music", music), ("motion", motion)) if a is not None}
            w.write(key, music=music, motion=motion, meta={"captions": caps, "source": "test"})
    return data


def write_raw_shard(tmp_path, raw_samples: list[dict], split="train") -> None:
    """A shard written without validation (to plant bad samples) plus its manifest."""
    path = tmp_path / f"{split}-000000.tar"
    with open(path, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0) as tar:
        for s in raw_samples:
            tar.write(s)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    split_info = SplitInfo(num_samples=len(raw_samples), shards=[ShardInfo(path.name, len(raw_samples), sha)])
    Manifest(codec=CODEC, motion_tokenizer=MOTION_TOK, splits={split: split_info}).save(tmp_path)


def raw(key: str, music=None, motion=None) -> dict:
    sample = {"__key__": key, "json": json.dumps({"captions": {}}).encode()}
    if music is not None:
        sample["music.npy"] = npy_bytes(music)
    if motion is not None:
        sample["motion.npy"] = npy_bytes(motion)
    return sample


def take(loader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def keys_of(batches) -> list[str]:
    return [k for b in batches for k in b["keys"]]


# -- writer + manifest --------------------------------------------------------------------
def test_round_trip_exact_arrays_and_captions(tmp_path):
    data = write_three(tmp_path)
    loader = CodesLoader(tmp_path, "train", batch_size=1, crop_frames=40, shuffle=False, expect=EXPECT)
    batches = take(loader, 3)
    assert keys_of(batches) == ["pair", "musiconly", "motiononly"]
    for batch in batches:
        key = batch["keys"][0]
        for m, arr in zip(("music", "motion"), data[key]):
            if arr is None:
                assert f"{m}_codes" not in batch and f"{m}_mask" not in batch
                assert batch[f"{m}_captions"] == [""]
                continue
            t = arr.shape[1]
            got, mask = batch[f"{m}_codes"], batch[f"{m}_mask"]
            assert got.dtype == torch.long and got.shape == (1, 4, 40)
            assert mask.dtype == torch.bool and mask.shape == (1, 40)
            assert torch.equal(got[0, :, :t], torch.from_numpy(arr.astype(np.int64)))
            assert int(got[0, :, t:].abs().sum()) == 0
            assert mask[0].tolist() == [True] * t + [False] * (40 - t)
            assert batch[f"{m}_captions"] == [f"{m} caption of {key}"]



def test_the_validator_accepts_what_the_writer_writes_and_refuses_what_it_refuses(tmp_path):
    with writer(tmp_path) as w:  # a stream without a caption gets the empty caption "" from the loader: valid data
        w.write("nocaps", music=codes(8), meta={})
        w.write("half", music=codes(8, 1), motion=codes(8, 2), meta={"captions": {"music": "m"}})
    assert check_dir(tmp_path) == []
    with writer(tmp_path / "bad") as w, pytest.raises(ValueError, match="each present modality \\(music\\)"):
        w.write("absent", music=codes(8), meta={"captions": {"motion": "a caption of no stream"}})

def test_manifest_counts_and_sha256_match_files(tmp_path):
    write_three(tmp_path)
    manifest = Manifest.load(tmp_path / "manifest.json")
    info = manifest.splits["train"]
    assert info.num_samples == 3
    assert info.counts == {"paired": 1, "music": 1, "motion": 1}
    assert [(s.name, s.num_samples) for s in info.shards] == [("train-000000.tar", 2), ("train-000001.tar", 1)]
    for s in info.shards:
        assert s.sha256 == hashlib.sha256((tmp_path / s.name).read_bytes()).hexdigest()
    assert (manifest.format_version, manifest.num_codebooks, manifest.codebook_size, manifest.frame_rate) == (1, 4, 2048, 50)
    assert manifest.codec == CODEC and manifest.motion_tokenizer == MOTION_TOK
    # a second split is merged in, the first kept
    with writer(tmp_path, split="val") as w:
        w.write("v0", motion=codes(10), meta={})
    merged = Manifest.load(tmp_path)
    assert sorted(merged.splits) == ["train", "val"]
    assert merged.splits["train"] == info and merged.splits["val"].counts == {"paired": 0, "music": 0, "motion": 1}
    CodesLoader(tmp_path, "train", batch_size=1, crop_frames=8, verify=True)  # sha256 check passes


def test_manifest_mismatch_names_field_values_and_fix(tmp_path):
    write_three(tmp_path)
    with pytest.raises(ManifestError) as err:
        CodesLoader(tmp_path, "train", batch_size=1, crop_frames=8, expect={**EXPECT, "codebook_size": 1024})
    msg = str(err.value)
    assert str(tmp_path / "manifest.json") in msg
    assert "codebook_size=2048" in msg and "codebook_size=1024" in msg
    assert "re-tokenize the data with codebook_size=1024 or use a model config with codebook_size=2048" in msg
    manifest = Manifest.load(tmp_path)
    with pytest.raises(ManifestError, match=r"codec\.name mismatch: the data has codec\.name='test-codec'"):
        check_compatible(manifest, music_codec="encodec_32khz", source="m.json")
    with pytest.raises(ManifestError, match=r"motion_tokenizer\.frame_rate"):
        check_compatible(manifest, motion_tokenizer={"frame_rate": 20}, source="m.json")
    check_compatible(manifest, num_codebooks=4, music_codec=None, motion_tokenizer={"name": "test-motion"})


def test_missing_manifest_names_path_and_command(tmp_path):
    with pytest.raises(ManifestError) as err:
        CodesLoader(tmp_path / "nowhere", "train", batch_size=1, crop_frames=8)
    assert str(tmp_path / "nowhere" / "manifest.json") in str(err.value)
    assert "python -m data_prep.make_sample_shards" in str(err.value)


def test_writer_rejects_bad_samples_naming_key_and_field(tmp_path):
    cases = [
        (dict(music=codes(10).astype(np.float32)), "dtype", "'k', music.npy"),
        (dict(motion=codes(10)[:3]), "shape", "'k', motion.npy"),
        (dict(music=codes(10) + 2048), "range", "'k', music.npy"),
        (dict(music=codes(10), motion=codes(11)), "length_mismatch", "'k': music.npy has T=10"),
    ]
    with writer(tmp_path) as w:
        for arrays, reason, where in cases:
            with pytest.raises(CodesError) as err:
                w.write("k", meta={}, **arrays)
            assert err.value.reason == reason and where in str(err.value)
        with pytest.raises(CodesError, match="'a.b'"):
            w.write("a.b", music=codes(5), meta={})
        w.write("ok", music=codes(5), meta={})
        with pytest.raises(ValueError, match="'ok': already written"):
            w.write("ok", music=codes(5), meta={})
    assert Manifest.load(tmp_path).splits["train"].num_samples == 1


def test_half_written_shard_never_under_final_name(tmp_path):
    with pytest.raises(RuntimeError, match="crash"):
        with writer(tmp_path, samples_per_shard=2) as w:
            for i in range(3):
                w.write(f"s{i}", music=codes(8, i), meta={})
            # shard 0 is complete, shard 1 holds one sample and is still open: neither is under a final name
            assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar.partial", "train-000001.tar.partial"]
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []  # no shard, no partial, no manifest
    with writer(tmp_path, samples_per_shard=2) as w:
        for i in range(3):
            w.write(f"s{i}", music=codes(8, i), meta={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "train-000000.tar", "train-000001.tar"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with writer(tmp_path):
            pass


def test_a_failed_rewrite_leaves_the_good_split_as_it_was(tmp_path):
    with writer(tmp_path, samples_per_shard=2) as w:
        for i in range(5):
            w.write(f"old{i}", music=codes(8, i), meta={})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="interrupted"):
        with writer(tmp_path, samples_per_shard=1, overwrite=True) as w:
            for i in range(4):  # shards 0..2 complete, under the names the old shards have
                w.write(f"new{i}", music=codes(8, i + 10), meta={})
            raise RuntimeError("interrupted")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert keys_of(take(CodesLoader(tmp_path, "train", batch_size=1, crop_frames=8, shuffle=False, verify=True), 5)) == [
        f"old{i}" for i in range(5)
    ]
    with writer(tmp_path, samples_per_shard=5, overwrite=True) as w:  # a clean rewrite replaces it, fewer shards
        w.write("x", music=codes(8), meta={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "train-000000.tar"]
    assert Manifest.load(tmp_path).splits["train"].num_samples == 1


def test_a_split_is_a_plain_name_and_owns_only_its_own_shards(tmp_path):
    for bad in ("train-hard", "a/b", "v.1", ""):
        with pytest.raises(ValueError, match="plain name"):
            writer(tmp_path, split=bad)
        with pytest.raises(ValueError, match="plain name"):
            PrepSettings(split=bad, samples_per_shard=8)
    for name in ("train-000001.tar", "train-hard-000000.tar", "train-000002.tar.partial", "trainx-000000.tar",
                 "train-1.tar"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in split_shards(tmp_path, "train")] == ["train-000001.tar"]


# -- loader: bad data ------------------------------------------------------------------------
def corrupt_member(path, member: str) -> None:
    """Overwrite the first 16 bytes of ``member``'s data (the .npy magic + header start)."""
    with tarfile.open(path) as tar:
        offset = tar.getmember(member).offset_data
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xde\xad\xbe\xef" * 4)


def test_corrupted_member_skipped_and_counted(tmp_path):
    with writer(tmp_path, samples_per_shard=10) as w:
        for i in range(5):
            w.write(f"s{i}", music=codes(12, i), motion=codes(12, 100 + i), meta={"captions": {"music": f"m{i}"}})
    corrupt_member(tmp_path / "train-000000.tar", "s2.motion.npy")
    loader = CodesLoader(tmp_path, "train", batch_size=1, crop_frames=12, shuffle=False)
    batches = take(loader, 4)
    assert keys_of(batches) == ["s0", "s1", "s3", "s4"]
    assert loader.stats.samples_ok == 4 and dict(loader.stats.skipped) == {"corrupt": 1}
    assert torch.equal(batches[2]["motion_codes"][0], torch.from_numpy(codes(12, 103).astype(np.int64)))
    with pytest.raises(ManifestError, match="sha256 differs"):
        CodesLoader(tmp_path, "train", batch_size=1, crop_frames=12, verify=True)


def test_corrupted_tar_header_counts_missing_samples(tmp_path):
    with writer(tmp_path, samples_per_shard=10) as w:
        for i in range(5):
            w.write(f"s{i}", music=codes(12, i), meta={})
    path = tmp_path / "train-000000.tar"
    with tarfile.open(path) as tar:
        header = tar.getmember("s3.json").offset  # header block of sample s3
    data = bytearray(path.read_bytes())
    data[header : header + 100] = b"\xff" * 100
    path.write_bytes(bytes(data))
    loader = CodesLoader(tmp_path, "train", batch_size=1, crop_frames=12, shuffle=False)
    assert keys_of(take(loader, 3)) == ["s0", "s1", "s2"]
    next(iter(loader))  # finishes epoch 0, starts epoch 1
    assert dict(loader.stats.skipped) == {"missing": 2}


def test_dtype_shape_range_length_violations_skipped_and_counted(tmp_path):
    write_raw_shard(tmp_path, [
        raw("good1", music=codes(10)),
        raw("floaty", music=codes(10).astype(np.float32)),
        raw("threecb", motion=codes(10)[:3]),
        raw("toobig", music=codes(10) + 2040),
        raw("negative", motion=codes(10) - 5),
        raw("mismatch", music=codes(10), motion=codes(9)),
        raw("nocodes"),
        raw("edge2048", music=np.where(codes(10) == 5, 2048, codes(10)).astype(np.int16)),
        raw("good2", music=np.where(codes(10, 7) == 9, 2047, codes(10, 7)).astype(np.int16)),
    ])
    loader = CodesLoader(tmp_path, "train", batch_size=2, crop_frames=10, shuffle=False)
    (batch,) = take(loader, 1)
    assert batch["keys"] == ["good1", "good2"]
    assert int(batch["music_codes"][1].max()) == 2047  # the top code is valid
    assert dict(loader.stats.skipped) == {"dtype": 1, "shape": 1, "range": 3, "length_mismatch": 1, "missing_codes": 1}
    assert loader.stats.samples_ok == 2


def test_too_many_bad_samples_raise_naming_shard(tmp_path):
    samples = [raw(f"s{i:02d}", music=codes(10) + (2048 if i % 4 == 0 else 0)) for i in range(24)]
    write_raw_shard(tmp_path, samples)
    loader = CodesLoader(tmp_path, "train", batch_size=1, crop_frames=10, shuffle=False, max_bad_fraction=0.1)
    with pytest.raises(DataError, match=r"train-000000\.tar: 5 of 20 samples read so far are bad"):
        take(loader, 30)
    lenient = CodesLoader(tmp_path, "train", batch_size=1, crop_frames=10, shuffle=False, max_bad_fraction=0.5)
    assert len(keys_of(take(lenient, 18))) == 18


# -- loader: splitting, streams, cropping, resume ------------------------------------------
def write_shards(tmp_path, num_shards: int, per_shard: int = 3) -> None:
    with writer(tmp_path, samples_per_shard=per_shard) as w:
        for i in range(num_shards * per_shard):
            w.write(f"s{i:03d}", music=codes(16, i), motion=codes(16, 50 + i), meta={})


def test_rank_splitting_gives_disjoint_shard_sets(tmp_path):
    write_shards(tmp_path, num_shards=5)
    names = [f"train-{i:06d}.tar" for i in range(5)]
    for epoch in range(3):
        parts = [epoch_shards(names, epoch, seed=7, shuffle=True, rank=r, world_size=2) for r in range(2)]
        assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == names
        assert (len(parts[0]), len(parts[1])) == (3, 2)
    assert epoch_shards(names, 0, seed=0, shuffle=False, rank=1, world_size=2) == [names[1], names[3]]
    keys = []
    for rank in range(2):
        loader = CodesLoader(tmp_path, "train", batch_size=1, crop_frames=16, rank=rank, world_size=2, shuffle=False)
        keys.append(keys_of(take(loader, 9 if rank == 0 else 6)))
    assert keys[0] == [f"s{i:03d}" for i in (0, 1, 2, 6, 7, 8, 12, 13, 14)]
    assert keys[1] == [f"s{i:03d}" for i in (3, 4, 5, 9, 10, 11)]
    with pytest.raises(ManifestError, match="has 5 shard\\(s\\) but world_size=6 needs at least 6"):
        CodesLoader(tmp_path, "train", batch_size=1, crop_frames=16, rank=0, world_size=6)


def test_streams_selection_and_homogeneous_batches(tmp_path):
    write_three(tmp_path)
    motion_only = CodesLoader(tmp_path, "train", batch_size=1, crop_frames=40, streams=("motion",), shuffle=False)
    batches = take(motion_only, 4)
    assert keys_of(batches) == ["pair", "motiononly", "pair", "motiononly"]
    assert all(set(b) == {"motion_codes", "motion_mask", "music_captions", "motion_captions", "keys"} for b in batches)
    assert batches[0]["music_captions"] == [""] and batches[0]["motion_captions"] == ["motion caption of pair"]
    assert motion_only.stats.filtered == 2  # "musiconly" in each of 2 epochs
    both = CodesLoader(tmp_path, "train", batch_size=2, crop_frames=40, shuffle=False)
    with pytest.raises(DataError, match=r"rank 0/1, epoch 0: this rank's shards hold fewer than 2 samples with "
                       r"streams \('music', 'motion'\)"):
        take(both, 1)  # one sample of each kind: no bucket ever fills
    paired = CodesLoader(tmp_path, "train", batch_size=2, crop_frames=40, kinds=(("music", "motion"),))
    with pytest.raises(DataError, match=r"fewer than 2 samples of kind \[\('music', 'motion'\)\] .* kinds are interleaved"):
        take(paired, 1)


def test_random_crop_shares_offset_across_streams(tmp_path):
    with writer(tmp_path, samples_per_shard=10) as w:
        for i in range(6):
            arr = codes(100, 10 * i)
            w.write(f"s{i}", music=arr, motion=arr, meta={})
    loader = CodesLoader(tmp_path, "train", batch_size=3, crop_frames=30, seed=3)
    offsets = set()
    for batch in take(loader, 6):
        assert torch.equal(batch["music_codes"], batch["motion_codes"])
        assert bool(batch["music_mask"].all())
        for key, crop in zip(batch["keys"], batch["music_codes"]):
            full = codes(100, 10 * int(key[1:])).astype(np.int64)
            start = int(np.argmax(full[0] == int(crop[0, 0])))
            assert torch.equal(crop, torch.from_numpy(full[:, start : start + 30]))
            offsets.add(start)
    assert len(offsets) > 1  # crops are random, not always 0
    for batch in take(CodesLoader(tmp_path, "train", batch_size=3, crop_frames=30, seed=3, random_crop=False), 4):
        for key, crop in zip(batch["keys"], batch["music_codes"]):  # from each sample's first frame
            assert torch.equal(crop, torch.from_numpy(codes(100, 10 * int(key[1:])).astype(np.int64)[:, :30]))


def test_state_dict_resume_gives_exactly_the_next_batch(tmp_path):
    build_sample_shards(tmp_path)
    kwargs = dict(batch_size=4, crop_frames=120, seed=11, expect=EXPECT)
    reference = CodesLoader(tmp_path, "train", **kwargs)
    it = iter(reference)
    states, batches = [], []
    for _ in range(90):  # 40 batches per epoch: crosses two epoch boundaries
        batches.append(next(it))
        states.append(reference.state_dict())
    assert states[39] == {"epoch": 0, "batches_in_epoch": 40} and states[40] == {"epoch": 1, "batches_in_epoch": 1}
    assert keys_of(batches[:40]) != keys_of(batches[40:80])  # epochs are reshuffled
    for i in (0, 6, 39, 40, 85):
        resumed = CodesLoader(tmp_path, "train", **kwargs)
        resumed.load_state_dict(states[i])
        got, want = next(iter(resumed)), batches[i + 1]
        assert got.keys() == want.keys()
        for name, value in want.items():
            assert torch.equal(got[name], value) if torch.is_tensor(value) else got[name] == value


# -- sample data ---------------------------------------------------------------------------
def test_sample_builder_writes_valid_shards(tmp_path):
    make_sample_main(["--out", str(tmp_path)])
    manifest = Manifest.load(tmp_path)
    train, val = manifest.splits["train"], manifest.splits["val"]
    assert (train.num_samples, len(train.shards), train.counts) == (160, 20, {"paired": 80, "music": 40, "motion": 40})
    assert (val.num_samples, len(val.shards), val.counts) == (40, 5, {"paired": 20, "music": 10, "motion": 10})
    assert manifest.codec["name"] == "synthetic-v1" and manifest.motion_tokenizer["name"] == "sample-lsh-v2"
    for split in ("train", "val"):
        loader = CodesLoader(tmp_path, split, batch_size=1, crop_frames=200, expect=EXPECT, verify=True)
        n = manifest.splits[split].num_samples
        batches = take(loader, n)
        assert len(set(keys_of(batches))) == n and dict(loader.stats.skipped) == {}
        for b in batches:
            for m in ("music", "motion"):
                if f"{m}_codes" in b:
                    assert bool(b[f"{m}_mask"].all()) and b[f"{m}_captions"][0] != ""
                    assert 0 <= int(b[f"{m}_codes"].min()) and int(b[f"{m}_codes"].max()) < 2048
    motion_codes = torch.cat([b["motion_codes"] for b in batches if "motion_codes" in b])
    assert len(torch.unique(motion_codes[:, 0])) > 50  # the LSH codes vary with the pose
    # rebuilding is byte-identical
    again = build_sample_shards(tmp_path / "again")
    assert [s.sha256 for s in again.splits["train"].shards] == [s.sha256 for s in train.shards]



def test_sample_motion_codes_are_what_prep_makes_of_the_clip():
    """The sample shards and build_shards with ``--motion-tokenizer sample-lsh`` tokenize motion alike: resampled
    60 -> 50 fps keeping the motion (not by interpolating velocities), then normalised."""
    from mumo_ds.data.pairing import Record, make_sample
    from mumo_ds.data.prep_motion import LSHMotionTokenizer, load_stats
    from mumo_ds.data.sample import CLIP_FPS, CLIP_NAME, SAMPLE_MOTION_DIR, load_clip_codes
    from mumo_ds.data.sample_codes import lsh_codes
    from mumo_ds.tokenizers.motion_features import resample_features, resample_features_naive

    clip = SAMPLE_MOTION_DIR / f"{CLIP_NAME}.npy"
    mean, std = load_stats(SAMPLE_MOTION_DIR / "Mean.npy", SAMPLE_MOTION_DIR / "Std.npy")
    want = lsh_codes((resample_features(np.load(clip), CLIP_FPS, 50) - mean) / std)
    naive = lsh_codes((resample_features_naive(np.load(clip), CLIP_FPS, 50) - mean) / std)
    assert want.shape == (4, 719 * 50 // 60) and (want != naive).mean() > 0.05  # the resampler shows in the codes
    _, motion = load_clip_codes()
    record = Record(index=0, line=1, id="clip", music=None, motion=str(clip), motion_fps=float(CLIP_FPS),
                    captions={"motion": "waacking"})
    prepped = make_sample(record, None, LSHMotionTokenizer(), mean, std)["motion"]
    np.testing.assert_array_equal(motion, want)
    np.testing.assert_array_equal(prepped, want)

def test_sample_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_sample_main(["--help"])
    assert exit_info.value.code == 0 and "--samples-per-shard" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        make_sample_main(["--out", "unused", "--val-every", "1"])  # would leave train empty (0: divide by zero)
    assert exit_info.value.code == 2 and "--val-every 1: must be >= 2" in capsys.readouterr().err


def test_generate_and_eval_check_the_model_format_and_codec_names(tmp_path):
    """Training, mumo-generate and mumo-eval read data through the same ``expect_for(model config)``, so
    codes from another codec are refused everywhere, not only in training."""
    from types import SimpleNamespace

    from mumo_ds.data import expect_for
    from mumo_ds.data.loader import EXPECT_KEYS
    from mumo_ds.eval.evaluate import conditions
    from mumo_ds.generate_cli import first_val_sample
    from mumo_ds.modeling import MuMoConfig

    with writer(tmp_path, split="val") as w:
        for key in ("v", "w"):  # two: the metrics need two clips per set
            w.write(key, music=codes(30), motion=codes(30, 7), meta={"captions": {"music": "a", "motion": "b"}})
    config = MuMoConfig.from_preset("tiny", music_codec="test-codec", motion_tokenizer="test-motion")
    assert set(expect_for(config)) == set(EXPECT_KEYS)
    args = SimpleNamespace(task="music2motion", data=str(tmp_path), batch_size=1, seconds=0.2, num_samples=2)
    assert first_val_sample(str(tmp_path), ("music",), 10, config)["music"].shape == (1, 4, 10)
    assert len(conditions(args, config)) == 2
    for field, value in (("music_codec", "encodec_32khz"), ("motion_tokenizer", "other-vqvae"), ("frame_rate", 30)):
        wrong = MuMoConfig.from_preset("tiny", **{**expect_for(config), field: value})
        with pytest.raises(ManifestError, match="mismatch"):
            first_val_sample(str(tmp_path), ("music",), 10, wrong)
        with pytest.raises(ManifestError, match="mismatch"):
            conditions(args, wrong)
