"""mumo-eval over checkpoints, tables, plots, best pick and resume; rendering and loss plots."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from mumo_ds.data.sample import build_sample_shards
from mumo_ds.eval.evaluate import find_checkpoints, main
from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.modeling.text import load_tokenizer
from mumo_ds.viz.plots import plot_training_log
from mumo_ds.viz.render import find_ffmpeg, render_motion
from tests.conftest import save_tiny_vqvae
from tests.test_cli import tiny_codec
from tests.test_music_metrics import tiny_audio_classifier


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    build_sample_shards(root / "data")
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    for seed in (1, 2):
        torch.manual_seed(seed)
        config = MuMoConfig.from_preset("tiny", music_codec=manifest["codec"]["name"],
                                        motion_tokenizer=manifest["motion_tokenizer"]["name"])
        MuMoForConditionalGeneration(config).save_pretrained(root / "run" / f"epoch{seed:02d}")
        load_tokenizer("byt5").save_pretrained(root / "run" / f"epoch{seed:02d}")
    torch.manual_seed(0)
    save_tiny_vqvae(root / "vqvae")
    tiny_codec(root / "codec")
    return root


def test_mumo_eval_table_plots_best_and_resume(setup, tmp_path, capsys):
    args = ["--checkpoints", str(setup / "run" / "epoch*"), "--task", "music2motion", "--data", str(setup / "data"),
            "--seconds", "0.6", "--num-samples", "4", "--batch-size", "2", "--motion-vqvae", str(setup / "vqvae"),
            "--codec", str(setup / "codec"), "--out", str(tmp_path)]
    main(args)
    notes = capsys.readouterr().out  # this test's decoders are tiny random ones, not what made the sample codes
    assert "the model's codes come from 'synthetic-v1' (config.music_codec), --codec decodes 'encodec_32khz'" in notes
    rows = (tmp_path / "table.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["checkpoint", "fid_k", "div_k", "div_k_reference", "fid_m"]
    assert [r.split(",")[0] for r in rows[1:]] == ["epoch01", "epoch02"]
    result = json.loads((tmp_path / "results" / "epoch01.json").read_text())
    assert result["num_samples"] == 4 and result["fid_k"] >= 0 and 0 <= result["beat_align"] <= 1
    assert (tmp_path / "fid_k.png").stat().st_size > 1000
    assert "epoch01, gs4: fid_k" in (tmp_path / "table.md").read_text()
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["metric"] == "fid_k" and best["value"] == min(
        json.loads((tmp_path / "results" / f"{n}.json").read_text())["fid_k"] for n in ("epoch01", "epoch02"))
    # finished checkpoints are not recomputed
    marked = {**result, "fid_k": -1.0}
    (tmp_path / "results" / "epoch01.json").write_text(json.dumps(marked))
    main(args)
    assert json.loads((tmp_path / "best.json").read_text()) == {"metric": "fid_k", "checkpoint": "epoch01", "value": -1.0}
    # ... unless the evaluation settings changed: the table would mix them
    with pytest.raises(SystemExit, match=r"epoch01.json was computed with --seconds 0.6 \(now 0.4\): use another --out"):
        main([*args, "--seconds", "0.4"])
    with pytest.raises(SystemExit, match=r"epoch01.json was computed with --device cpu \(now meta\)"):
        main([*args, "--device", "meta"])  # a device that refuses before anything runs on it
    # ... or the checkpoint's files changed (a resumed run re-exported into the same folder)
    capsys.readouterr()
    weights = setup / "run" / "epoch01" / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    main(args)
    assert "epoch01: its files changed since" in capsys.readouterr().out
    assert json.loads((tmp_path / "results" / "epoch01.json").read_text())["fid_k"] == result["fid_k"]
    assert "files" not in (tmp_path / "table.csv").read_text()


def test_text2music_reports_fd_and_classifier_kl(setup, tmp_path):
    tiny_audio_classifier(tmp_path / "ast")
    main(["--checkpoints", str(setup / "run" / "epoch01"), "--task", "text2music", "--data", str(setup / "data"),
          "--seconds", "0.4", "--num-samples", "2", "--batch-size", "2", "--codec", str(setup / "codec"),
          "--classifier", str(tmp_path / "ast"), "--best-by", "kl", "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "results" / "epoch01.json").read_text())
    assert result["fd_encodec"] >= 0 and result["kl"] > 0 and result["fd_classifier"] > 0
    assert (tmp_path / "out" / "table.csv").read_text().splitlines()[0] == "checkpoint,fd_encodec,kl,fd_classifier"
    assert json.loads((tmp_path / "out" / "best.json").read_text())["metric"] == "kl"


def test_find_checkpoints_expands_runs(tmp_path):
    run = tmp_path / "run"
    for tag in ("step00000002", "step00000004"):
        (run / "checkpoints" / tag).mkdir(parents=True)
        (run / "checkpoints" / tag / "mp_rank_00_model_states.pt").write_bytes(b"")
    (run / "checkpoints" / "step00000006.tmp").mkdir()  # incomplete: no model states
    (run / "export").mkdir()
    (run / "export" / "config.json").write_text("{}")
    assert [p.name for p in find_checkpoints([str(run)])] == ["step00000002", "step00000004", "export"]
    with pytest.raises(FileNotFoundError, match="neither a run"):
        find_checkpoints([str(tmp_path / "nothing")])


def test_checkpoints_of_two_runs_or_two_model_folders_get_distinct_names(setup, tmp_path):
    from mumo_ds.eval.evaluate import checkpoint_names

    runs = [tmp_path / run / "checkpoints" / "step00000040" for run in ("runsA", "runsB")]
    runs.append(tmp_path / "runsA" / "checkpoints" / "step00000020")
    exports = [tmp_path / "runsA" / "export", tmp_path / "runsB" / "export"]
    assert checkpoint_names(runs + exports) == [
        "runsA-step00000040", "runsB-step00000040", "step00000020", "runsA-export", "runsB-export"]
    with pytest.raises(SystemExit, match="more than once"):
        checkpoint_names([runs[0], runs[0].parent / ".." / "checkpoints" / "step00000040"])
    # two HF folders both called `model`, with different weights: two rows, two results
    for parent, epoch in (("a", "epoch01"), ("b", "epoch02")):
        (tmp_path / parent).mkdir()
        (tmp_path / parent / "model").symlink_to(setup / "run" / epoch)
    args = ["--task", "music2motion", "--data", str(setup / "data"), "--seconds", "0.6", "--num-samples", "2",
            "--batch-size", "2", "--motion-vqvae", str(setup / "vqvae")]
    out = tmp_path / "out"
    main(["--checkpoints", str(tmp_path / "a" / "model"), str(tmp_path / "b" / "model"), "--out", str(out), *args])
    rows = (out / "table.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["a-model", "b-model"]
    a, b = (json.loads((out / "results" / f"{n}.json").read_text()) for n in ("a-model", "b-model"))
    assert a["checkpoint"] != b["checkpoint"] and a["fid_k"] != b["fid_k"]
    # across runs of mumo-eval: a result file is only reused for the checkpoint that wrote it
    main(["--checkpoints", str(tmp_path / "a" / "model"), "--out", str(out), *args])
    with pytest.raises(SystemExit, match=r"model\.json holds the result of .*epoch01, not of .*b/model"):
        main(["--checkpoints", str(tmp_path / "b" / "model"), "--out", str(out), *args])


def test_conditions_skip_clips_shorter_than_seconds_and_give_exactly_num_samples(tmp_path, capsys):
    """The loader pads a short clip with code 0 (mask False): such clips are left out, not generated over."""
    from types import SimpleNamespace

    from mumo_ds.data.sample_codes import MOTION_TOKENIZER, MUSIC_CODEC
    from mumo_ds.data.writer import ShardWriter
    from mumo_ds.eval.evaluate import conditions

    lengths = {"a": 30, "short1": 10, "b": 30, "c": 20, "short2": 19, "d": 40, "e": 30, "f": 20}
    with ShardWriter(tmp_path, "val", samples_per_shard=3, codec=MUSIC_CODEC, motion_tokenizer=MOTION_TOKENIZER) as w:
        for key, frames in lengths.items():
            clip = (np.arange(4 * frames).reshape(4, frames) % 2048).astype(np.int16)
            w.write(key, music=clip, motion=clip, meta={"captions": {"music": "m", "motion": "d"}})
    config = MuMoConfig.from_preset("tiny", music_codec=MUSIC_CODEC["name"], motion_tokenizer=MOTION_TOKENIZER["name"])
    args = SimpleNamespace(task="music2motion", data=str(tmp_path), batch_size=2, seconds=0.4, num_samples=3)
    batches = conditions(args, config)  # 0.4 s = 20 frames
    assert [k for b in batches for k in b["keys"]] == ["a", "b", "c"]
    assert all(b[f"{m}_mask"].all() and b[f"{m}_codes"].shape[0] == len(b["keys"])
               for b in batches for m in ("music", "motion"))
    assert "skipped 1 val clip(s) shorter than --seconds 0.4 (20 frames)" in capsys.readouterr().out
    args.num_samples = 10  # more than there are: all six long enough
    assert [k for b in conditions(args, config) for k in b["keys"]] == ["a", "b", "c", "d", "e", "f"]
    args.batch_size = 4  # 6 clips in batches of 4: the last, partial batch is kept
    assert [b["keys"] for b in conditions(args, config)] == [["a", "b", "c", "d"], ["e", "f"]]
    args.seconds = 1.0
    with pytest.raises(SystemExit, match=r"0 val clip\(s\) .* at least --seconds 1 long; FID/FD and diversity need 2"):
        conditions(args, config)
    args.seconds = 0.7  # only "d" (40 frames) is long enough: refused before any generation
    with pytest.raises(SystemExit, match=r"1 val clip\(s\) .* at least --seconds 0.7 long"):
        conditions(args, config)
    with pytest.raises(SystemExit, match="--num-samples 1: FID/FD and diversity need 2 or more"):
        main(["--checkpoints", "x", "--data", str(tmp_path), "--num-samples", "1", "--out", str(tmp_path / "o")])


def test_clips_whose_music_has_no_beats_are_left_out_of_beat_align(setup, tmp_path, monkeypatch):
    from mumo_ds.eval.motion_metrics import mean_beat_align

    assert mean_beat_align([np.array([]), np.array([1.0])], [np.array([1.0]), np.array([1.0])]) == (1.0, 1)
    score, skipped = mean_beat_align([np.array([])], [np.array([1.0])])
    assert np.isnan(score) and skipped == 1
    calls = []

    def first_silent(audio, rate):  # the first clip's music has no beats, the others two
        calls.append(audio)
        return np.array([]) if len(calls) == 1 else np.array([0.1, 0.3])

    monkeypatch.setattr("mumo_ds.eval.evaluate.music_beats", first_silent)
    args = ["--checkpoints", str(setup / "run" / "epoch01"), "--task", "music2motion", "--data", str(setup / "data"),
            "--seconds", "0.6", "--num-samples", "3", "--batch-size", "2", "--motion-vqvae", str(setup / "vqvae"),
            "--codec", str(setup / "codec")]
    main([*args, "--out", str(tmp_path / "one")])
    result = json.loads((tmp_path / "one" / "results" / "epoch01.json").read_text())
    assert len(calls) == 3 and result["num_samples"] == 3 and result["beat_align_skipped"] == 1
    assert 0 <= result["beat_align"] <= 1 and result["fid_k"] >= 0
    assert "beat_align_skipped" not in (tmp_path / "one" / "table.csv").read_text()
    # no clip with beats: NaN, and the other metrics are kept
    monkeypatch.setattr("mumo_ds.eval.evaluate.music_beats", lambda audio, rate: np.array([]))
    main([*args, "--out", str(tmp_path / "none")])
    result = json.loads((tmp_path / "none" / "results" / "epoch01.json").read_text())
    assert np.isnan(result["beat_align"]) and result["beat_align_skipped"] == 3 and result["fid_k"] >= 0
    # best.json passes over NaN rows (max() would keep a first NaN), and is not written when all are NaN
    from types import SimpleNamespace

    from mumo_ds.eval.evaluate import summarise

    rows = [("a", {"beat_align": float("nan")}), ("b", {"beat_align": 0.9}), ("c", {"beat_align": 0.7})]
    summary = SimpleNamespace(task="text2both", guidance_scale=4.0, best_by="beat_align")
    summarise(rows, summary, tmp_path)
    assert json.loads((tmp_path / "best.json").read_text()) == {"metric": "beat_align", "checkpoint": "b", "value": 0.9}
    summarise(rows[:1], summary, tmp_path)
    assert not (tmp_path / "best.json").exists()
    # a diversity is best nearest the reference set's (the noisiest checkpoint has the highest)
    from mumo_ds.eval.evaluate import pick_best

    rows = [("calm", {"div_k": 4.0, "div_k_reference": 9.0}), ("noisy", {"div_k": 14.0, "div_k_reference": 9.0}),
            ("close", {"div_k": 8.0, "div_k_reference": 9.0})]
    assert pick_best(rows, "div_k")[0] == "close"


def test_render_and_loss_plot(tmp_path):
    t = np.linspace(0, 1, 20)
    clip = np.zeros((20, 22, 3))
    clip[:, :, 1] = np.linspace(0, 1.6, 22)[None, :]
    clip[:, 20, 0] = np.sin(2 * np.pi * t) * 0.5
    gif = render_motion([clip, clip[::-1]], tmp_path / "grid.gif", fps=20, titles=["generated", "reference"])
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames == 20 and image.size == (512, 256)
    log = tmp_path / "metrics.jsonl"
    log.write_text("\n".join(json.dumps({"step": s, "loss": 8 - s, "val_loss_music": 9 - s}) for s in range(1, 6)))
    assert plot_training_log(log, tmp_path / "loss.png").stat().st_size > 1000


def _dance(frames: int = 30) -> np.ndarray:
    """Synthetic joints [T, 22, 3]: a vertical chain whose joint 20 (a wrist) waves."""
    clip = np.zeros((frames, 22, 3))
    clip[:, :, 1] = np.linspace(0, 1.6, 22)[None, :]
    clip[:, 20, 0] = np.sin(2 * np.pi * np.linspace(0, 1, frames)) * 0.5
    return clip


def _probe(path) -> str:
    """ffmpeg's description of a media file (``ffmpeg -i`` prints it on stderr and exits 1: no output named)."""
    import subprocess

    return subprocess.run([find_ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def _seconds(probe: str) -> float:
    hours, minutes, seconds = probe.split("Duration: ")[1].split(",")[0].split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_render_mp4_with_music(tmp_path):
    import soundfile as sf

    assert find_ffmpeg() is not None  # the test extra installs imageio-ffmpeg
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "music.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    mp4 = render_motion([_dance(), _dance()[::-1]], tmp_path / "dance.mp4", fps=30, titles=["a", "b"],
                        audio=tmp_path / "music.wav", size=128)
    assert mp4 == tmp_path / "dance.mp4" and sorted(p.name for p in tmp_path.iterdir()) == ["dance.mp4", "music.wav"]
    probe = _probe(mp4)
    video = [line for line in probe.splitlines() if "Stream #" in line and "Video:" in line]
    audio = [line for line in probe.splitlines() if "Stream #" in line and "Audio:" in line]
    assert len(video) == 1 and "Video: h264" in video[0] and "256x128" in video[0], probe
    assert len(audio) == 1 and "16000 Hz" in audio[0], probe
    assert 0.9 <= _seconds(probe) <= 1.1, probe  # 30 frames at 30 fps, 1 s of music


def test_render_mp4_without_music_and_failures(tmp_path, monkeypatch, capsys):
    mp4 = render_motion(_dance(), tmp_path / "solo.mp4", fps=30, size=128)
    probe = _probe(mp4)
    assert "Video: h264" in probe and "128x128" in probe and "Audio:" not in probe, probe
    assert 0.9 <= _seconds(probe) <= 1.1, probe
    # a failing ffmpeg (missing audio file) raises with its stderr and leaves the earlier file whole
    before = mp4.read_bytes()
    with pytest.raises(RuntimeError, match=r"(?s)ffmpeg failed writing .*solo\.mp4.*missing\.wav"):
        render_motion(_dance(), mp4, fps=30, audio=tmp_path / "missing.wav", size=128)
    assert mp4.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["solo.mp4"]
    # no ffmpeg at all: a GIF next to the requested MP4, with a note
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setitem(__import__("sys").modules, "imageio_ffmpeg", None)  # import -> ImportError
    assert find_ffmpeg() is None
    gif = render_motion(_dance(), tmp_path / "fallback.mp4", fps=30, size=128)
    assert gif == tmp_path / "fallback.gif" and gif.is_file() and not (tmp_path / "fallback.mp4").exists()
    assert "writing" in capsys.readouterr().out
    assert render_motion(_dance(), tmp_path / "UPPER.GIF", fps=30, size=64).is_file()  # the suffix in any case
    for args, message in (((_dance(), tmp_path / "x.avi"), "writes .gif or .mp4, not .avi"),
                          ((np.zeros((0, 22, 3)), tmp_path / "x.gif"), r"clip\(s\) \[0\] of 1 are empty"),
                          (([], tmp_path / "x.gif"), "no clips to render")):
        with pytest.raises(ValueError, match=message):
            render_motion(*args, fps=30)
    with pytest.raises(ValueError, match=r"1 title\(s\) for 2 clip\(s\)"):
        render_motion([_dance(), _dance()], tmp_path / "x.gif", fps=30, titles=["one"])
