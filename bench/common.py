"""Shared helpers for the benchmarks: the device, timing, the matched-size configs, and the GEMM peak.

The benchmarks run on the first CUDA device when there is one (timings synchronise it), else on CPU.
Host memory is kept for reuse as train.py keeps it on CPU (mumo_ds/training/host_memory.py), for every
model a benchmark runs.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time

import torch

from mumo_ds.training.host_memory import retain_freed_memory

# The matched size of issue 10: width 512, 6 layers, 8 heads, FFN 2048, 4 codebooks x 2048.
MATCHED = dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, ffn_dim=2048, dropout=0.0)


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
HOST_MEMORY_RETAINED = retain_freed_memory()


def machine() -> dict:
    device = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"
    return {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": device, "host_memory_retained": HOST_MEMORY_RETAINED}


TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the benchmarks' --dtypes names


def autocast(dtype: str):
    if dtype == "bf16":
        return torch.autocast(DEVICE.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def seconds(fn) -> float:
    """Wall time of one call, the device's queued work included."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def alternate(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each function in each of ``repeats`` rounds, the functions run in alternation so that
    machine noise hits all alike. Summarise with :func:`medians` and :func:`paired_ratio`."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(seconds(fn))
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(t) for name, t in samples.items()}


def paired_ratio(samples: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of one round's ``numerator`` seconds over the same round's ``denominator``
    seconds: a slow stretch of the machine that hits both runs of a round cancels out."""
    return statistics.median(a / b for a, b in zip(samples[numerator], samples[denominator]))


def gemm_peak_flops(dtype: str, n: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matmul in this process, from its fastest repeat (the practical peak for the
    dtype; the fastest, not the median, so that a noisy moment cannot lower the peak and inflate MFU)."""
    n = n or (8192 if DEVICE.type == "cuda" else 2048)
    torch_dtype = TORCH_DTYPES[dtype]
    a, b = (torch.randn(n, n, dtype=torch_dtype, device=DEVICE) for _ in range(2))
    a @ b
    return 2 * n**3 / min(seconds(lambda: a @ b) for _ in range(repeats))
