"""Generation: cached == uncached, logits == full forward, tasks, CFG, sampling, bf16, input checks; mumo-generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mumo_ds.generate_cli import main as generate_main
from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.modeling.generation import TASKS, generate, sample_next
from mumo_ds.modeling.text import load_tokenizer, tokenize_captions
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


@pytest.mark.parametrize("stream", ["music", "motion"])
@pytest.mark.parametrize("codebook, code", [(0, 2054), (3, 2100), (1, -1)])
def test_given_codes_out_of_range_are_refused(tiny_model, stream, codebook, code):
    """As in ``forward``: 2054 in codebook 0 would read codebook 1's row of the shared table, 2100 in the
    last one is past the table, and -1 is the marker of a cell to sample (the given cell was resampled)."""
    prompt = random_codes(1, 8, seed=4)
    prompt[0, codebook, 3] = code
    other = "motion" if stream == "music" else "music"
    for frames in (8, 12):  # a whole given stream, and a prefix to continue
        with pytest.raises(ValueError, match=rf"prompts\['{stream}'\]: {stream}_codes: codes must lie in 0\.\.2047"):
            tiny_model.generate(frames, {stream: prompt, other: None}, guidance_scale=1.0)


def test_one_caption_serves_every_given_item(tiny_model):
    """Given codes for 2 items and 1 caption (what mumo-generate builds): the caption is used for both."""
    tokenizer = load_tokenizer("byt5")
    one = tokenize_captions(tokenizer, ["funk"], 32)
    two = tokenize_captions(tokenizer, ["funk", "funk"], 32)
    prompts = {"music": random_codes(2, 6, seed=5), "motion": None}
    for scale in (1.0, 4.0):
        out_one = tiny_model.generate(6, prompts, {"motion": one}, guidance_scale=scale, seed=3)
        out_two = tiny_model.generate(6, prompts, {"motion": two}, guidance_scale=scale, seed=3)
        assert torch.equal(out_one["motion"], out_two["motion"])
    three = tokenize_captions(tokenizer, ["a", "b", "c"], 32)
    with pytest.raises(ValueError, match=r"text\['motion'\]: 3 captions for a batch of 2"):
        tiny_model.generate(6, prompts, {"motion": three})
    with pytest.raises(ValueError, match=r"text\['motion'\]: 2 captions for a batch of 1"):
        tiny_model.generate(6, {"music": random_codes(1, 2, seed=5), "motion": None}, {"motion": two})



def test_batch_size_with_one_caption_and_its_contradictions(tiny_model):
    """One caption and batch_size=3 give 3 items, as 3 copies of the caption do; a batch_size the prompts or
    captions contradict is refused rather than ignored."""
    tokenizer = load_tokenizer("byt5")
    one, three = (tokenize_captions(tokenizer, ["funk"] * n, 32) for n in (1, 3))
    out_one = tiny_model.generate(5, {"music": None}, {"music": one}, batch_size=3, seed=2)
    out_three = tiny_model.generate(5, {"music": None}, {"music": three}, seed=2)
    assert out_one["music"].shape == (3, 4, 5)
    assert torch.equal(out_one["music"], out_three["music"])
    with pytest.raises(ValueError, match=r"batch_size=2, but the captions hold 3 items"):
        tiny_model.generate(5, {"music": None}, {"music": three}, batch_size=2)
    with pytest.raises(ValueError, match=r"batch_size=1, but the prompts hold 2 items"):
        tiny_model.generate(5, {"music": random_codes(2, 2, seed=5), "motion": None}, batch_size=1)


def test_sampling_runs_in_eval_mode_and_gives_the_model_back_in_its_mode(tiny_model, captions):
    """A model in training mode (sampled mid-training) samples as in eval mode: its caption dropout (0.3) and dropout
    would drop captions and break seeding. The model is back in training mode after."""
    text = text_of(captions, ("music",))
    want = []
    tiny_model.generate(6, {"music": None}, text, seed=5, step_logits=want)
    modes = [m.training for m in tiny_model.train().modules()]
    torch.manual_seed(0)  # caption dropout draws from torch's RNG: with these draws it drops a caption in training mode
    for _ in range(3):
        logits = []
        tiny_model.generate(6, {"music": None}, text, seed=5, step_logits=logits)
        assert all(torch.equal(a, b) for a, b in zip(logits, want, strict=True))
        assert tiny_model.training and [m.training for m in tiny_model.modules()] == modes


def test_captions_of_streams_not_generated_are_refused(tiny_model, captions):
    with pytest.raises(ValueError, match=r"text: captions for \['motion'\], which are not streams of this generation"):
        tiny_model.generate(4, {"music": None}, text_of(captions, ("music", "motion")))


def test_guidance_without_any_caption_does_not_double_the_batch(tiny_model, monkeypatch):
    """With no caption the conditional rows are the unconditional ones: one batch, codes of guidance 1."""
    rows = []
    step = tiny_model.decode_step
    monkeypatch.setattr(tiny_model, "decode_step", lambda columns, *a: rows.append(columns["music"].shape[0]) or step(columns, *a))
    prompts = {"music": random_codes(2, 2, seed=1)}
    plain = tiny_model.generate(5, prompts, guidance_scale=1.0, seed=4)["music"]
    assert torch.equal(tiny_model.generate(5, prompts, guidance_scale=4.0, seed=4)["music"], plain)
    assert set(rows) == {2}

# -- mumo-generate ------------------------------------------------------------------------
@pytest.fixture
def model_dir(tiny_model, tmp_path):
    """A folder written by ``save_pretrained`` alone: no tokenizer files (config.text_tokenizer is 'byt5')."""
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    return folder


def test_cli_captions_with_a_folder_without_tokenizer_files(model_dir, tmp_path):
    assert not (model_dir / "tokenizer_config.json").exists()
    generate_main(["--model", str(model_dir), "--task", "text2music", "--text", "funk", "--seconds", "0.1",
                   "--out", str(tmp_path / "out")])
    assert np.load(tmp_path / "out" / "music.npy").shape == (1, 4, 5)


def test_cli_given_codes_for_several_items_with_one_caption(model_dir, tmp_path):
    given = tmp_path / "given2.npy"
    np.save(given, random_codes(2, 4, seed=6).numpy().astype(np.int16))
    generate_main(["--model", str(model_dir), "--task", "music2motion", "--given", str(given), "--text", "funk",
                   "--out", str(tmp_path / "out")])
    assert np.load(tmp_path / "out" / "motion.npy").shape == (2, 4, 4)
    assert np.array_equal(np.load(tmp_path / "out" / "music.npy"), np.load(given))


def test_cli_prompt_seconds_continues_the_start_of_the_sample(tmp_path):
    """--prompt-seconds 0.2 continues frames 0..9 of the first val sample (the loader's crop is a random window)."""
    from mumo_ds.data import ShardWriter

    codec = {"name": "test-codec", "sample_rate": 32000, "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}
    motion_tokenizer = {"name": "test-motion", "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}
    music = random_codes(1, 200, seed=7)[0].numpy().astype(np.int16)  # [4, 200]: 4 s
    shards = ShardWriter(tmp_path / "data", "val", samples_per_shard=2, codec=codec, motion_tokenizer=motion_tokenizer)
    with shards as w:
        w.write("first", music=music, meta={"captions": {"music": "funk"}})
    torch.manual_seed(0)
    config = MuMoConfig.from_preset("tiny", music_codec="test-codec", motion_tokenizer="test-motion")
    MuMoForConditionalGeneration(config).save_pretrained(tmp_path / "model")
    args = ["--model", str(tmp_path / "model"), "--task", "text2music", "--seconds", "0.4", "--prompt-seconds", "0.2"]
    generate_main([*args, "--prompt-data", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    out = np.load(tmp_path / "out" / "music.npy")
    assert out.shape == (1, 4, 20) and np.array_equal(out[0, :, :10], music[:, :10])
    with pytest.raises(SystemExit, match="--prompt-seconds needs --prompt-data"):  # it was silently ignored
        generate_main([*args, "--out", str(tmp_path / "out2")])
    given = ["--model", str(tmp_path / "model"), "--task", "music2motion", "--prompt-data", str(tmp_path / "data")]
    with pytest.raises(SystemExit, match="--prompt-seconds continues the generated streams of a text2"):
        generate_main([*given, "--prompt-seconds", "0.2", "--out", str(tmp_path / "out3")])
    with pytest.raises(SystemExit, match="--prompt-seconds 0.4 covers all of --seconds 0.4: nothing would be generated"):
        generate_main([*args[:-2], "--prompt-seconds", "0.4", "--prompt-data", str(tmp_path / "data"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="--prompt-data on --task text2music continues its first val sample: give"):
        generate_main([*args[:-2], "--prompt-data", str(tmp_path / "data"), "--out", str(tmp_path / "o")])  # was ignored
