"""Stage loss weights, --dry-run, memory/MFU/validation in the logs, and the non-finite loss guard."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from mumo_ds.training import checkpoint
from mumo_ds.training.stages import STAGES, Stage, loss_weights
from tests.test_training import BIN, REPO, free_port, sample_data  # noqa: F401  (fixture)

COMMON = ["--stage", "2", "--init-from", "scratch", "--ds-config", "ds_configs/zero2.json", "--crop-frames", "48",
          "--micro-batch-size", "2", "--lr", "3e-3", "--warmup-steps", "1"]


def torchrun(nproc: int, *args: str, fault: str = "") -> subprocess.CompletedProcess:
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", str(free_port()), "train.py", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "MUMO_FAULT": fault}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_stage_loss_weights_override_the_model_config():
    model = {"music": 0.5, "motion": 0.5}
    assert loss_weights(STAGES[2], model) == {"music": 0.85, "motion": 0.15}
    assert loss_weights(STAGES[1], model) == {"music": 0.5, "motion": 1.0}
    bad = Stage(**{**STAGES[1].__dict__, "loss_weights": {"motoin": 1.0}})
    with pytest.raises(ValueError, match=r"unknown modalities \['motoin'\].*stages.py"):
        loss_weights(bad, model)



def test_mfu_counts_the_parameters_a_frame_goes_through():
    """A frame of one stream uses one modality's experts and head: the bimodal model's N is the music-only one's."""
    import torch

    from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
    from mumo_ds.training.metrics import params_per_frame

    torch.manual_seed(0)
    both, music = (MuMoForConditionalGeneration(MuMoConfig.from_preset("tiny", modalities=m, captioning=True))
                   for m in (["music", "motion"], ["music"]))
    expected = sum(p.numel() for n, p in music.named_parameters()
                   if not n.startswith(("embeddings.", "text_encoder.", "caption_decoder.", "text_projection."))
                   and "caption_self_attn" not in n and ".encoder_attn.k_proj." not in n and ".encoder_attn.v_proj." not in n)
    assert params_per_frame(both) == params_per_frame(music) == expected
    # left out as per caption token: each layer's cross-attention keys and values, and the text projection
    everything = sum(p.numel() for n, p in music.named_parameters()
                     if not n.startswith(("embeddings.", "text_encoder.", "caption_decoder.")) and "caption_self_attn" not in n)
    config = music.config
    caption_side = 2 * config.num_hidden_layers * config.hidden_size**2 + music.text_projection.weight.numel() + config.hidden_size
    assert everything - expected == caption_side

@pytest.mark.distributed
def test_dry_run_prints_plan_and_one_step_and_writes_nothing(sample_data, tmp_path):  # noqa: F811
    proc = torchrun(1, *COMMON, "--data", str(sample_data), "--runs-root", str(tmp_path / "runs"), "--dry-run",
                    "--peak-tflops", "1.0")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "loss weights {'music': 0.85, 'motion': 0.15}" in proc.stdout and "[dry run" in proc.stdout
    step = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith('{"dry_run_step"')))
    assert step["dry_run_step"] == 1 and step["rss_mb"] > 10 and 0 < step["mfu"] < 1 and step["loss"] > 0
    assert not (tmp_path / "runs").exists()


