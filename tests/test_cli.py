"""Command lines: --help everywhere, config precedence and readable refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mumo_ds.training.config import parse_config
from mumo_ds.training.engine import load_ds_config
from tests.conftest import save_tiny_vqvae

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["train.py", "-m mumo_ds.generate_cli", "-m data_prep.make_sample_shards"])
def test_help(module):
    proc = subprocess.run([sys.executable, *module.split(), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_run_file_then_command_line(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("max_steps: 7\nlr: 0.001\ncrop_frames: 100\n")
    cfg = parse_config(["--stage", "2", "--config", str(run), "--max-steps", "9", "--local_rank=1"])
    assert (cfg.stage, cfg.max_steps, cfg.lr, cfg.crop_frames, cfg.local_rank) == (2, 9, 0.001, 100, 1)
    run.write_text("max_stpes: 7\n")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['max_stpes'\]"):
        parse_config(["--stage", "1", "--config", str(run)])
    # YAML 1.1 reads 3e-4 as a string; hyphens as on the command line; the stage may come from the file
    run.write_text("stage: 2\nlr: 3e-4\ncrop-frames: 100\nresume: false\n")
    cfg = parse_config(["--config", str(run)])
    assert (cfg.stage, cfg.lr, cfg.crop_frames, cfg.resume) == (2, 3e-4, 100, False) and isinstance(cfg.lr, float)
    for text, message in (("resume: 'false'\n", r"resume: 'false' is not a bool; write it as true or false"),
                          ("max_steps: 1.5\n", r"max_steps: 1.5 is not an int"),
                          ("lr: fast\n", r"lr: 'fast' is not a float")):
        run.write_text(text)
        with pytest.raises(ValueError, match=rf"run.yaml: {message}"):
            parse_config(["--stage", "1", "--config", str(run)])


@pytest.mark.parametrize("argv,message", [
    ([], "--stage is required"),
    (["--stage", "1", "--log-every", "0"], "--log-every 0: must be >= 1"),
    (["--stage", "1", "--overwrite"], "--overwrite deletes a run folder's checkpoints only with --no-resume"),
])
def test_train_options_refused_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_help_shows_the_real_defaults_and_the_stage_config_is_found_from_anywhere(capsys, tmp_path, monkeypatch):
    from mumo_ds.training.config import TrainConfig

    with pytest.raises(SystemExit):
        parse_config(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-steps MAX_STEPS max steps (default: 100)" in text and "(default: None)" not in text
    monkeypatch.chdir(tmp_path)
    assert Path(TrainConfig(stage=1).resolve("ds_configs/zero2.json", None).ds_config) == REPO / "ds_configs" / "zero2.json"


def test_a_preset_applies_only_to_a_fresh_model():
    from mumo_ds.training.config import TrainConfig

    assert TrainConfig(stage=1).resolve("ds_configs/zero2.json", None).preset == "tiny"  # stage 1 starts fresh
    assert TrainConfig(stage=1, preset="small").resolve("ds_configs/zero2.json", None).preset == "small"
    with pytest.raises(ValueError, match=r"--preset small: .* starts from runs/stage1/export, whose size it keeps"):
        TrainConfig(stage=2, preset="small").resolve("ds_configs/zero2.json", "runs/stage1/export")
    fresh = TrainConfig(stage=2, preset="small", init_from="scratch").resolve("ds_configs/zero2.json", "runs/stage1/export")
    assert (fresh.init_from, fresh.preset) == ("scratch", "small")


def test_ds_config_batch_and_refusals(tmp_path):
    cfg = parse_config(["--stage", "1", "--ds-config", "ds_configs/zero3.json", "--micro-batch-size", "3", "--grad-accum", "2", "--max-steps", "50"])
    cfg.ds_config = str(REPO / cfg.ds_config)
    ds = load_ds_config(cfg, world_size=4, hidden_size=256)
    assert ds["train_batch_size"] == 3 * 2 * 4
    assert ds["scheduler"]["params"]["total_num_steps"] == 50
    zero = ds["zero_optimization"]  # "auto" buffer sizes follow the model width, as under HF Trainer
    assert (zero["reduce_bucket_size"], zero["stage3_prefetch_bucket_size"], zero["stage3_param_persistence_threshold"]) == (65536, 58982, 2560)
    with pytest.raises(ValueError, match=r"zero3.json: \['zero_optimization.reduce_bucket_size', .*given the model width"):
        load_ds_config(cfg, world_size=4)  # no width to size them from
    bad = json.loads((REPO / "ds_configs/zero2.json").read_text())
    bad["train_micro_batch_size_per_gpu"] = "auto"
    (tmp_path / "auto.json").write_text(json.dumps(bad))
    cfg.ds_config = str(tmp_path / "auto.json")
    with pytest.raises(ValueError, match=r"auto.json: \['train_micro_batch_size_per_gpu'\] = \"auto\""):
        load_ds_config(cfg, 1, hidden_size=64)
    bad["train_micro_batch_size_per_gpu"] = 2
    bad["zero_optimisation"] = {"stage": 2}
    (tmp_path / "typo.json").write_text(json.dumps(bad))
    cfg.ds_config = str(tmp_path / "typo.json")
    with pytest.raises(ValueError, match=r"unknown top-level key\(s\) \['zero_optimisation'\]"):
        load_ds_config(cfg, 1)
    del bad["zero_optimisation"]
    bad["activation_checkpointing"] = {"partition_activations": True}
    (tmp_path / "ac.json").write_text(json.dumps(bad))
    cfg.ds_config = str(tmp_path / "ac.json")
    with pytest.raises(ValueError, match=r"ac.json: \"activation_checkpointing\" would do nothing .* --activation-checkpointing"):
        load_ds_config(cfg, 1)


def test_every_shipped_ds_config_loads():
    for path in sorted((REPO / "ds_configs").glob("*.json")):
        cfg = parse_config(["--stage", "1", "--ds-config", str(path)])
        assert load_ds_config(cfg, 2, hidden_size=64)["train_batch_size"] >= 2


def tiny_codec(path):
    """A tiny random transformers EncodecModel (4 codebooks x 2048, 32 kHz), codebooks filled (notes/codecs.md)."""
    import torch
    from transformers import EncodecConfig, EncodecModel

    config = EncodecConfig(
        sampling_rate=32000, audio_channels=1, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048,
        target_bandwidths=[2.2], hidden_size=16, num_filters=4, num_lstm_layers=1, codebook_dim=16,
        normalize=False, use_causal_conv=False, norm_type="weight_norm",
    )
    torch.manual_seed(0)
    codec = EncodecModel(config)
    for layer in codec.quantizer.layers:
        layer.codebook.embed.normal_()
    codec.save_pretrained(path)


@pytest.mark.parametrize("task", ["text2both", "music2motion", "motion2music", "text2music"])
def test_generate_cli_writes_codes_and_audio(tiny_model, tmp_path, task):
    from mumo_ds.generate_cli import main
    from mumo_ds.modeling.text import load_tokenizer

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    load_tokenizer("byt5").save_pretrained(model_dir)
    tiny_codec(model_dir / "codec")
    given = tmp_path / "given.npy"
    np.save(given, (np.arange(4 * 6).reshape(4, 6) * 97 % 2048).astype(np.int16))
    save_tiny_vqvae(tmp_path / "vqvae")
    gives = task in ("music2motion", "motion2music")
    main(["--model", str(model_dir), "--task", task, "--seconds", "0.1", "--text", "a dance",
          *(["--given", str(given)] if gives else []), "--motion-vqvae", str(tmp_path / "vqvae"), "--out", str(tmp_path / "out")])
    out = tmp_path / "out"
    frames = 6 if task in ("music2motion", "motion2music") else 5
    streams = {"text2both": ("music", "motion"), "music2motion": ("music", "motion"),
               "motion2music": ("music", "motion"), "text2music": ("music",)}[task]
    for m in streams:
        codes = np.load(out / f"{m}.npy")
        assert codes.shape == (1, 4, frames) and codes.dtype == np.int16 and codes.min() >= 0 and codes.max() < 2048
    if "music" in streams:
        from scipy.io import wavfile

        rate, audio = wavfile.read(out / "music.wav")
        assert rate == 32000 and audio.shape == (frames * 640,)
    if "motion" in streams:
        assert np.load(out / "motion_features.npy").shape == (1, frames, 263)
        joints = np.load(out / "motion_joints.npy")
        assert joints.shape == (1, frames, 22, 3) and np.isfinite(joints).all()
    if task == "music2motion":
        assert np.array_equal(np.load(out / "music.npy")[0], np.load(given))
    record = json.loads((out / "generation.json").read_text())
    assert record["task"] == task and record["device"] == "cpu"  # --device defaults to cuda only where there is one
    if task == "text2both":  # a later run into the same --out leaves none of this one's files behind
        main(["--model", str(model_dir), "--task", "text2music", "--seconds", "0.1", "--out", str(out)])
        assert sorted(p.name for p in out.iterdir()) == ["generation.json", "music.npy", "music.wav"]
        with pytest.raises(SystemExit, match="--given is the given stream of music2motion"):  # not silently ignored
            main(["--model", str(model_dir), "--task", "text2music", "--given", str(given), "--out", str(out)])


@pytest.mark.parametrize("task", ["music2text", "motion2text"])
def test_generate_cli_captions(tmp_path, task):
    import torch

    from mumo_ds.generate_cli import main
    from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
    from mumo_ds.modeling.text import load_tokenizer

    torch.manual_seed(0)
    MuMoForConditionalGeneration(MuMoConfig.from_preset("tiny", captioning=True)).save_pretrained(tmp_path / "model")
    load_tokenizer("byt5").save_pretrained(tmp_path / "model")
    given = tmp_path / "given.npy"
    np.save(given, (np.arange(4 * 6).reshape(4, 6) * 97 % 2048).astype(np.int16))
    main(["--model", str(tmp_path / "model"), "--task", task, "--given", str(given), "--num-beams", "2",
          "--max-new-tokens", "5", "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "captions.json").read_text())
    assert result["task"] == task and len(result["captions"]) == 1 and isinstance(result["captions"][0], str)


def test_lr_schedule_option_replaces_the_config_scheduler():
    args = ["--stage", "1", "--ds-config", str(REPO / "ds_configs/zero2.json"), "--max-steps", "40", "--warmup-steps", "5"]
    ds = load_ds_config(parse_config([*args, "--lr-schedule", "cosine", "--min-lr-ratio", "0.05"]), 1, 64)
    assert ds["scheduler"] == {"type": "WarmupCosineLR", "params": {
        "total_num_steps": 40, "warmup_num_steps": 5, "warmup_min_ratio": 0.0, "cos_min_ratio": 0.05, "warmup_type": "linear"}}
    assert load_ds_config(parse_config(args), 1, 64)["scheduler"]["type"] == "WarmupDecayLR"  # the config's own
    with pytest.raises(ValueError, match=r"--lr-schedule 'cosin': choose 'linear' or 'cosine'"):
        load_ds_config(parse_config([*args, "--lr-schedule", "cosin"]), 1, 64)


def test_compile_choice_follows_the_device():
    import torch

    from mumo_ds.training.engine import wants_compile

    assert not wants_compile("auto", torch.device("cpu")) and wants_compile("auto", torch.device("cuda", 0))
    assert wants_compile("on", torch.device("cpu")) and not wants_compile("off", torch.device("cuda"))
    with pytest.raises(ValueError, match=r"--compile 'yes': choose 'auto', 'on' or 'off'"):
        wants_compile("yes", torch.device("cpu"))


@pytest.mark.parametrize("schedule", ["WarmupLR", "WarmupDecayLR", "WarmupCosineLR"])
def test_only_the_first_update_runs_at_the_warmup_minimum(schedule):
    import torch
    from deepspeed.runtime import lr_schedules

    from mumo_ds.training.engine import start_schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    params = {"warmup_num_steps": 2, "warmup_type": "linear"}
    if schedule == "WarmupCosineLR":
        params.update(total_num_steps=10, warmup_min_ratio=0.0)
    else:
        params.update(warmup_min_lr=0.0, warmup_max_lr=1.0, **({"total_num_steps": 10} if schedule == "WarmupDecayLR" else {}))
    scheduler = getattr(lr_schedules, schedule)(opt, **params)
    start_schedule(scheduler)
    used = []
    for _ in range(3):  # the lr of each update: read before the step, as DeepSpeed's engine steps the scheduler after it
        used.append(opt.param_groups[0]["lr"])
        scheduler.step()
    assert used[:2] == pytest.approx([0.0, 0.5]) and used[2] > 0.95  # the peak (cosine: its decay has begun)
