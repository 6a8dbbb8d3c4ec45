"""Per-codebook cross-entropy over delayed code grids.

The cross-entropy of each row of logits is one operator with its own backward (``mumo::row_cross_entropy``),
taken in pieces of :data:`PIECE_ROWS` rows: each piece's log-probabilities are computed in fp32 (at least)
straight from the logits, whatever their dtype, and dropped once the target's entry is read; the backward
recomputes the piece's probabilities and writes the gradient in the logits' dtype. So no fp32 copy of the
whole [rows, vocab] grid is ever stored, and each piece's fp32 temporaries stay in cache. As a custom
operator it is opaque to ``torch.compile``, which runs these kernels instead of generating its own.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
PIECE_ROWS = 256  # rows per piece: 2 MB of fp32 temporaries at 2048 codes


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # fp32 for bf16/fp16/fp32 logits, fp64 for fp64


@torch.library.custom_op("mumo::row_cross_entropy", mutates_args=())
def row_cross_entropy(rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-log_softmax(rows)[target]`` of each row [N, V] -> [N], 0 where the target is ``IGNORE_INDEX``."""
    out = rows.new_empty(rows.shape[0], dtype=_compute_dtype(rows.dtype))
    for x, t, o in zip(rows.split(PIECE_ROWS), targets.split(PIECE_ROWS), out.split(PIECE_ROWS)):
        logp = torch.log_softmax(x, dim=-1, dtype=out.dtype)
        torch.neg(logp.gather(1, t.clamp_min(0)[:, None]).squeeze(1), out=o)
    return out.masked_fill_(targets == IGNORE_INDEX, 0.0)


@row_cross_entropy.register_fake
def _(rows, targets):
    return rows.new_empty(rows.shape[0], dtype=_compute_dtype(rows.dtype))


@torch.library.custom_op("mumo::row_cross_entropy_backward", mutates_args=())
def row_cross_entropy_backward(rows: torch.Tensor, targets: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The gradient of ``(row_cross_entropy(rows, targets) * grad).sum()`` w.r.t. ``rows``: ``(softmax - onehot) * grad``."""
    grad = grad.to(_compute_dtype(rows.dtype)).masked_fill(targets == IGNORE_INDEX, 0.0)
    out = torch.empty_like(rows, memory_format=torch.contiguous_format)
    for x, t, g, o in zip(rows.split(PIECE_ROWS), targets.split(PIECE_ROWS), grad.split(PIECE_ROWS), out.split(PIECE_ROWS)):
        p = torch.softmax(x, dim=-1, dtype=grad.dtype)
        p.scatter_add_(1, t.clamp_min(0)[:, None], p.new_full((len(t), 1), -1.0))
        o.copy_(p.mul_(g[:, None]))  # rounded once, into the logits' dtype
    return out


@row_cross_entropy_backward.register_fake
def _(rows, targets, grad):
    return torch.empty_like(rows, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    rows, targets = ctx.saved_tensors
    return row_cross_entropy_backward(rows, targets, grad), None


row_cross_entropy.register_autograd(_backward, setup_context=_setup_context)


def codebook_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each codebook, and their mean.

    Args:
        logits: [B, K, S, V] scores.
        labels: [B, K, S] target ids, ``IGNORE_INDEX`` where there is nothing to predict
            (delay pads, padded frames).

    Returns:
        ``(mean over codebooks [], per-codebook losses [K])``, in fp32 (fp64 for fp64 logits). A codebook
        with no target in the batch contributes 0.
    """
    num_codebooks, vocab = logits.shape[1], logits.shape[-1]
    # rows in [B, S, K] order: the heads' logits are a [B, K, S, V] view of a [B, S, K, V] tensor, read without a copy
    rows = logits.transpose(1, 2).reshape(-1, vocab)
    targets = labels.transpose(1, 2).reshape(-1)
    ce = row_cross_entropy(rows, targets).view(labels.shape[0], labels.shape[2], num_codebooks).transpose(1, 2)
    valid = labels != IGNORE_INDEX
    per_codebook = ce.sum(dim=(0, 2)) / valid.sum(dim=(0, 2)).clamp_min(1)  # [K]
    assert per_codebook.shape == (num_codebooks,)
    return per_codebook.mean(), per_codebook
