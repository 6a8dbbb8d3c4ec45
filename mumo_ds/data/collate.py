"""Crop, pad and stack samples of one kind into a batch dict of tensors."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from .decode import Sample
from .format import MODALITIES


def crop_offset(sample: Sample, crop_frames: int, *, seed: int, epoch: int) -> int:
    """Start frame of the crop: uniform in 0..T-crop_frames, 0 when the sample is shorter.

    Seeded by (seed, epoch, crc32(key)), so it does not depend on the order in
    which samples arrive, and both streams of a paired sample share it.
    """
    slack = sample.num_frames - crop_frames
    if slack <= 0:
        return 0
    rng = np.random.default_rng([seed, epoch, zlib.crc32(sample.key.encode("utf-8"))])
    return int(rng.integers(0, slack + 1))


def collate(samples: list[Sample], offsets: list[int], crop_frames: int) -> dict:
    """Batch of B samples that share one kind.

    Returns, for each modality m present in the kind:
        ``{m}_codes``: LongTensor [B, K, crop_frames], 0 after the end of a short sample
        ``{m}_mask``:  BoolTensor [B, crop_frames], True on real frames
    and always ``music_captions``/``motion_captions`` (lists of B str, "" when missing)
    and ``keys`` (list of B str).
    """
    kind = samples[0].kind
    if any(s.kind != kind for s in samples):
        raise ValueError(f"collate: mixed kinds {sorted({s.kind for s in samples})}; batches must be homogeneous")
    batch: dict = {}
    for m in kind:
        num_codebooks = samples[0].codes[m].shape[0]
        codes = torch.zeros(len(samples), num_codebooks, crop_frames, dtype=torch.long)  # [B, K, T]
        mask = torch.zeros(len(samples), crop_frames, dtype=torch.bool)  # [B, T]
        for i, (s, start) in enumerate(zip(samples, offsets)):
            window = s.codes[m][:, start : start + crop_frames]  # [K, <=T]
            codes[i, :, : window.shape[1]] = torch.from_numpy(window.astype(np.int64))
            mask[i, : window.shape[1]] = True
        batch[f"{m}_codes"] = codes
        batch[f"{m}_mask"] = mask
    for m in MODALITIES:
        batch[f"{m}_captions"] = [s.captions.get(m, "") for s in samples]
    batch["keys"] = [s.key for s in samples]
    return batch
