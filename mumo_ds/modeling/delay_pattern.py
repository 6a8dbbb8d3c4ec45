"""The MusicGen delay pattern: codebook k is shifted right by k frames.

With K = 4 codebooks and T = 5 frames (numbers are frame indices, ``P`` is the
special id ``codebook_size``)::

    codes [K, T]            delayed [K, T + K - 1]
    k=0  0 1 2 3 4          0 1 2 3 4 P P P
    k=1  0 1 2 3 4    ->    P 0 1 2 3 4 P P
    k=2  0 1 2 3 4          P P 0 1 2 3 4 P
    k=3  0 1 2 3 4          P P P 0 1 2 3 4

Column ``s`` of the delayed grid holds codebook 0 of frame ``s`` and codebook
``k`` of frame ``s - k``. The language model reads column ``s - 1`` (a column of
``P`` before the first) and predicts column ``s``, so a sequence of T frames
takes ``T + K - 1`` steps, and the fine codebooks of a frame are predicted after
its coarse ones. ``revert_delay_pattern(build_delay_pattern(x)) == x`` exactly.
"""

from __future__ import annotations

import torch


def build_delay_pattern(codes: torch.Tensor, special_id: int) -> torch.Tensor:
    """Shift codebook k of ``codes`` [..., K, T] right by k steps -> [..., K, T + K - 1].

    Every cell not covered by a shifted code holds ``special_id``.
    """
    *lead, num_codebooks, num_frames = codes.shape
    delayed = codes.new_full((*lead, num_codebooks, num_frames + num_codebooks - 1), special_id)
    for k in range(num_codebooks):  # K is 4: a loop over codebooks, never over time
        delayed[..., k, k : k + num_frames] = codes[..., k, :]
    return delayed


def revert_delay_pattern(delayed: torch.Tensor) -> torch.Tensor:
    """Undo :func:`build_delay_pattern`: [..., K, T + K - 1] -> [..., K, T]."""
    num_codebooks = delayed.shape[-2]
    num_frames = delayed.shape[-1] - num_codebooks + 1
    if num_frames < 1:
        raise ValueError(
            f"a delayed sequence with {num_codebooks} codebooks needs at least {num_codebooks} steps, "
            f"got {delayed.shape[-1]}"
        )
    return torch.stack([delayed[..., k, k : k + num_frames] for k in range(num_codebooks)], dim=-2)


def delayed_frame_mask(frame_mask: torch.Tensor, num_codebooks: int) -> torch.Tensor:
    """Which cells of the delayed grid hold a real frame.

    ``frame_mask`` [B, T] is True for real frames (False for padding); the result
    [B, K, T + K - 1] is True where the delayed cell holds a real frame's code,
    False for the delay pads and for padded frames.
    """
    grid = frame_mask.unsqueeze(1).expand(-1, num_codebooks, -1).to(torch.int8)  # [B, T] -> [B, K, T]
    return build_delay_pattern(grid, special_id=0).bool()
