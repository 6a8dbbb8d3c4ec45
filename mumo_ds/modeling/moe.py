"""The modality-expert feed-forward layer (BEiT-3 / VLMo "multiway" FFN).

Routing is by modality, not by a learned gate: the sequence is the
concatenation of contiguous per-modality slices, and each slice goes through
its own expert. No gather/scatter, no compute on tokens of another modality.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

Segments = list[tuple[str, int]]  # (modality, length) of each contiguous slice, in sequence order


def split_segments(x: torch.Tensor, segments: Segments) -> tuple[torch.Tensor, ...]:
    """``x`` [B, L, ...] -> one view per segment [B, L_m, ...]. A split, not slices: its backward is one
    concatenation, where each slice's would zero-fill an input-sized gradient and the slices' be summed."""
    lengths = [length for _, length in segments]
    if sum(lengths) != x.shape[1]:
        raise ValueError(f"segments {segments} cover {sum(lengths)} positions, the input has {x.shape[1]}")
    return x.split(lengths, dim=1)


class FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm -> Linear -> activation -> Linear (MusicGen's FFN with its norm)."""

    def __init__(
        self,
        hidden_size: int,
        ffn_dim: int,
        activation: str = "gelu",
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.fc1 = nn.Linear(hidden_size, ffn_dim, bias=False)
        self.fc2 = nn.Linear(ffn_dim, hidden_size, bias=False)
        self.act = ACT2FN[activation]
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(self.norm(x)))))


class ModalityExpertFFN(nn.Module):
    """One :class:`FeedForward` expert per modality, each applied to its own slice.

    ``forward(x, segments)`` takes the routing as an argument (never as module
    state), so activation recompute and ``torch.compile`` see a pure function.

    Distributed note: under ZeRO-1/2/3 every rank must run the forward of every
    trainable expert in every micro-step, or the gradient reductions disagree
    (ZeRO-1/2 crash, ZeRO-3 hangs). So when gradients are being recorded and a
    trainable expert has no tokens in this batch, it runs on one position and
    its output is added times 0.0: the values are unchanged, the graph touches
    the expert.
    """

    def __init__(self, experts: dict[str, nn.Module]):
        super().__init__()
        self.experts = nn.ModuleDict(experts)

    def forward(self, x: torch.Tensor, segments: Segments) -> torch.Tensor:
        outputs = [self.experts[m](part) for (m, _), part in zip(segments, split_segments(x, segments))]  # [B, L_m, D]
        out = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
        ghost = self.ghost_forward(x, {m for m, _ in segments})
        return out if isinstance(ghost, float) else out + ghost  # no extra pass over the output when no ghost

    def ghost_forward(self, x: torch.Tensor, present: set[str]) -> torch.Tensor | float:
        """0.0 times the output of every trainable expert absent from the batch (see class doc)."""
        ghost = 0.0
        if not torch.is_grad_enabled():
            return ghost
        for name, expert in self.experts.items():
            if name not in present and any(p.requires_grad for p in expert.parameters()):
                ghost = ghost + 0.0 * expert(x[:, :1]).sum()
        return ghost
