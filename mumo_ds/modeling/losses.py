"""Per-codebook cross-entropy over delayed code grids."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


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
    # in [B, S, K] order: the heads' logits are a [B, K, S, V] view of a [B, S, K, V] tensor, read without a copy
    ce = F.cross_entropy(
        logits.transpose(1, 2).reshape(-1, vocab).float(),
        labels.transpose(1, 2).reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape[0], labels.shape[2], num_codebooks).transpose(1, 2)  # [B, K, S]
    valid = labels != IGNORE_INDEX
    per_codebook = (ce * valid).sum(dim=(0, 2)) / valid.sum(dim=(0, 2)).clamp_min(1)  # [K]
    assert per_codebook.shape == (num_codebooks,)
    return per_codebook.mean(), per_codebook
