"""Data loading speed vs training consumption: can the loader feed a `small` training step?

    python bench/data_loading.py [--batch-size 4] [--crop-frames 500] [--layers 1 2] [--steps 3]

Prints one JSON object, both rates measured in this run on this machine:
- ``loader_samples_per_s``: ``CodesLoader`` over freshly written shards (paired samples of
  ``--sample-seconds`` of random codes, cropped to ``--crop-frames``), plus caption tokenization,
  i.e. everything a training step asks of the data path, in one process.
- ``train_samples_per_s``: forward + backward + AdamW step of the ``small`` preset's decoder
  shape (width 1024, 16 heads, FFN 4096, 4 x 2048 codes per stream) on paired batches of the
  same size. On CPU the full 24 layers are too slow to time, so the step is timed at
  ``--layers`` (default 1 and 2) and extrapolated linearly to 24 layers
  (``train_samples_per_s_small_24_layers``); the text encoder is the tiny T5 (t5-base needs
  a download), which understates the frozen encoder's cost slightly.
- ``loader_to_train_ratio``: > 1 means the loader produces samples faster than the step uses them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch

from mumo_ds.data import CodesLoader, ShardWriter
from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.modeling.configuration_mumo import TEXT_ENCODERS
from mumo_ds.modeling.text import load_tokenizer
from mumo_ds.training.trainer import model_inputs

FMT = {"name": "bench-random", "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}


def write_shards(out: str, num_samples: int, frames: int, per_shard: int) -> None:
    """Paired samples of random codes, int16 [4, frames] per stream."""
    rng = np.random.default_rng(0)
    with ShardWriter(out, "train", samples_per_shard=per_shard, codec=FMT | {"sample_rate": 32000}, motion_tokenizer=FMT) as w:
        for i in range(num_samples):
            codes = rng.integers(0, 2048, (2, 4, frames), dtype=np.int16)
            w.write(f"s{i:06d}", music=codes[0], motion=codes[1],
                    meta={"captions": {"music": f"funk track number {i}", "motion": f"a dancer spins, take {i}"}})


def loader_rate(data: str, batch_size: int, crop_frames: int, num_batches: int, tokenizer) -> float:
    loader = iter(CodesLoader(data, "train", batch_size=batch_size, crop_frames=crop_frames, seed=0))
    model_inputs(next(loader), tokenizer, 64, torch.device("cpu"))  # warm-up: file cache, first shard
    start = time.perf_counter()
    for _ in range(num_batches):
        model_inputs(next(loader), tokenizer, 64, torch.device("cpu"))
    return num_batches * batch_size / (time.perf_counter() - start)


def step_seconds(layers: int, batch: dict, steps: int) -> float:
    """Median seconds of one forward + backward + optimizer step of the small shape with ``layers`` layers."""
    torch.manual_seed(0)
    cfg = MuMoConfig.from_preset("small", num_hidden_layers=layers, text_encoder=TEXT_ENCODERS["tiny-t5"],
                                 text_tokenizer="byt5", dropout=0.0)
    model = MuMoForConditionalGeneration(cfg).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for _ in range(steps + 1):  # the first step is warm-up
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=4, help="samples per batch (default 4)")
    p.add_argument("--crop-frames", type=int, default=500, help="frames per sample (default 500 = 10 s)")
    p.add_argument("--sample-seconds", type=float, default=30.0, help="length of each stored sample (default 30)")
    p.add_argument("--num-samples", type=int, default=256, help="samples written (default 256)")
    p.add_argument("--loader-batches", type=int, default=40, help="batches timed for the loader (default 40)")
    p.add_argument("--layers", type=int, nargs="+", default=[1, 2], help="layer counts timed (default 1 2)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per layer count (default 3)")
    args = p.parse_args(argv)
    tokenizer = load_tokenizer("byt5")
    with tempfile.TemporaryDirectory() as data:
        write_shards(data, args.num_samples, round(args.sample_seconds * 50), per_shard=32)
        loader = loader_rate(data, args.batch_size, args.crop_frames, args.loader_batches, tokenizer)
        batch = model_inputs(next(iter(CodesLoader(data, "train", batch_size=args.batch_size, crop_frames=args.crop_frames))),
                             tokenizer, 64, torch.device("cpu"))
    seconds = {n: step_seconds(n, batch, args.steps) for n in args.layers}
    if len(seconds) >= 2:  # t(L) = fixed + L * per_layer, least squares over the timed L
        per_layer, fixed = np.polyfit(list(seconds), list(seconds.values()), 1)
    else:
        ((n, t),) = seconds.items()
        per_layer, fixed = t / n, 0.0
    small = max(fixed, 0.0) + 24 * per_layer
    train_small = args.batch_size / small
    print(json.dumps({
        "device": "cpu", "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "batch_size": args.batch_size, "crop_frames": args.crop_frames, "kind": "paired",
        "loader_samples_per_s": round(loader, 2),
        "train_step_seconds_by_layers": {str(k): round(v, 3) for k, v in seconds.items()},
        "train_samples_per_s_small_24_layers": round(train_small, 3),
        "train_samples_per_s_small_24_layers_note": "extrapolated linearly from the timed layer counts; tiny T5 text encoder",
        "loader_to_train_ratio": round(loader / train_small, 1),
    }))


if __name__ == "__main__":
    main()
