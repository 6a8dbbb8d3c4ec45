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


def caption_metrics(engine, make_loader, num_batches: int, tokenizer, device, max_new_tokens: int = 64) -> dict[str, float]:
    """Stage 3: BLEU-4 and ROUGE-L of greedy captions of the val batches' streams, every rank's captions scored as
    one corpus (:func:`gather_captions`), so the numbers do not depend on the number of ranks.

    Needs whole parameters on every rank, so it runs under ZeRO-0/1/2 and returns {} under ZeRO-3
    (there, caption the exported model with ``mumo-generate --task music2text`` instead).
    """
    from ..eval.caption_metrics import caption_scores
    from ..modeling import MODALITIES

    if engine.zero_optimization_stage() >= 3:
        return {}
    module = engine.module
    module.eval()
    hypotheses, references = [], []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for _, batch in zip(range(num_batches), make_loader()):
            for m in MODALITIES:
                if f"{m}_codes" not in batch:
                    continue
                texts = module.caption(**{f"{m}_codes": batch[f"{m}_codes"].to(device), f"{m}_mask": batch[f"{m}_mask"].to(device)},
                                       num_beams=1, max_new_tokens=max_new_tokens, tokenizer=tokenizer)[m]
                hypotheses += texts
                references += [[c] for c in batch[f"{m}_captions"]]
    module.train()
    scores = caption_scores(*gather_captions(hypotheses, references))
    return {"val_bleu4": scores["bleu4"], "val_rouge_l": scores["rouge_l"]}


def gather_captions(hypotheses: list[str], references: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Every rank's (hypotheses, references), concatenated in rank order, on every rank. Collective.

    Corpus BLEU sums n-gram counts over the corpus before its geometric mean: a mean of per-rank scores is another
    number (a rank with a few captions and no matching 4-gram scores 0)."""
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (hypotheses, references))
    return [h for hyps, _ in parts for h in hyps], [r for _, refs in parts for r in refs]
