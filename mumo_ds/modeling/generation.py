"""Sampling music and motion codes from a MuMo model, one frame per step for every stream.

This is the plain reference loop: every step re-runs the whole prefix (no KV
cache), so step t costs O(t). It is exact and simple, and it is what a cached
loop must reproduce token for token.

Step ``s`` reads delayed columns ``0..s-1`` of every stream (after a start
column of pad ids) and samples column ``s``: codebook ``k`` of frame ``s - k``.
Cells of given (prompt) frames are teacher-forced instead of sampled, so the
same loop continues a prompt, or generates one stream while following another.
T frames take T + K - 1 steps.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from .delay_pattern import build_delay_pattern

UNKNOWN = -1


def sample_top_k(logits: torch.Tensor, top_k: int, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """Sample ids from logits [..., V], keeping the ``top_k`` best (0 = all); temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=generator)
    return flat.view(probs.shape[:-1]).to(logits.device)


@torch.no_grad()
def generate_plain(
    model,
    num_frames: int,
    prompts: dict[str, torch.Tensor | None],
    text: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] | None = None,
    batch_size: int = 1,
    top_k: int = 250,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Generate ``num_frames`` frames for each stream in ``prompts``.

    Args:
        model: a :class:`MuMoForConditionalGeneration`.
        num_frames: total frames per stream, prompt included.
        prompts: stream name -> prompt codes [B, K, P] (P may be 0) or None for no prompt; the
            streams named here are the ones generated, jointly.
        text: stream name -> (caption ids [B, L], mask [B, L]) or (None, None) for no caption.
        seed: seeds the sampler; the same seed gives the same codes.
        progress: show a progress bar over steps.
    Returns:
        stream name -> codes [B, K, num_frames] in 0..codebook_size-1.
    """
    cfg = model.config
    k_books, special = cfg.num_codebooks, cfg.special_token_id
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    codes = {}
    for m, prompt in prompts.items():
        b = prompt.shape[0] if prompt is not None else batch_size
        grid = torch.full((b, k_books, num_frames), UNKNOWN, dtype=torch.long, device=device)
        if prompt is not None and prompt.shape[-1]:
            grid[..., : prompt.shape[-1]] = prompt.to(device)
        codes[m] = grid
    text = text or {}
    states = {
        m: model.encode_text(*text.get(m, (None, None)), codes[m].shape[0], device) for m in codes
    }
    for step in tqdm(range(num_frames + k_books - 1), desc="generate", disable=not progress):
        inputs = {}
        for m, grid in codes.items():
            delayed = build_delay_pattern(grid.clamp_min(0).masked_fill(grid < 0, special), special)
            start = torch.full_like(delayed[..., :1], special)
            inputs[m] = torch.cat([start, delayed[..., :step]], dim=-1)  # [B, K, step + 1]
        logits = model.decode(inputs, states)
        for m, grid in codes.items():
            sampled = sample_top_k(logits[m][:, :, step], top_k, temperature, generator)  # [B, K]
            for k in range(k_books):
                frame = step - k
                if 0 <= frame < num_frames:
                    cell = grid[:, k, frame]
                    grid[:, k, frame] = torch.where(cell == UNKNOWN, sampled[:, k], cell)
    return codes
