"""Data prep at scale: pairing, deterministic resumable shards, rejects, merge, validation, Slurm script.

One small input set (tiny random EnCodec, the sample clip's motion features, the weightless
LSH motion tokenizer) holds good records of every kind and one record of each kind of bad input.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_music_codec import make_tiny_encodec, write_audio

from mumo_ds.data import CodesLoader, Manifest
from mumo_ds.data.check_shards import check_dir
from mumo_ds.data.pairing import Record, make_sample
from mumo_ds.data.prep import MergeError, PrepSettings, merge, plan_shards, run_task
from mumo_ds.data.prep_motion import LSHMotionTokenizer, load_stats
from mumo_ds.data.sample import CLIP_NAME, SAMPLE_MOTION_DIR
from mumo_ds.data.sample_codes import lsh_codes
from mumo_ds.data.writer import npy_bytes, write_shard
from mumo_ds.tokenizers.audio_io import load_mono
from mumo_ds.tokenizers.motion_features import resample_features
from mumo_ds.tokenizers.music_codec import MusicTokenizer

REPO = Path(__file__).resolve().parents[1]
EXPECTED_REJECTS = {  # record index -> (id, reason, file name that the message must name)
    3: ("bad_audio", "unreadable_audio", "junk.wav"),
    4: ("trunc", "truncated_audio", "cut.wav"),
    5: ("silent", "silent_audio", "silent.wav"),
    6: ("nan", "bad_motion_values", "nan.npy"),
    7: ("wide", "bad_feature_width", "wide.npy"),
    8: ("nocap", "empty_caption", None),
    9: ("missing", "missing_file", "nothing.wav"),
    10: (None, "bad_record", None),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """records.jsonl with 12 records (4 good, 8 bad), the codec folder and motion stats."""
    root = tmp_path_factory.mktemp("prep_inputs")
    codec = make_tiny_encodec(root / "encodec")
    feats = np.load(SAMPLE_MOTION_DIR / f"{CLIP_NAME}.npy")[:150].astype(np.float32)  # [150, 263] at 60 fps
    (root / "motion").mkdir()
    np.save(root / "motion" / "a.npy", feats)
    bad = feats.copy()
    bad[7, 11] = np.nan
    bad[9, 0] = np.inf
    np.save(root / "motion" / "nan.npy", bad)
    np.save(root / "motion" / "wide.npy", np.zeros((150, 264), np.float32))
    (root / "audio").mkdir()
    write_audio(root / "audio" / "a.wav", 3.0)
    write_audio(root / "audio" / "b44.flac", 1.5, 44100, 2, seed=3)
    write_audio(root / "audio" / "c.wav", 2.0, 48000, seed=4)
    (root / "audio" / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 40)
    full = write_audio(root / "audio" / "full.wav", 1.0)
    (root / "audio" / "cut.wav").write_bytes(full.read_bytes()[:20000])
    sf.write(str(root / "audio" / "silent.wav"), np.zeros(32000, np.float32), 32000)
    mot = {"path": "motion/a.npy", "fps": 60}
    caps = {"music": "funk with horns", "motion": "waacking arm whips"}
    lines = [
        {"id": "p0", "music": "audio/a.wav", "motion": mot, "captions": caps, "offsets": {"music_seconds": 0.5, "motion_seconds": 0.3}},
        {"id": "m1", "music": "audio/b44.flac", "motion": None, "captions": {"music": "stereo jazz"}},
        {"id": "n2", "music": None, "motion": "motion/a.npy", "motion_fps": 60, "captions": {"motion": "a dance"}},
        {"id": "bad_audio", "music": "audio/junk.wav", "captions": {"music": "x"}},
        {"id": "trunc", "music": "audio/cut.wav", "captions": {"music": "x"}},
        {"id": "silent", "music": "audio/silent.wav", "captions": {"music": "x"}},
        {"id": "nan", "motion": {"path": "motion/nan.npy", "fps": 60}, "captions": {"motion": "x"}},
        {"id": "wide", "motion": {"path": "motion/wide.npy", "fps": 60}, "captions": {"motion": "x"}},
        {"id": "nocap", "music": "audio/a.wav", "motion": mot, "captions": {"music": "ok", "motion": "  "}},
        {"id": "missing", "music": "audio/nothing.wav", "captions": {"music": "x"}},
        None,  # a line that is not JSON
        {"id": "p11", "music": "audio/c.wav", "motion": mot, "captions": caps, "duration": 1.5},
    ]
    text = "".join(("{not json" if r is None else json.dumps(r)) + "\n" for r in lines)
    (root / "records.jsonl").write_text(text)
    mean, std = load_stats(SAMPLE_MOTION_DIR / "Mean.npy", SAMPLE_MOTION_DIR / "Std.npy")
    music_tok = MusicTokenizer("encodec_32khz", codec)  # shared: the model loads once for all builds
    return {"root": root, "jsonl": root / "records.jsonl", "codec": codec, "mean": mean, "std": std, "feats": feats,
            "music_tok": music_tok}


def build(inputs, out: Path, *, num_tasks: int = 1, task_ids=None, workers: int = 1, do_merge: bool = True):
    music_tok = inputs["music_tok"]
    settings = PrepSettings(split="train", samples_per_shard=3, num_tasks=num_tasks, min_frames=10,
                            codec=music_tok.info, codec_settings={"model": str(inputs["codec"])},
                            motion_tokenizer=LSHMotionTokenizer.info)
    reports = [
        run_task(inputs["jsonl"], out, settings, music_tok=music_tok, motion_tok=LSHMotionTokenizer(),
                 mean=inputs["mean"], std=inputs["std"], task_id=k, workers=workers)
        for k in (range(num_tasks) if task_ids is None else task_ids)
    ]
    if do_merge:
        merge(out, "train")
    return reports


def read_shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    build(inputs, out)
    return out


def test_plan_is_deterministic_contiguous_and_strided_by_task():
    assert [(s.index, s.task, s.records) for s in plan_shards(7, 2, 2)] == [
        (0, 0, (0, 2)), (1, 0, (4, 6)), (2, 1, (1, 3)), (3, 1, (5,))]
    assert [s.records for s in plan_shards(5, 2)] == [(0, 1), (2, 3), (4,)]
    plan = plan_shards(1000, 7, 13)
    assert sorted(i for s in plan for i in s.records) == list(range(1000))
    assert all(i % 13 == s.task for s in plan for i in s.records)


def test_build_writes_valid_shards_manifest_and_lists_every_bad_input(built, inputs):
    manifest = Manifest.load(built)
    assert manifest.codec == {"name": "encodec_32khz", "sample_rate": 32000, "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}
    assert manifest.motion_tokenizer["name"] == "sample-lsh-v2"
    train = manifest.splits["train"]
    # shards 1 and 2 hold only bad records, so they are not written
    assert [s.name for s in train.shards] == ["train-000000.tar", "train-000003.tar"]
    assert train.num_samples == 4 and train.counts == {"paired": 2, "music": 1, "motion": 1}
    rejects = [json.loads(line) for line in (built / "rejects.jsonl").read_text().splitlines()]
    assert {r["index"]: (r["id"], r["reason"]) for r in rejects} == {i: v[:2] for i, v in EXPECTED_REJECTS.items()}
    for r in rejects:
        name = EXPECTED_REJECTS[r["index"]][2]
        if name:
            assert r["file"].endswith(name) and name in r["message"], r
    assert {r["id"]: r["line"] for r in rejects}["nan"] == 7
    assert "records.jsonl:11" in next(r["message"] for r in rejects if r["index"] == 10)
    assert "captions.motion" in next(r["message"] for r in rejects if r["id"] == "nocap")
    assert not list(built.glob("*.partial"))
    assert check_dir(built) == []
    batch = next(iter(CodesLoader(built, "train", batch_size=1, crop_frames=20, shuffle=False)))
    assert batch is not None


def _samples(out: Path) -> dict[str, dict]:
    import tarfile

    samples: dict[str, dict] = {}
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar:
                key, _, ext = m.name.partition(".")
                data = tar.extractfile(m).read()
                samples.setdefault(key, {})[ext] = json.loads(data) if ext == "json" else np.load(__import__("io").BytesIO(data))
    return samples


def test_paired_streams_share_one_timeline(built, inputs):
    s = _samples(built)
    assert set(s) == {"p0", "m1", "n2", "p11"}
    p0 = s["p0"]
    # motion: 150 frames at 60 fps -> 125 at 50 fps, from frame round(0.3 * 50) = 15 -> 110 frames
    motion50 = resample_features(inputs["feats"], 60, 50)
    np.testing.assert_array_equal(p0["motion.npy"], lsh_codes((motion50[15:] - inputs["mean"]) / inputs["std"]))
    # music: the audio from 0.5 s (the same instant), cut to the motion's 110 frames
    tok = inputs["music_tok"]
    audio = load_mono(inputs["root"] / "audio" / "a.wav", 32000)[16000 : 16000 + 110 * 640]
    np.testing.assert_array_equal(p0["music.npy"], tok.encode([audio])[0])
    assert p0["json"]["captions"] == {"music": "funk with horns", "motion": "waacking arm whips"}
    assert p0["json"]["offsets"] == {"music": 0.5, "motion": 0.3} and p0["json"]["fps"] == 50
    assert p0["json"]["source"] == {"id": "p0", "music": "audio/a.wav", "motion": "motion/a.npy"}
    assert s["p11"]["music.npy"].shape == s["p11"]["motion.npy"].shape == (4, 75)  # duration 1.5 s
    assert s["m1"]["music.npy"].shape == (4, 75) and set(s["m1"]["json"]["captions"]) == {"music"}  # 1.5 s at 44.1 kHz
    assert s["n2"]["motion.npy"].shape == (4, 125) and "music.npy" not in s["n2"]


def test_workers_and_task_order_do_not_change_the_bytes(inputs, tmp_path):
    # A process pool gives the same bytes as one process. Motion-only records keep the spawned
    # workers from importing transformers (seconds each); the pool code path is the same.
    lines = [json.dumps({"id": f"n{i}", "motion": {"path": str(inputs["root"] / "motion" / name), "fps": 60 - i},
                         "captions": {"motion": f"dance {i}"}})
             for i, name in enumerate(["a.npy", "nan.npy", "a.npy", "a.npy", "wide.npy", "a.npy", "a.npy"])]
    motion_only = dict(inputs, jsonl=tmp_path / "motion.jsonl")
    motion_only["jsonl"].write_text("\n".join(lines) + "\n")
    build(motion_only, tmp_path / "one", workers=1)
    build(motion_only, tmp_path / "pool", workers=2)
    assert len(read_shards(tmp_path / "one")) == 3
    assert read_shards(tmp_path / "pool") == read_shards(tmp_path / "one")
    assert (tmp_path / "pool" / "manifest.json").read_text() == (tmp_path / "one" / "manifest.json").read_text()
    assert (tmp_path / "pool" / "rejects.jsonl").read_text() == (tmp_path / "one" / "rejects.jsonl").read_text()
    # two array tasks, run in reverse order: the merge refuses until every task is done
    out = tmp_path / "array"
    build(inputs, out, num_tasks=2, task_ids=[1], do_merge=False)
    with pytest.raises(MergeError, match=r"train-000000.tar \(task 0\).*--task-id K --num-tasks 2"):
        merge(out, "train")
    build(inputs, out, num_tasks=2, task_ids=[0])
    train = Manifest.load(out).splits["train"]
    assert train.num_samples == 4 and train.counts == {"paired": 2, "music": 1, "motion": 1}
    assert len((out / "rejects.jsonl").read_text().splitlines()) == len(EXPECTED_REJECTS)
    assert check_dir(out) == []


def test_rerun_skips_complete_shards_and_rebuilds_changed_ones(inputs, tmp_path):
    out = tmp_path / "resume"
    build(inputs, out)
    before = read_shards(out)
    (report,) = build(inputs, out)
    assert report.written == [] and len(report.skipped) == 4
    (out / "train-000000.tar").write_bytes(b"garbage")  # damaged shard
    (report,) = build(inputs, out)
    assert report.written == ["train-000000.tar"]
    assert read_shards(out) == before
    os.utime(inputs["root"] / "audio" / "c.wav", ns=(1, 1))  # an input of shard 3 changed
    (report,) = build(inputs, out)
    assert report.written == ["train-000003.tar"]
    assert check_dir(out) == []
    weights = next(p for p in Path(inputs["codec"]).iterdir() if p.suffix == ".safetensors")
    stat = weights.stat()
    try:
        os.utime(weights, ns=(1, 1))  # the codec retrained into the same folder: every shard is stale
        (report,) = build(inputs, out)
        assert len(report.written) == 4 and report.skipped == []
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))




def test_a_motion_vqvae_normalises_with_the_statistics_it_was_trained_with(inputs, tmp_path, capsys):
    import torch

    from data_prep.build_shards import main
    from mumo_ds.tokenizers.motion_codec import features_to_codes
    from mumo_ds.tokenizers.motion_vqvae import MotionVQVAE, MotionVQVAEConfig

    torch.manual_seed(0)
    model = MotionVQVAE(MotionVQVAEConfig.from_preset("tiny")).eval()
    model.set_feature_stats(torch.from_numpy(inputs["mean"]), torch.from_numpy(inputs["std"]))
    model.save_pretrained(tmp_path / "vqvae")
    args = ["--input", str(inputs["jsonl"]), "--codec-model", str(inputs["codec"]), "--motion-model", str(tmp_path / "vqvae")]
    assert main([*args, "--out", str(tmp_path / "own")]) == 0  # no --motion-mean/--motion-std: the model's own
    np.testing.assert_array_equal(_samples(tmp_path / "own")["n2"]["motion.npy"], features_to_codes(model, inputs["feats"], 60))
    np.save(tmp_path / "Std2.npy", inputs["std"] * 2)
    assert main([*args, "--out", str(tmp_path / "other"), "--motion-mean", str(SAMPLE_MOTION_DIR / "Mean.npy"),
                 "--motion-std", str(tmp_path / "Std2.npy")]) == 2
    assert "differ from the statistics --motion-model" in capsys.readouterr().err and not (tmp_path / "other").exists()
    from mumo_ds.data.prep_motion import VQVAEMotionTokenizer

    MotionVQVAE(MotionVQVAEConfig.from_preset("tiny", num_quantizers=2, codebook_size=512)).save_pretrained(tmp_path / "vq2")
    info = VQVAEMotionTokenizer(tmp_path / "vq2").info  # the format its config says, not always 4 x 2048
    assert (info["name"], info["num_codebooks"], info["codebook_size"]) == ("motion-vqvae:vq2", 2, 512)

def test_a_tokenizer_off_the_shared_frame_rate_is_refused():
    codec_24khz = {"name": "encodec_24khz", "frame_rate": 75, "num_codebooks": 4, "codebook_size": 1024}
    with pytest.raises(ValueError, match=r"--codec 'encodec_24khz' makes 75 frames/s, the shards' timeline is 50"):
        PrepSettings(split="train", samples_per_shard=3, codec=codec_24khz, motion_tokenizer=LSHMotionTokenizer.info)
    with pytest.raises(ValueError, match=r"--motion-tokenizer 'sample-lsh-v2' makes 50 frames/s, .* is 75"):
        PrepSettings(split="train", samples_per_shard=3, frame_rate=75, codec=codec_24khz,
                     motion_tokenizer=LSHMotionTokenizer.info)


def test_a_relative_input_path_merges_with_its_rejects(inputs, tmp_path, monkeypatch):
    """Rejects name the input file; the build must name it as the merge does (resolved), or every shard with a reject
    looks stale to the merge."""
    music_tok = inputs["music_tok"]
    settings = PrepSettings(split="train", samples_per_shard=3, min_frames=10, codec=music_tok.info,
                            codec_settings={"model": str(inputs["codec"])}, motion_tokenizer=LSHMotionTokenizer.info)
    monkeypatch.chdir(inputs["root"])
    run_task(Path("records.jsonl"), tmp_path / "out", settings, music_tok=music_tok, motion_tok=LSHMotionTokenizer(),
             mean=inputs["mean"], std=inputs["std"])
    assert merge(tmp_path / "out", "train").splits["train"].num_samples == 4
    assert len((tmp_path / "out" / "rejects.jsonl").read_text().splitlines()) == len(EXPECTED_REJECTS)

def test_a_failure_while_writing_leaves_no_partial_shard(inputs, tmp_path, monkeypatch):
    import webdataset

    calls = {"n": 0}
    real_write = webdataset.TarWriter.write

    def failing_write(self, obj):
        calls["n"] += 1
        if calls["n"] == 4:  # the first sample of the second written shard
            raise OSError("No space left on device")
        return real_write(self, obj)

    monkeypatch.setattr(webdataset.TarWriter, "write", failing_write)
    out = tmp_path / "crash"
    with pytest.raises(OSError, match="No space left"):
        build(inputs, out)
    assert [p.name for p in out.iterdir() if p.suffix in (".tar", ".partial")] == ["train-000000.tar"]
    assert not (out / "manifest.json").exists()
    monkeypatch.setattr(webdataset.TarWriter, "write", real_write)
    (report,) = build(inputs, out)
    assert report.skipped[0] == "train-000000.tar" and "train-000003.tar" in report.written
    assert check_dir(out) == []


def test_validate_shards_reports_each_kind_of_damage(built, tmp_path, capsys):
    from data_prep.validate_shards import main

    out = tmp_path / "damaged"
    out.mkdir()
    for p in built.iterdir():
        if p.is_file():
            (out / p.name).write_bytes(p.read_bytes())
    assert main([str(out)]) == 0
    # a shard with wrong dtype, a paired length mismatch, a caption of an absent stream; manifest sha updated to match
    bad = [
        {"__key__": "a", "json": b'{"captions": {"music": "x"}}', "music.npy": npy_bytes(np.zeros((4, 5), np.int32))},
        {"__key__": "b", "json": b'{"captions": {"music": "x", "motion": "y"}}',
         "music.npy": npy_bytes(np.zeros((4, 5), np.int16)), "motion.npy": npy_bytes(np.zeros((4, 6), np.int16))},
        {"__key__": "c", "json": b'{"captions": {"music": "x"}}', "motion.npy": npy_bytes(np.full((4, 5), 2048, np.int16))},
    ]
    info = write_shard(out / "train-000003.tar", bad)
    manifest = Manifest.load(out)
    manifest.splits["train"].shards[1] = info
    manifest.save(out)
    (out / "train-000000.tar").write_bytes((out / "train-000000.tar").read_bytes()[:-512] + b"x" * 512)
    (out / "train-000009.tar.partial").write_bytes(b"")
    assert main([str(out)]) == 1
    text = capsys.readouterr().out
    for expected in ("train-000000.tar: sha256", "sample 'a', music.npy: dtype int32", "paired lengths differ",
                     "values 2048..2048", "sample 'c', json.captions: {'music': 'x'}; expected a dict mapping each present modality (motion)", "train-000009.tar.partial: partial shard",
                     "split 'train' counts"):
        assert expected in text, expected
    (out / "train-000003.tar").unlink()
    assert any("train-000003.tar: listed in the manifest but missing" in p for p in check_dir(out))


def test_build_shards_cli_runs_and_merges(inputs, tmp_path, capsys, monkeypatch):
    from data_prep.build_shards import main

    out = tmp_path / "cli"
    args = ["--input", str(inputs["jsonl"]), "--out", str(out), "--samples-per-shard", "6", "--min-seconds", "0.2",
            "--codec-model", str(inputs["codec"]), "--motion-tokenizer", "sample-lsh",
            "--motion-mean", str(SAMPLE_MOTION_DIR / "Mean.npy"), "--motion-std", str(SAMPLE_MOTION_DIR / "Std.npy")]
    assert main(args + ["--num-tasks", "2", "--task-id", "0", "--no-merge"]) == 0
    assert main(["--out", str(out), "--merge"]) == 1
    assert "task 1" in capsys.readouterr().err
    assert main(args + ["--num-tasks", "2", "--task-id", "1", "--no-merge"]) == 0
    assert main(["--out", str(out), "--merge"]) == 0
    assert Manifest.load(out).splits["train"].num_samples == 4
    assert check_dir(out) == []
    # configuration errors stop before any work, with the option to fix
    assert main(["--input", str(inputs["jsonl"]), "--out", str(tmp_path / "nocodec"), "--motion-tokenizer", "sample-lsh"]) == 2
    assert "records have music but no music tokenizer is configured; pass --codec-model" in capsys.readouterr().err
    assert main(["--input", str(inputs["jsonl"]), "--out", str(tmp_path / "nostats"), "--codec-model", str(inputs["codec"]),
                 "--motion-tokenizer", "sample-lsh"]) == 2
    assert "no Mean/Std to normalise it; pass --motion-mean and --motion-std" in capsys.readouterr().err
    assert main(args[:4] + ["--split", "train-hard"]) == 2  # its shard names would be taken for train's
    assert "--split: split 'train-hard': use a plain name" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "encodec", None)  # as if the extra were not installed
    assert main(["--input", str(inputs["jsonl"]), "--out", str(tmp_path / "x"), "--codec", "encodec_24khz"]) == 2
    assert "needs the optional encodec package" in capsys.readouterr().err


def test_slurm_script_parses_and_builds_the_right_commands(tmp_path):
    script = REPO / "slurm" / "prep.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = dict(os.environ, PYTHON="echo", PREP_MODE="task", SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="8")
    run = subprocess.run([str(script), "--", "--input", "r.jsonl", "--out", "o"], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["-m", "data_prep.build_shards", "--input", "r.jsonl", "--out", "o",
                                  "--task-id", "3", "--num-tasks", "8", "--no-merge"]
    env["PREP_MODE"] = "merge"
    run = subprocess.run([str(script), "--", "--out", "o"], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["-m", "data_prep.build_shards", "--out", "o", "--merge"]
    bad = subprocess.run([str(script), "--tasks", "0", "--", "--out", "o"], env=dict(os.environ), capture_output=True, text=True)
    assert bad.returncode == 2 and "--tasks must be a positive integer" in bad.stderr


class MisbehavingTokenizer:
    """A stand-in motion tokenizer: raises on 150-frame input, emits out-of-range int64 codes on 125 frames."""

    name = "misbehaving"
    info = {"name": "misbehaving", "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}

    def encode(self, feats):
        if feats.shape[0] == 150:
            raise RuntimeError("boom")
        return np.full((4, feats.shape[0]), 65536 + 7 if feats.shape[0] == 125 else 7, np.int64)  # int16 would wrap to 7


def test_tokenizer_bugs_and_bad_codes_are_rejected_and_the_run_goes_on(inputs, tmp_path):
    path = str(inputs["root"] / "motion" / "a.npy")
    (tmp_path / "r.jsonl").write_text("".join(
        json.dumps({"id": f"n{fps}", "motion": {"path": path, "fps": fps}, "captions": {"motion": "x"}}) + "\n"
        for fps in (50, 60, 30)))
    settings = PrepSettings(split="val", samples_per_shard=8, motion_tokenizer=MisbehavingTokenizer.info)
    report = run_task(tmp_path / "r.jsonl", tmp_path / "out", settings, motion_tok=MisbehavingTokenizer(),
                      mean=inputs["mean"], std=inputs["std"])
    assert report.samples == 1 and report.rejects == 2
    merge(tmp_path / "out", "val")
    rejects = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "rejects.jsonl").read_text().splitlines())}
    assert rejects["n50"]["reason"] == "error" and rejects["n50"]["message"] == "RuntimeError: boom"
    assert rejects["n60"]["reason"] == "range" and "motion.npy: values span 65543..65543" in rejects["n60"]["message"]
    assert _samples(tmp_path / "out")["n30"]["motion.npy"].shape == (4, 250)  # 150 frames at 30 fps: 5 s at 50 fps


def test_an_offset_between_motion_frames_moves_the_audio_cut_with_it(inputs):
    root = inputs["root"]
    rec = Record(index=0, line=1, id="x", music=str(root / "audio" / "a.wav"), motion=str(root / "motion" / "a.npy"),
                 motion_fps=60.0, captions={"music": "m", "motion": "d"}, music_offset=0.5, motion_offset=0.31)
    tok = inputs["music_tok"]
    sample = make_sample(rec, tok, LSHMotionTokenizer(), inputs["mean"], inputs["std"])
    # motion starts at frame round(0.31 * 50) = 16 (0.32 s), so the audio starts 0.01 s later too: 0.51 s
    assert sample["meta"]["offsets"] == {"music": 0.51, "motion": 0.32}
    num_frames = sample["motion"].shape[1]
    assert num_frames == 125 - 16 == sample["music"].shape[1]
    audio = load_mono(root / "audio" / "a.wav", 32000)[16320 : 16320 + num_frames * 640]
    np.testing.assert_array_equal(sample["music"], tok.encode([audio])[0])
