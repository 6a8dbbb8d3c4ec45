"""Generation: cached == uncached, logits == full forward, tasks, CFG, sampling, bf16."""

from __future__ import annotations

import pytest
import torch

from mumo_ds.modeling import MuMoForConditionalGeneration
from mumo_ds.modeling.generation import TASKS, generate, sample_next
from tests.conftest import random_codes


def text_of(captions, streams):
    return {m: (captions[f"{m}_caption_ids"], captions[f"{m}_caption_mask"]) for m in streams}


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_cached_generation_equals_the_uncached_reference(tiny_model, captions, guidance_scale):
    prompts = {"music": random_codes(2, 3, seed=1), "motion": None}
    kwargs = dict(text=text_of(captions, ("music", "motion")), guidance_scale=guidance_scale, seed=7, top_k=50)
    cached = generate(tiny_model, 10, prompts, use_cache=True, **kwargs)
    plain = generate(tiny_model, 10, prompts, use_cache=False, **kwargs)
    for m in ("music", "motion"):
        assert torch.equal(cached[m], plain[m])
    assert torch.equal(cached["music"][..., :3], prompts["music"])
    other_seed = generate(tiny_model, 10, prompts, use_cache=True, **{**kwargs, "seed": 8})
    assert not torch.equal(other_seed["motion"], cached["motion"])


@torch.no_grad()
def test_cached_step_logits_match_a_full_forward(tiny_model, captions):
    """Greedy, no guidance: the logits of every step equal the teacher-forced forward over the result."""
    logged = []
    text = text_of(captions, ("music", "motion"))
    out = generate(tiny_model, 7, {"music": None, "motion": None}, text, batch_size=2, guidance_scale=1.0,
                   temperature=0.0, step_logits=logged)
    full = tiny_model(music_codes=out["music"], motion_codes=out["motion"], **captions)
    for step in range(7 + 3):
        for j, m in enumerate(("music", "motion")):
            step_logit = logged[2 * step + j]  # [B, K, V]
            assert torch.allclose(step_logit, getattr(full, f"{m}_logits")[:, :, step], atol=1e-5, rtol=1e-4)
    for m in ("music", "motion"):  # and greedy tokens are the argmax of the full forward
        logits = getattr(full, f"{m}_logits")
        for k in range(4):
            assert torch.equal(logits[:, k, k : k + 7].argmax(-1), out[m][:, k])


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task(tiny_model, captions, task):
    generated, given = TASKS[task]
    prompts = {m: None for m in generated}
    if given:
        prompts[given] = random_codes(2, 8, seed=3)
    out = tiny_model.generate(8, prompts, text_of(captions, generated), seed=1)
    assert set(out) == set(generated) | ({given} if given else set())
    for m in generated:
        assert out[m].shape == (2, 4, 8) and out[m].dtype == torch.long
        assert int(out[m].min()) >= 0 and int(out[m].max()) < 2048
    if given:
        assert torch.equal(out[given], prompts[given])  # the condition is teacher-forced, never resampled


def test_given_stream_conditions_the_generated_one(tiny_model):
    def motion_logits(seed):
        logged = []
        tiny_model.generate(8, {"music": random_codes(1, 8, seed=seed), "motion": None}, temperature=0.0, step_logits=logged)
        return torch.stack(logged)

    first, again, other = motion_logits(1), motion_logits(1), motion_logits(2)
    assert torch.equal(first, again)
    assert not torch.allclose(first[1:], other[1:])  # step 0 reads only pads; later steps see the music


def test_guidance_changes_the_logits(tiny_model, captions):
    def run(scale):
        logged = []
        tiny_model.generate(3, {"music": None}, text_of(captions, ("music",)), guidance_scale=scale,
                            temperature=0.0, step_logits=logged)
        return torch.stack(logged)

    with_text, stronger = run(1.0), run(4.0)
    assert not torch.allclose(with_text, stronger)


def test_sampling_filters():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(500, 1)
    assert set(sample_next(logits, top_k=2, top_p=0.0, temperature=1.0, generator=g).tolist()) == {2, 3}
    # top-p 0.6: p = softmax([0,1,2,3]) = [.03, .09, .24, .64]: the top id alone reaches 0.6
    assert set(sample_next(logits, top_k=0, top_p=0.6, temperature=1.0, generator=g).tolist()) == {3}
    assert set(sample_next(logits, top_k=0, top_p=0.8, temperature=1.0, generator=g).tolist()) == {2, 3}
    assert sample_next(logits[:1], 0, 0.0, 0.0, g).item() == 3


def test_bf16_load_with_device_map_and_generate(tiny_model, captions, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    model = MuMoForConditionalGeneration.from_pretrained(tmp_path, device_map="cpu", dtype=torch.bfloat16).eval()
    assert model.dtype == torch.bfloat16 and model.heads["music"].proj.weight.dtype == torch.bfloat16
    out = model.generate(6, {"music": None, "motion": None}, text_of(captions, ("music", "motion")), seed=0)
    assert out["music"].shape == (2, 4, 6) and int(out["motion"].max()) < 2048
