"""Shared helpers for the benchmarks: timing, the matched-size configs, and the GEMM peak."""

from __future__ import annotations

import contextlib
import platform
import statistics
import time

import torch

# The matched size of issue 10: width 512, 6 layers, 8 heads, FFN 2048, 4 codebooks x 2048.
MATCHED = dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, ffn_dim=2048, dropout=0.0)


def machine() -> dict:
    return {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": "cpu"}


def autocast(dtype: str):
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate(fns: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, run in alternation so machine noise hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def gemm_peak_flops(dtype: str, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matmul in this process (the machine's practical peak for the dtype)."""
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=torch_dtype), torch.randn(n, n, dtype=torch_dtype)
    return 2 * n**3 / median_time(lambda: a @ b, repeats)
