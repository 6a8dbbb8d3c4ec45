"""Periodic validation: mean loss per modality over the first ``--val-batches`` batches of the val split.

The val batches are the same at every validation (a fresh loader, fixed seed), their kinds follow the
stage's mix on every rank (ZeRO-3 needs all ranks to run the same modules), and the RNG state of the
training run is left untouched, so validating does not change the training losses.
"""

from __future__ import annotations

import torch

from ..data.mixing import MixedLoader


def validate(engine, make_loader, num_batches: int, to_inputs, reduce) -> dict[str, float]:
    """``make_loader()`` -> a fresh val :class:`MixedLoader`; ``to_inputs(batch)`` -> forward kwargs;
    ``reduce(outputs, batches)`` -> averaged metrics over ranks. Returns them prefixed with ``val_``."""
    loader: MixedLoader = make_loader()
    outputs, used = [], []
    engine.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for _, batch in zip(range(num_batches), loader):
            outputs.append(engine(**to_inputs(batch)))
            used.append(batch)
    engine.train()
    metrics = reduce(outputs, used)
    metrics.pop("frames", None)
    return {f"val_{k}": v for k, v in metrics.items() if "_cb" not in k}