@pytest.mark.distributed
def test_nan_losses_are_skipped_then_stop_the_run_keeping_the_last_checkpoint(sample_data, tmp_path):  # noqa: F811
    # micro-batches (rank 1 only): 3 is NaN -> replaced by 4 (step 3); 5 is step 4 (saved, validated);
    # 6, 7, 8 are NaN in a row -> stop at step 5 with --max-bad-steps 3, nothing saved for it
    proc = torchrun(2, *COMMON, "--data", str(sample_data), "--runs-root", str(tmp_path), "--max-steps", "8",
                    "--save-every", "2", "--val-every", "2", "--val-batches", "2", "--max-bad-steps", "3",
                    fault="nan_loss:3,nan_loss:6,nan_loss:7,nan_loss:8")
    assert proc.returncode != 0
    assert "step 5: 3 micro-batches in a row had a non-finite loss" in proc.stderr, proc.stderr[-4000:]
    assert "step00000004, is the last good state" in proc.stderr
    run = tmp_path / "stage2"
    assert [s for s, _ in checkpoint.committed(run / "checkpoints")] == [2, 4]
    assert not list((run / "checkpoints").glob("*.tmp"))
    lines = [json.loads(x) for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert [x["skipped_nonfinite"] for x in lines] == [0, 0, 1, 1]
    assert all(x["rss_mb"] > 10 and x["peak_rss_mb"] >= x["rss_mb"] * 0.99 for x in lines)
    val = {k: v for k, v in lines[3].items() if k.startswith("val_")}
    assert {"val_loss", "val_loss_music", "val_loss_motion"} <= set(val) and "val_loss" not in lines[2]
    meta = checkpoint.read_meta(run / "checkpoints", "step00000004")
    assert meta["validation"] == val and meta["metrics"]["loss"] == lines[3]["loss"]


def test_non_finite_grad_norm_stops_with_the_last_good_checkpoint_named():
    import torch

    from mumo_ds.training.guards import NonFiniteError, NonFiniteGuard

    guard = NonFiniteGuard(3, torch.device("cpu"), "The newest checkpoint, run/checkpoints/step00000004, is the last good state.")
    guard.check_grad_norm(1.5, 5)
    guard.check_grad_norm(None, 5)  # ZeRO-0 fp32 reports no norm
    with pytest.raises(NonFiniteError, match=r"step 6: gradient norm inf .*/step00000004, is the last good state"):
        guard.check_grad_norm(float("inf"), 6)


@pytest.mark.distributed
def test_compiled_training_matches_eager(sample_data, tmp_path):  # noqa: F811
    # ZeRO-3 on 2 ranks, both streams: the hardest case for engine.compile() (parameter hooks)
    args = ["--stage", "2", "--init-from", "scratch", "--ds-config", "ds_configs/zero3.json", "--crop-frames", "48",
            "--micro-batch-size", "2", "--max-steps", "3", "--no-shuffle", "--data", str(sample_data)]
    runs = {}
    for choice in ("off", "on"):
        proc = torchrun(2, *args, "--runs-root", str(tmp_path / choice), "--compile", choice)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert ("ZeRO-3, compiled," in proc.stdout) == (choice == "on")
        runs[choice] = [json.loads(x)["loss"] for x in (tmp_path / choice / "stage2/logs/metrics.jsonl").read_text().splitlines()]
    assert len(runs["on"]) == 3 and runs["on"] == pytest.approx(runs["off"], rel=1e-4)  # same math, fused kernels


@pytest.mark.distributed
def test_activation_checkpointing_gives_the_same_losses(sample_data, tmp_path):  # noqa: F811
    # ZeRO-3 on 2 ranks: the recompute must gather each layer's parameters again, the stacked q/k/v weights
    # that self-attention reads from its children included (registered as its external parameters)
    zero3 = [arg.replace("zero2.json", "zero3.json") for arg in COMMON]
    runs = {}
    for flag in ("--no-activation-checkpointing", "--activation-checkpointing"):
        proc = torchrun(2, *zero3, "--data", str(sample_data), "--runs-root", str(tmp_path / flag), "--max-steps", "3",
                        "--no-shuffle", flag)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert ("ZeRO-3, activation checkpointing," in proc.stdout) == (flag == "--activation-checkpointing")
        lines = (tmp_path / flag / "stage2/logs/metrics.jsonl").read_text().splitlines()
        runs[flag] = [json.loads(x)["loss"] for x in lines]
    # the recomputed forward replays the same dropout masks (checkpoint restores the RNG state)
    assert len(runs["--activation-checkpointing"]) == 3
    assert runs["--activation-checkpointing"] == pytest.approx(runs["--no-activation-checkpointing"], rel=1e-6)


def test_attn_implementation_auto_picks_eager_for_low_precision_on_cpu():
    import torch

    from mumo_ds.training.engine import attn_implementation

    bf16, fp32 = {"bf16": {"enabled": True}}, {"bf16": {"enabled": False}}
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert attn_implementation("auto", cpu, bf16) == "eager"
    assert attn_implementation("auto", cpu, {"fp16": {"enabled": True}}) == "eager"
    assert attn_implementation("auto", cpu, fp32) == "sdpa"
    assert attn_implementation("auto", cuda, bf16) == "sdpa"
    assert attn_implementation("sdpa", cpu, bf16) == "sdpa" and attn_implementation("eager", cuda, fp32) == "eager"
    with pytest.raises(ValueError, match="--attn-implementation 'flash': choose 'auto', 'sdpa' or 'eager'"):
        attn_implementation("flash", cpu, bf16)


@pytest.mark.distributed
def test_eager_attention_trains_like_sdpa(sample_data, tmp_path):  # noqa: F811
    runs = {}
    for kernel in ("sdpa", "eager"):
        proc = torchrun(1, *COMMON, "--data", str(sample_data), "--runs-root", str(tmp_path / kernel), "--max-steps", "3",
                        "--no-shuffle", "--attn-implementation", kernel, "--verify-export")
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert f", {kernel} attention," in proc.stdout
        # the export check loads the export with the kernel the run trained with: identical logits
        check = json.loads((tmp_path / kernel / "stage2/export_check.json").read_text())["max_abs_logit_diff"]
        assert check and set(check.values()) == {0.0}, (kernel, check)
        runs[kernel] = [json.loads(x)["loss"] for x in (tmp_path / kernel / "stage2/logs/metrics.jsonl").read_text().splitlines()]
    assert len(runs["eager"]) == 3 and runs["eager"] == pytest.approx(runs["sdpa"], rel=1e-5)  # same math, other kernels


def test_freed_host_memory_stays_in_the_heap():
    # in a child process (the setting is process-wide). By default glibc maps a 64 MiB block on its own
    # and unmaps it on free, so the next step faults its pages in again; retained, the block comes from
    # the heap, and the heap keeps its size after the free.
    script = """
import sys, torch
from mumo_ds.training.host_memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def heap():
    line = next(x for x in open("/proc/self/maps") if x.rstrip().endswith("[heap]"))
    return [int(a, 16) for a in line.split()[0].split("-")]
block = torch.ones(2**26 // 4)
start, end = heap()
in_heap = start <= block.data_ptr() < end
top = block.data_ptr() + block.nbytes
del block
print(in_heap, heap()[1] >= top)
"""
    for mode, expected in (("default", "False False"), ("retain", "True True")):
        proc = subprocess.run([BIN / "python", "-c", script, mode], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split()[-2:] == expected.split(), (mode, proc.stdout)
