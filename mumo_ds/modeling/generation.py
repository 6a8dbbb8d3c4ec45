"""Sampling music and motion codes from a MuMo model, one frame per step for every stream.

The code grid of each stream is [B, K, T]. Step ``s`` reads delayed column
``s - 1`` of every stream (a column of pad ids at step 0) and produces column
``s``: codebook ``k`` of frame ``s - k``. Cells that are given (a prompt, or a
whole stream in music-to-motion / motion-to-music) are teacher-forced; the
others are sampled. T frames take T + K - 1 steps, for all streams at once.

Two ways to get the logits of step ``s``, with the same sampler:
- cached (default): one position per stream per step, keys/values of earlier
  steps kept in a :class:`KVCache`, cross-attention keys/values computed once;
- uncached (``use_cache=False``): the whole prefix again at every step. It is
  the reference the cached path must reproduce token for token.

Classifier-free guidance runs conditional and unconditional (null caption) rows
as one doubled batch: ``logits = uncond + scale * (cond - uncond)``. Without any
caption both rows would be the same, so the batch is not doubled.

Sampling runs in eval mode whatever mode the model is in (:func:`in_eval_mode`):
caption dropout and dropout would otherwise drop captions and break seeding.
"""

from __future__ import annotations

import functools

import torch
from tqdm import tqdm

from .delay_pattern import build_delay_pattern

UNKNOWN = -1  # a cell still to be sampled

TASKS = {  # task -> (streams generated, stream given as a condition)
    "text2music": (("music",), None),
    "text2motion": (("motion",), None),
    "text2both": (("music", "motion"), None),
    "music2motion": (("motion",), "music"),
    "motion2music": (("music",), "motion"),
}


def generation_device(choice: str | None = None) -> torch.device:
    """Where a CLI generates: ``choice`` (its ``--device``), else CUDA when there is one, else the CPU."""
    return torch.device(choice or ("cuda" if torch.cuda.is_available() else "cpu"))


def in_eval_mode(fn):
    """Run ``fn(model, ...)`` with the model in eval mode and give it back in its own mode (a model sampled
    mid-training): caption dropout and dropout would otherwise drop captions and break seeding."""

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        was_training = model.training
        model.eval()
        try:
            return fn(model, *args, **kwargs)
        finally:
            model.train(was_training)

    return wrapper


