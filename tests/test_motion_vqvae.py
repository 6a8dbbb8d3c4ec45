"""Motion VQ-VAE: shapes, save/load, training on the bundled clip, exact resume, dead-code restart, codes CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep import motion_codes, train_motion_vqvae
from data_prep.train_motion_vqvae import WindowSampler, train_step
from mumo_ds.tokenizers.motion_codec import decode_batch
from mumo_ds.tokenizers.motion_features import load_features, load_stats, normalize, resample_features
from mumo_ds.tokenizers.motion_rvq import EMACodebook
from mumo_ds.tokenizers.motion_vqvae import MotionVQVAE, MotionVQVAEConfig

MOTION_DIR = Path(__file__).resolve().parents[1] / "data_prep" / "sample_data" / "motion"
CLIP = MOTION_DIR / "gWA_sBM_cAll_d25_mWA0_ch01.npy"  # AIST++ (CC BY 4.0), 60 fps


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is several times faster than two on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip50() -> np.ndarray:
    mean, std = load_stats(MOTION_DIR / "Mean.npy", MOTION_DIR / "Std.npy")
    return normalize(resample_features(load_features(CLIP), 60, 50), mean, std)  # [599, 263]


def tiny_model(seed: int = 0) -> MotionVQVAE:
    torch.manual_seed(seed)
    return MotionVQVAE(MotionVQVAEConfig.from_preset("tiny"))


def test_config_fields_and_presets():
    c = MotionVQVAEConfig.from_preset("tiny")
    assert c.model_type == "mumo_motion_vqvae"
    assert (c.feature_dim, c.frame_rate, c.num_quantizers, c.codebook_size) == (263, 50, 4, 2048)
    with pytest.raises(ValueError, match="unknown preset"):
        MotionVQVAEConfig.from_preset("huge")


def test_encode_shape_range_dtype_and_decode(clip50):
    model = tiny_model()
    x = torch.from_numpy(clip50[:100])[None].repeat(2, 1, 1)  # [2, 100, 263]
    out = model(x)
    model.update_codebooks(out["counts"], out["sums"], out["residuals"])  # codebooks from data
    codes = model.encode(x)
    assert codes.shape == (2, 4, 100) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 2048
    assert len(torch.unique(codes[0, 0])) > 1
    assert torch.equal(codes[0], codes[1])
    feats = model.decode(codes)
    assert feats.shape == (2, 100, 263)
    torch.testing.assert_close(feats, model(x)["reconstruction"].detach(), rtol=0, atol=1e-5)  # decode == forward path
    with pytest.raises(ValueError, match=r"expected \[B, T, 263\]"):
        model.encode(x[..., :262])
    with pytest.raises(ValueError, match="outside 0..2047"):
        model.decode(torch.full((1, 4, 5), 2048))


def test_save_load_roundtrip_is_exact(tmp_path, clip50):
    model = tiny_model()
    x = torch.from_numpy(clip50[:64])[None]
    out = model(x)
    model.update_codebooks(out["counts"], out["sums"], out["residuals"])
    model.set_feature_stats(torch.arange(263.0), torch.full((263,), 2.0))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = MotionVQVAE.from_pretrained(tmp_path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(loaded.config.to_dict()) == strip(model.config.to_dict())
    assert torch.equal(loaded.encode(x), model.encode(x))

    from transformers import AutoModel

    assert type(AutoModel.from_pretrained(tmp_path)) is MotionVQVAE


def test_tiny_model_learns_windows_of_the_clip(clip50):
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    sampler = WindowSampler([clip50], window=32, seed=0)
    fixed = torch.from_numpy(clip50[100:164])[None]  # [1, 64, 263]
    out = model(fixed)
    model.update_codebooks(out["counts"], out["sums"], out["residuals"])
    with torch.no_grad():
        before = model(fixed)["recon_loss"].item()
    losses = [train_step(model, model, optimizer, sampler.sample(8), 2e-3, 1.0, 1)["recon_loss"] for _ in range(25)]
    with torch.no_grad():
        after = model(fixed)["recon_loss"].item()
    assert after < 0.8 * before, (before, after)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_dead_codes_are_restarted_from_encoder_outputs():
    """8 codes: 0..3 sit on the data's 4 clusters, 4..7 far away and almost dead."""
    torch.manual_seed(0)
    cb = EMACodebook(size=8, dim=2, decay=0.9, eps=1e-5, dead_code_threshold=0.5)
    centers = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x = centers.repeat_interleave(16, 0) + 0.01 * torch.randn(64, 2)  # [64, 2]
    cb.codebook.copy_(torch.cat([centers, torch.full((4, 2), 100.0)]))
    cb.cluster_size.copy_(torch.tensor([10.0] * 4 + [0.5] * 4))  # 0.5 * 0.9 < 0.5 after one unused step
    cb.embed_sum.copy_(cb.codebook * cb.cluster_size[:, None])
    codes = cb.quantize(x)
    assert set(codes.tolist()) == {0, 1, 2, 3}  # the far codes are never chosen
    counts, sums = cb.statistics(x, codes)
    assert counts.tolist() == [16.0] * 4 + [0.0] * 4
    restarted = cb.update(counts, sums, x)
    assert restarted == 4
    rows = {tuple(r) for r in x.tolist()}
    for k in range(4, 8):
        assert tuple(cb.codebook[k].tolist()) in rows  # a recent encoder output, exactly
        assert cb.cluster_size[k].item() == 1.0
    for k in range(4):
        assert tuple(cb.codebook[k].tolist()) not in rows  # live codes follow the EMA, not restarted
        assert torch.linalg.norm(cb.codebook[k] - centers[k]) < 0.05
    # the restarted codes are data points, so they win their own points from now on
    assert len(set(cb.quantize(x).tolist()) - {0, 1, 2, 3}) > 0


