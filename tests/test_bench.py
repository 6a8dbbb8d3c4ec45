"""The benchmark scripts run and report every ratio their targets are about (tiny sizes, one repeat;
timings themselves are never asserted)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.test_training import BIN, REPO


def bench(name: str, *args: str) -> dict:
    proc = subprocess.run([BIN / "python", f"{name}.py", *args], capture_output=True, text=True, cwd=REPO / "bench")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def test_attention_bench_reports_the_kernel_and_ratios():
    out = bench("attention", "--frames", "40", "--batch", "1", "--width", "32", "--heads", "2", "--repeats", "1")
    assert out["host_memory_retained"] is True and out["positions"] == 80
    assert (out["fp32"]["kernel"], out["bf16"]["kernel"]) == ("sdpa", "eager")  # the kernels training picks on CPU
    for dtype in ("fp32", "bf16"):
        assert {"frame_causal_vs_causal", "frame_causal_sdpa_vs_causal", "dense_mask_vs_causal"} <= set(out[dtype])


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_train_throughput_bench_reports_peers_and_mfu(dtype):
    out = bench("train_throughput", "--frames", "8", "--batch", "1", "--repeats", "1", "--no-compile", "--dtypes", dtype)
    result = out[dtype]
    peers = {"musicgen", "musicgen_eager"} if dtype == "bf16" else {"musicgen"}
    assert set(result["seconds"]) == {"mumo_music", "bimodal_music", "bimodal_joint"} | peers
    assert result["attn_implementation"] == ("eager" if dtype == "bf16" else "sdpa")
    assert {"mumo_vs_musicgen", "bimodal_vs_musicgen", "joint_vs_music", "mfu_mumo_music", "mfu_musicgen"} <= set(result)
    assert ("mumo_vs_musicgen_eager" in result) == (dtype == "bf16")
