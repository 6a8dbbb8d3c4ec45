"""Per-codebook cross-entropy over delayed code grids."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
CHUNK_ELEMENTS = 2**22  # logits per cross-entropy piece (16 MB in fp32)


def codebook_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each codebook, and their mean.

    Args:
        logits: [B, K, S, V] scores.
        labels: [B, K, S] target ids, ``IGNORE_INDEX`` where there is nothing to predict
            (delay pads, padded frames).

    Returns:
        ``(mean over codebooks [], per-codebook losses [K])``, in fp32. A codebook with no
        target in the batch contributes 0.
    """
    num_codebooks, vocab = logits.shape[1], logits.shape[-1]
    # rows in [B, S, K] order: the heads' logits are a [B, K, S, V] view of a [B, S, K, V] tensor, read
    # without a copy; taken in pieces so that the fp32 logits, log-probabilities and their gradient stay
    # ~16 MB each instead of three copies of the whole grid
    rows = logits.transpose(1, 2).reshape(-1, vocab)
    targets = labels.transpose(1, 2).reshape(-1)
    piece = max(1, CHUNK_ELEMENTS // vocab)
    ce = torch.cat([
        F.cross_entropy(x.float(), y, ignore_index=IGNORE_INDEX, reduction="none")
        for x, y in zip(rows.split(piece), targets.split(piece))
    ]).view(labels.shape[0], labels.shape[2], num_codebooks).transpose(1, 2)  # [B, K, S]
    valid = labels != IGNORE_INDEX
    per_codebook = (ce * valid).sum(dim=(0, 2)) / valid.sum(dim=(0, 2)).clamp_min(1)  # [K]
    assert per_codebook.shape == (num_codebooks,)
    return per_codebook.mean(), per_codebook