def run_trainer(out: Path, steps: int, *extra: str) -> list[dict]:
    train_motion_vqvae.main(
        ["--preset", "tiny", "--out", str(out), "--steps", str(steps), "--window", "16", "--batch-size", "4",
         "--lr", "2e-3", "--warmup-steps", "2", "--save-every", "3", "--no-progress", *extra]
    )
    return [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]


def test_trainer_resume_reproduces_uninterrupted_losses(tmp_path):
    full = run_trainer(tmp_path / "full", 6)
    first = run_trainer(tmp_path / "resumed", 3)
    assert first == full[:3]
    resumed = run_trainer(tmp_path / "resumed", 6, "--resume")
    assert [m["step"] for m in resumed] == list(range(1, 7))
    assert [m["loss"] for m in resumed] == [m["loss"] for m in full]  # bit-exact fp32
    assert resumed == full
    ckpts = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert ckpts == ["step_00000003", "step_00000006"]
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints" / "step_00000006").iterdir()) == [
        "model.safetensors", "optimizer.json", "optimizer.safetensors", "rng_rank0.safetensors", "trainer_state.json"]
    report = json.loads((tmp_path / "full" / "report.json").read_text())
    assert report["step"] == 6 and report["mpjpe_mm"] > 0 and len(report["perplexity"]) == 4
    assert all(1.0 <= p <= 2048 for p in report["perplexity"])
    model = MotionVQVAE.from_pretrained(tmp_path / "full" / "model")
    assert model.feature_std[0].item() == pytest.approx(float(np.load(MOTION_DIR / "Std.npy")[0]))


def test_trainer_refuses_to_mix_two_runs_in_one_folder(tmp_path):
    out = tmp_path / "run"
    run_trainer(out, 3)
    with pytest.raises(ValueError, match="holds an earlier run's checkpoints; pass --resume to continue it, or --overwrite"):
        run_trainer(out, 2)
    with pytest.raises(ValueError, match="the run used --seed 0, this one --seed 7"):
        run_trainer(out, 6, "--resume", "--seed", "7")
    with pytest.raises(ValueError, match=r"the run's model differs in \['code_dim', 'dilations', 'hidden_size'\]"):
        run_trainer(out, 6, "--resume", "--preset", "small")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000003"]  # refused before any change
    std = tmp_path / "Std2.npy"
    np.save(std, np.load(MOTION_DIR / "Std.npy") * 2)
    with pytest.raises(ValueError, match=rf"other statistics than --mean .*Mean.npy / --std {std}"):
        run_trainer(out, 6, "--resume", "--std", str(std))
    with pytest.raises(ValueError, match="the run read its features at --fps 60.0, this one at --fps 30.0"):
        run_trainer(out, 6, "--resume", "--fps", "30")
    restarted = run_trainer(out, 2, "--overwrite")
    assert [m["step"] for m in restarted] == [1, 2]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002"]