def sample_next(
    logits: torch.Tensor, top_k: int, top_p: float, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """Ids from logits [..., V]: temperature, then top-k (0 = off), then top-p (0 = off); temperature 0 is greedy.
    ``generator`` lives on the logits' device (a CPU one for CUDA logits would copy them to the host every step)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) > top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    probs = logits.softmax(dim=-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)  # generator on their device
    return flat.view(probs.shape[:-1])


def delayed_column(grid: torch.Tensor, column: int, special: int) -> torch.Tensor:
    """Column ``column`` of the delayed grid of ``grid`` [B, K, T] -> [B, K, 1] (pads outside, and for column < 0)."""
    num_codebooks, num_frames = grid.shape[1], grid.shape[2]
    out = torch.full_like(grid[..., :1], special)
    for k in range(num_codebooks):
        frame = column - k
        if 0 <= frame < num_frames:
            out[:, k, 0] = grid[:, k, frame]
    return out


def _text_states(model, text, streams, batch, guided: bool, device):
    """Conditional text states per stream, and with guidance the null rows appended: [B or 2B, Lc, D]."""
    states = {}
    for m in streams:
        ids, mask = (None if x is None else x.to(device) for x in text.get(m, (None, None)))  # tokenizers give CPU ids
        cond, key_mask = model.encode_text(ids, mask, batch, device)
        if guided:
            null = torch.zeros_like(cond)
            null_mask = torch.zeros_like(key_mask)
            null_mask[..., 0] = True
            cond, key_mask = torch.cat([cond, null]), torch.cat([key_mask, null_mask])
        states[m] = (cond, key_mask)
    return states


def _check_prompt(model, stream: str, codes: torch.Tensor) -> None:
    """Given codes must be real codes [B, K, P] of this model, as ``forward`` requires.

    The codebooks share one embedding table, so an id past ``codebook_size`` would read the next
    codebook's row, and -1 is the marker of a cell still to be sampled.
    """
    try:
        model._check_codes(stream, codes)
    except ValueError as exn:
        raise ValueError(
            f"prompts[{stream!r}]: {exn}. Give codes from the tokenizer this model was trained on "
            f"(config.{'music_codec' if stream == 'music' else 'motion_tokenizer'}), only the known frames "
            "(a prefix P <= num_frames; no -1 or pad ids)"
        ) from None


def _captions_for_batch(text: dict, batch: int) -> dict:
    """Captions for ``batch`` rows: a single caption is repeated; any other count than ``batch`` is refused."""
    out = {}
    for m, (ids, mask) in text.items():
        if ids is not None and ids.shape[0] != batch:
            if ids.shape[0] != 1:
                raise ValueError(
                    f"text[{m!r}]: {ids.shape[0]} captions for a batch of {batch} (the prompts' batch, else the "
                    "largest caption batch); give one caption per item, or one for all"
                )
            ids, mask = ids.repeat(batch, 1), None if mask is None else mask.repeat(batch, 1)
        out[m] = (ids, mask)
    return out


def _batch_of(prompts: dict, text: dict, batch_size: int | None) -> int:
    """The batch of a generation: the prompts', else the caption count (one caption serves any batch), else
    ``batch_size`` (default 1). A ``batch_size`` the prompts or captions contradict is refused, not ignored."""
    given = [p.shape[0] for p in prompts.values() if p is not None]
    counts = [ids.shape[0] for ids, _ in text.values() if ids is not None and ids.shape[0] != 1]
    fixed = given[0] if given else max(counts, default=None)
    if batch_size is not None and fixed is not None and batch_size != fixed:
        source = "the prompts" if given else "the captions"
        raise ValueError(f"batch_size={batch_size}, but {source} hold {fixed} items; leave batch_size out, or give "
                         f"{batch_size} items (one caption serves a batch of any size)")
    return fixed or batch_size or 1


@torch.no_grad()
@in_eval_mode
def generate(
    model,
    num_frames: int,
    prompts: dict[str, torch.Tensor | None],
    text: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] | None = None,
    batch_size: int | None = None,
    guidance_scale: float = 4.0,
    top_k: int = 250,
    top_p: float = 0.0,
    temperature: float = 1.0,
    seed: int = 0,
    use_cache: bool = True,
    progress: bool = False,
    step_logits: list | None = None,
) -> dict[str, torch.Tensor]:
    """Generate ``num_frames`` frames of every stream named in ``prompts``, jointly.

    Args:
        model: a :class:`MuMoForConditionalGeneration`.
        num_frames: frames per stream, given frames included.
        prompts: stream -> given codes [B, K, P] (P <= num_frames; P = num_frames teacher-forces the
            whole stream, e.g. the music of music-to-motion) or None.
        text: stream -> (caption ids [B, L], mask [B, L]); a missing stream gets the null caption. One
            caption ([1, L]) is used for every item.
        batch_size: items to generate when neither the prompts nor several captions fix it (default 1).
        guidance_scale: classifier-free guidance scale; 1.0 turns guidance off (no doubled batch).
        top_k, top_p, temperature: sampling; temperature 0 is greedy.
        seed: the same seed gives the same codes on the same device.
        use_cache: False runs the uncached reference loop.
        step_logits: if a list, the guided logits of every step are appended to it (for tests).
    Returns:
        stream -> codes [B, K, num_frames] in 0..codebook_size-1.
    """
    cfg = model.config
    k_books, special = cfg.num_codebooks, cfg.special_token_id
    device = next(model.parameters()).device
    streams = [m for m in cfg.modalities if m in prompts]
    unknown = sorted(set(prompts) - set(cfg.modalities))
    if unknown or not streams:
        raise ValueError(f"prompts: streams {sorted(prompts)}; this model has {cfg.modalities}")
    for m in streams:
        if prompts[m] is not None:
            _check_prompt(model, m, prompts[m])
    extra = sorted(set(text or {}) - set(streams))
    if extra:
        raise ValueError(f"text: captions for {extra}, which are not streams of this generation ({streams}); name "
                         "each generated or given stream in prompts, or leave those captions out")
    batch = _batch_of(prompts, text or {}, batch_size)
    text = _captions_for_batch(text or {}, batch)
    grids = {}
    for m in streams:
        grid = torch.full((batch, k_books, num_frames), UNKNOWN, dtype=torch.long, device=device)
        prompt = prompts[m]
        if prompt is not None:
            if prompt.shape[0] != batch or prompt.shape[2] > num_frames:
                raise ValueError(f"{m} prompt: shape {list(prompt.shape)}, expected [{batch}, {k_books}, <= {num_frames}]")
            grid[..., : prompt.shape[-1]] = prompt.to(device)
        grids[m] = grid
    guided = guidance_scale != 1.0 and any(ids is not None for ids, _ in text.values())  # else cond == uncond
    rows = 2 * batch if guided else batch
    text_states = _text_states(model, text, streams, batch, guided, device)
    generator = torch.Generator(device).manual_seed(seed)  # on the model's device: no host copy per step
    num_steps = num_frames + k_books - 1
    if use_cache:
        cache = model.new_cache(rows, num_steps * len(streams))
        cross_kv = model.cross_attention_kv(text_states)

    for step in tqdm(range(num_steps), desc="generate", disable=not progress):
        if use_cache:
            columns = {m: delayed_column(grids[m], step - 1, special) for m in streams}  # [B, K, 1]
            if guided:
                columns = {m: c.repeat(2, 1, 1) for m, c in columns.items()}
            logits = model.decode_step(columns, step, text_states, cache, cross_kv)  # m -> [rows, K, V]
        else:
            inputs = {}
            for m in streams:
                delayed = build_delay_pattern(grids[m].masked_fill(grids[m] < 0, special), special)
                start = torch.full_like(delayed[..., :1], special)
                inputs[m] = torch.cat([start, delayed[..., :step]], dim=-1)  # [B, K, step + 1]
                if guided:
                    inputs[m] = inputs[m].repeat(2, 1, 1)
            logits = {m: lg[:, :, step] for m, lg in model.decode(inputs, text_states).items()}
        for m in streams:
            scores = logits[m]
            if guided:
                cond, uncond = scores.float().chunk(2)
                scores = uncond + guidance_scale * (cond - uncond)
            if step_logits is not None:
                step_logits.append(scores)
            sampled = sample_next(scores, top_k, top_p, temperature, generator)  # [B, K]
            grid = grids[m]
            for k in range(k_books):
                frame = step - k
                if 0 <= frame < num_frames:
                    cell = grid[:, k, frame]
                    grid[:, k, frame] = torch.where(cell == UNKNOWN, sampled[:, k], cell)
    return grids
