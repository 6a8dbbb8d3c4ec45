"""The plain generation loop: shapes, prompts kept, seeds, and agreement with a full forward."""

from __future__ import annotations

import torch

from mumo_ds.modeling.generation import generate_plain
from tests.conftest import random_codes


def test_joint_generation_keeps_the_prompt_and_is_seeded(tiny_model, captions):
    prompt = random_codes(2, 3, seed=1)
    text = {"music": (captions["music_caption_ids"], captions["music_caption_mask"])}
    a = generate_plain(tiny_model, 8, {"music": prompt, "motion": None}, text, batch_size=2, seed=5)
    b = generate_plain(tiny_model, 8, {"music": prompt, "motion": None}, text, batch_size=2, seed=5)
    c = generate_plain(tiny_model, 8, {"music": prompt, "motion": None}, text, batch_size=2, seed=6)
    assert a["music"].shape == a["motion"].shape == (2, 4, 8)
    assert torch.equal(a["music"][..., :3], prompt)
    assert all(torch.equal(a[m], b[m]) for m in a) and not all(torch.equal(a[m], c[m]) for m in a)
    assert int(a["motion"].min()) >= 0 and int(a["motion"].max()) < 2048


@torch.no_grad()
def test_greedy_generation_matches_the_full_forward(tiny_model):
    """Each greedy token is the argmax of the teacher-forced logits over the finished sequence."""
    out = generate_plain(tiny_model, 6, {"music": None, "motion": None}, temperature=0.0)
    full = tiny_model(music_codes=out["music"], motion_codes=out["motion"])
    for m in ("music", "motion"):
        logits = getattr(full, f"{m}_logits")  # [B, K, S, V]; step s predicts frame s - k of codebook k
        for k in range(4):
            assert torch.equal(logits[:, k, k : k + 6].argmax(-1), out[m][:, k])