def test_trainer_trains_at_the_models_frame_rate_as_encoding_reads(tmp_path):
    """Clips reach the trainer as features_to_codes reads them: resampled to config.frame_rate (not a fixed 50),
    and left as they are (contact labels included) when the input is at that rate already."""
    config = tmp_path / "rate.json"
    config.write_text(json.dumps({"frame_rate": 20}))
    run_trainer(tmp_path / "run20", 1, "--config", str(config), "--val-clips", "0")
    report = json.loads((tmp_path / "run20" / "report.json").read_text())
    assert report["train_frames"] + report["val_frames"] == 719 * 20 // 60  # 60 fps clip at 20 fps (a 50 fps run: 599)
    model = MotionVQVAE.from_pretrained(tmp_path / "run20" / "model")
    assert model.config.frame_rate == 20 and model.config.hidden_size == 32  # --preset tiny under the config's field
    mean, std = load_stats(MOTION_DIR / "Mean.npy", MOTION_DIR / "Std.npy")
    clip50 = resample_features(load_features(CLIP), 60, 50, contacts="nearest")  # labels a re-detection would change
    np.save(tmp_path / "clip50.npy", clip50)
    (prepared,) = train_motion_vqvae.prepare_clips([tmp_path / "clip50.npy"], 50, 50, mean, std)
    np.testing.assert_array_equal(prepared, normalize(clip50, mean, std))
    config.write_text(json.dumps({"frame_rate": 20, "hiden_size": 64}))
    with pytest.raises(ValueError, match=r"unknown MotionVQVAEConfig field\(s\) \['hiden_size'\]"):
        run_trainer(tmp_path / "typo", 1, "--config", str(config))


def test_codes_cli_encode_decode(tmp_path):
    run_trainer(tmp_path / "run", 2)
    model_dir = tmp_path / "run" / "model"
    codes_file, feats_file, joints_file = tmp_path / "codes.npy", tmp_path / "feats.npy", tmp_path / "joints.npy"
    motion_codes.main(["encode", "--model", str(model_dir), "--features", str(CLIP), "--fps", "60", "--out", str(codes_file)])
    codes = np.load(codes_file)
    assert codes.shape == (4, 599) and codes.dtype == np.int16 and 0 <= codes.min() and codes.max() < 2048
    motion_codes.main(["decode", "--model", str(model_dir), "--codes", str(codes_file),
                       "--out-features", str(feats_file), "--out-joints", str(joints_file)])
    assert np.load(feats_file).shape == (599, 263) and np.load(joints_file).shape == (599, 22, 3)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 200), np.float32))
    with pytest.raises(SystemExit, match="error: .*bad.npy"):
        motion_codes.main(["encode", "--model", str(model_dir), "--features", str(bad), "--fps", "60", "--out", str(codes_file)])
    np.save(bad, np.full((4, 20), 2048, np.int64))  # the MuMo pad id is not a motion code
    with pytest.raises(SystemExit, match=r"error: .*bad.npy: motion codes must lie in 0..2047, got 2048..2048"):
        motion_codes.main(["decode", "--model", str(model_dir), "--codes", str(bad), "--out-features", str(feats_file)])
    batch = torch.from_numpy(codes[None].astype(np.int64))
    assert decode_batch(MotionVQVAE.from_pretrained(model_dir), batch)[0].tolist() == np.load(feats_file).tolist()
    with pytest.raises(ValueError, match="has no feature statistics"):  # normalised features are not motion
        decode_batch(MotionVQVAE(MotionVQVAEConfig.from_preset("tiny")), batch)


@pytest.mark.distributed
def test_trainer_runs_under_torchrun_with_two_ranks(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "data_prep.train_motion_vqvae",
           "--preset", "tiny", "--out", str(out), "--steps", "2", "--window", "16", "--batch-size", "4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints" / "step_00000002").glob("rng_rank*")) == ["rng_rank0.safetensors", "rng_rank1.safetensors"]
    assert json.loads((out / "report.json").read_text())["world_size"] == 2
    assert [json.loads(x)["step"] for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_perplexity_counts_effective_codes():
    from mumo_ds.tokenizers.motion_metrics import perplexity

    assert perplexity(np.array([3, 3, 3]), 2048) == 1.0
    assert perplexity(np.arange(16), 2048) == pytest.approx(16.0)
    assert perplexity(np.array([0, 0, 0, 1]), 2048) == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))


def test_mpjpe_of_a_known_offset():
    """Raising the root height channel by 0.1 m moves only joint 0 (the other joints' Y is absolute): 100 mm / 22."""
    from mumo_ds.tokenizers.motion_metrics import mpjpe_mm

    feats = load_features(CLIP)[:100]
    assert mpjpe_mm(feats, feats) == {"mpjpe_mm": 0.0, "mpjpe_root_relative_mm": 0.0, "mpjpe_local_mm": 0.0}
    moved = feats.copy()
    moved[:, 3] += np.float32(0.1)
    m = mpjpe_mm(moved, feats)
    for name in ("mpjpe_mm", "mpjpe_local_mm"):
        assert m[name] == pytest.approx(100.0 / 22, rel=1e-4)
