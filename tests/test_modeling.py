"""The MuMo model: delay pattern, mask, causality, modality experts, save/load."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModel

from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration, build_delay_pattern, revert_delay_pattern
from mumo_ds.modeling.attention import (
    ATTENTION_FUNCTIONS,
    FrameCausal,
    MuMoAttention,
    causal_path_skips_masked_keys,
    eager_attention,
    frame_causal_mask,
)
from mumo_ds.modeling.delay_pattern import delayed_frame_mask
from mumo_ds.modeling.generation import generate
from mumo_ds.modeling.moe import split_segments
from tests.conftest import random_codes


def test_delay_pattern_layout_and_exact_round_trip():
    codes = torch.arange(12).view(1, 3, 4)  # K=3, T=4
    delayed = build_delay_pattern(codes, special_id=-1)
    expected = torch.tensor(
        [[0, 1, 2, 3, -1, -1], [-1, 4, 5, 6, 7, -1], [-1, -1, 8, 9, 10, 11]]
    )
    assert torch.equal(delayed[0], expected)
    big = random_codes(3, 37, seed=1)
    assert torch.equal(revert_delay_pattern(build_delay_pattern(big, 2048)), big)


def test_delayed_frame_mask_marks_real_frames_only():
    mask = torch.tensor([[True, True, False]])
    got = delayed_frame_mask(mask, num_codebooks=2)
    assert torch.equal(got[0].int(), torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]]))


@pytest.mark.parametrize("lengths", [(5, 5), (3, 6), (7,), (1, 1)])
def test_frame_causal_mask_equals_brute_force(lengths):
    got = frame_causal_mask(lengths)
    positions = [t for n in lengths for t in range(n)]
    ref = torch.tensor([[positions[j] <= positions[i] for j in range(len(positions))] for i in range(len(positions))])
    if len(lengths) == 1:
        assert got is None  # the single-stream case runs SDPA's is_causal path
        assert torch.equal(ref, torch.ones(len(ref), len(ref)).tril().bool())
    else:
        assert torch.equal(got, ref)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("lengths", [(100, 100), (90, 130), (70, 200, 33), (5, 7), (150,)])
def test_chunked_frame_causal_attention_equals_the_dense_mask(lengths, implementation):
    torch.manual_seed(0)
    attn = MuMoAttention(MuMoConfig.from_preset("tiny", hidden_size=24, num_attention_heads=3,
                                                attn_implementation=implementation)).double()
    x = torch.randn(2, sum(lengths), 24, dtype=torch.float64, requires_grad=True)
    chunked = FrameCausal(lengths, chunks=4, min_chunk=16)
    assert len(chunked.sizes) == (1 if max(lengths) < 16 else 4)
    mask = frame_causal_mask(lengths)  # None for one stream: plain causal
    got, ref = attn(x, attn_mask=chunked), attn(x, attn_mask=mask, is_causal=mask is None)
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)
    params = (x, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight)
    for g, r in zip(torch.autograd.grad(got.square().sum(), params), torch.autograd.grad(ref.square().sum(), params)):
        assert torch.allclose(g, r, rtol=0, atol=1e-10)


def test_self_attention_projects_q_k_v_in_one_gemm_as_the_three_linears_would():
    torch.manual_seed(0)
    attn = MuMoAttention(MuMoConfig.from_preset("tiny", hidden_size=24, num_attention_heads=3)).double()
    x = torch.randn(2, 9, 24, dtype=torch.float64, requires_grad=True)
    got = attn.project_qkv(x)
    ref = tuple(attn._heads(proj(x)) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    assert all(torch.allclose(g, r, rtol=0, atol=1e-13) for g, r in zip(got, ref))
    params = (x, *attn.stacked_weights())
    loss = lambda qkv: sum((t * (i + 1)).sin().sum() for i, t in enumerate(qkv))  # noqa: E731
    for g, r in zip(torch.autograd.grad(loss(got), params), torch.autograd.grad(loss(ref), params)):
        assert torch.allclose(g, r, rtol=0, atol=1e-12)


def test_the_stacked_q_k_v_gemm_runs_when_gradients_are_recorded_only(tiny_model, monkeypatch):
    """It pays off through its backward; at every decoding step stacking the weights would cost more than it saves."""
    calls = []
    stacked = MuMoAttention.project_qkv
    monkeypatch.setattr(MuMoAttention, "project_qkv", lambda self, x: calls.append(1) or stacked(self, x))
    batch = dict(music_codes=random_codes(1, 20, seed=0))
    with torch.no_grad():
        reference = tiny_model(**batch).loss
    assert not calls
    loss = tiny_model(**batch).loss
    assert len(calls) == tiny_model.config.num_hidden_layers and torch.allclose(loss, reference, rtol=1e-6)


def test_chunked_eager_attention_under_bf16_autocast_matches_the_dense_mask():
    """The eager kernel's one-node chunk plan (its own backward) in the dtype CPU training uses."""
    torch.manual_seed(0)
    attn = MuMoAttention(MuMoConfig.from_preset("tiny", hidden_size=64, num_attention_heads=4,
                                                attn_implementation="eager"))
    lengths = (120, 90)
    x = torch.randn(2, sum(lengths), 64, requires_grad=True)
    results = []
    for mask in (FrameCausal(lengths, chunks=4, min_chunk=16), frame_causal_mask(lengths)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attn(x, attn_mask=mask)
        assert out.dtype == torch.bfloat16
        grads = torch.autograd.grad(out.float().square().sum(), (x, attn.q_proj.weight, attn.v_proj.weight))
        results.append((out.float(), *grads))
    for got, ref in zip(*results):
        assert got.dtype == torch.float32 and torch.allclose(got, ref, rtol=0.05, atol=0.05 * ref.abs().max().item())


def test_frozen_text_encoder_stays_in_eval_mode_so_training_forwards_are_deterministic(tiny_config, captions):
    torch.manual_seed(0)
    model = MuMoForConditionalGeneration(tiny_config).train()
    model.config.caption_dropout = 0.0
    assert model.training and not model.text_encoder.training  # T5's own dropout (0.1) stays off
    batch = dict(music_codes=random_codes(2, 20, seed=0), **captions)
    assert torch.equal(model(**batch).loss, model(**batch).loss)
    model.text_encoder.requires_grad_(True)  # a trainable encoder follows the mode like any module
    assert model.train().text_encoder.training and not model.eval().text_encoder.training


def test_chunked_eager_attention_under_activation_checkpointing_gives_the_same_gradients(tiny_config, captions):
    """Recomputing each layer in the backward re-runs the one-node chunk plan: same loss, same gradients."""
    torch.manual_seed(0)
    model = MuMoForConditionalGeneration(tiny_config).double().train()
    model.config.caption_dropout = 0.0
    model.set_attn_implementation("eager")
    batch = dict(music_codes=random_codes(2, 150, seed=0), motion_codes=random_codes(2, 120, seed=1), **captions)
    results = []
    for checkpointing in (False, True):
        model.gradient_checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss_ref, grads_ref), (loss_ckpt, grads_ckpt) = results
    assert torch.equal(loss_ckpt, loss_ref) and grads_ckpt.keys() == grads_ref.keys()
    assert all(torch.allclose(grads_ckpt[n], grads_ref[n], rtol=0, atol=1e-12) for n in grads_ref)


@pytest.mark.parametrize("case", ["causal", "bool_mask", "float_mask", "cross", "no_mask"])
def test_eager_attention_equals_sdpa(case):
    torch.manual_seed(0)
    lk = 7 if case == "cross" else 11
    q = torch.randn(2, 3, 11, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 3, lk, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    kwargs = {
        "causal": dict(is_causal=True),
        "bool_mask": dict(attn_mask=torch.rand(2, 1, 11, lk) > 0.3),
        "float_mask": dict(attn_mask=torch.randn(1, 3, 11, lk, dtype=torch.float64)),
        "cross": dict(attn_mask=torch.tensor([True] * 5 + [False] * 2)[None, None, None, :]),
        "no_mask": {},
    }[case]
    if case == "bool_mask":
        kwargs["attn_mask"][..., 0] = True  # no fully masked row (SDPA kernels disagree on those)
    got, ref = eager_attention(q, k, v, **kwargs), torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)
    for g, r in zip(torch.autograd.grad(got.sin().sum(), (q, k, v)), torch.autograd.grad(ref.sin().sum(), (q, k, v))):
        assert torch.allclose(g, r, rtol=0, atol=1e-12)


def test_attn_implementation_switches_every_layer_and_keeps_the_loss(tiny_model, captions, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setitem(ATTENTION_FUNCTIONS, "eager", lambda *a, **kw: calls.append(1) or eager_attention(*a, **kw))
    batch = dict(music_codes=random_codes(2, 40, seed=0), motion_codes=random_codes(2, 40, seed=1), **captions)
    model = copy.deepcopy(tiny_model).double()
    ref = model(**batch).loss
    assert not calls  # the default is SDPA
    model.set_attn_implementation("eager")
    got = model(**batch).loss
    # per layer: self-attention (one call per time chunk; 40 frames is one chunk) + one cross-attention per stream
    assert len(calls) == model.config.num_hidden_layers * 3
    assert torch.allclose(got, ref, rtol=0, atol=1e-10)
    tiny_model.save_pretrained(tmp_path)
    loaded = MuMoForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager")
    assert loaded.layers[-1].encoder_attn.config._attn_implementation == "eager"
    model.config._attn_implementation = "flex_attention"  # HF itself refuses it in set_attn_implementation
    with pytest.raises(ValueError, match="MuMo has no attn_implementation='flex_attention'; use one of"):
        model(**batch)


def test_one_stream_is_chunked_where_the_kernels_causal_path_would_compute_the_masked_half(tiny_model, monkeypatch):
    """SDPA's CPU kernel skips whole 512-key blocks only: a shorter stream is chunked, a longer one runs is_causal;
    the eager kernel is always chunked; SDPA on GPU always runs is_causal."""
    assert not causal_path_skips_masked_keys("sdpa", "cpu", 512) and causal_path_skips_masked_keys("sdpa", "cpu", 513)
    assert not causal_path_skips_masked_keys(None, "cpu", 100)  # a config no model has resolved yet: SDPA
    assert causal_path_skips_masked_keys("sdpa", "cuda", 100) and not causal_path_skips_masked_keys("eager", "cuda", 4096)
    seen = []

    def spy(q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0):
        if k.shape[-2] > 1:  # self-attention (without a caption, cross-attention has one key)
            seen.append((is_causal, attn_mask is not None))
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)

    monkeypatch.setitem(ATTENTION_FUNCTIONS, "sdpa", spy)
    layers = tiny_model.config.num_hidden_layers
    for frames, expected in ((509, (False, True)), (510, (True, False))):  # 512 and 513 delayed positions
        seen.clear()
        with torch.no_grad():
            tiny_model(music_codes=random_codes(1, frames, seed=0))
        assert seen == [expected] * (layers * (4 if expected[1] else 1))  # 4 time chunks, or one causal call


def test_config_presets_are_explicit():
    small = MuMoConfig.from_preset("small")
    assert (small.hidden_size, small.num_hidden_layers, small.num_attention_heads, small.ffn_dim) == (1024, 24, 16, 4096)
    assert (small.num_codebooks, small.codebook_size) == (4, 2048)
    with pytest.raises(ValueError, match="unknown preset"):
        MuMoConfig.from_preset("huge")


@torch.no_grad()
@pytest.mark.parametrize("streams", [("music", "motion"), ("music",), ("motion",)])
def test_changing_a_future_frame_never_changes_earlier_logits(tiny_model, captions, streams):
    frames, changed = 12, 7
    codes = {m: random_codes(2, frames, seed=i) for i, m in enumerate(streams)}
    base = tiny_model(**{f"{m}_codes": c for m, c in codes.items()}, **captions)
    for target in streams:
        edited = {m: c.clone() for m, c in codes.items()}
        edited[target][:, :, changed] = (edited[target][:, :, changed] + 1) % 2048
        out = tiny_model(**{f"{m}_codes": c for m, c in edited.items()}, **captions)
        for m in streams:
            before, after = getattr(base, f"{m}_logits"), getattr(out, f"{m}_logits")
            # frame `changed` enters the input at step changed + 1 (and later for the delayed codebooks)
            assert torch.equal(before[:, :, : changed + 1], after[:, :, : changed + 1])
            if m == target:
                assert not torch.equal(before[:, :, changed + 1 :], after[:, :, changed + 1 :])
        # the other stream sees the change too, from the same step on (frame-causal, not stream-causal)
        other = [m for m in streams if m != target]
        if other:
            assert not torch.equal(getattr(base, f"{other[0]}_logits"), getattr(out, f"{other[0]}_logits"))


def test_segments_split_the_streams_and_must_cover_the_input():
    x = torch.arange(12.0).view(1, 6, 2)
    music, motion = split_segments(x, [("music", 4), ("motion", 2)])
    assert torch.equal(music, x[:, :4]) and torch.equal(motion, x[:, 4:])
    with pytest.raises(ValueError, match=r"segments \[\('music', 5\)\] cover 5 positions, the input has 6"):
        split_segments(x, [("music", 5)])


@torch.no_grad()
def test_moe_slices_depend_only_on_their_own_expert(tiny_model):
    layer = tiny_model.layers[0].ffn
    x = torch.randn(2, 9, tiny_model.config.hidden_size)
    segments = [("music", 4), ("motion", 5)]
    base = layer(x, segments)
    for perturbed, untouched in (("motion", slice(0, 4)), ("music", slice(4, 9))):
        other = copy.deepcopy(layer)
        for p in other.experts[perturbed].parameters():
            p.add_(torch.randn_like(p))
        out = other(x, segments)
        assert torch.equal(out[:, untouched], base[:, untouched])
        changed = slice(4, 9) if perturbed == "motion" else slice(0, 4)
        assert not torch.equal(out[:, changed], base[:, changed])


@torch.no_grad()
def test_music_only_logits_ignore_every_motion_weight(tiny_model, captions):
    music = random_codes(2, 10, seed=3)
    base = tiny_model(music_codes=music, **captions).music_logits
    other = copy.deepcopy(tiny_model)
    touched = 0
    for name, p in other.named_parameters():
        if "motion" in name:
            p.add_(torch.randn_like(p))
            touched += 1
    assert touched == 2 + 2 * 3 * len(other.layers) - 2 * len(other.layers)  # embedding, heads, 4 tensors per expert
    assert torch.equal(other(music_codes=music, **captions).music_logits, base)
    # and the check can fail: perturbing a shared weight changes the music logits
    other.layers[0].self_attn.q_proj.weight.add_(1.0)
    assert not torch.equal(other(music_codes=music, **captions).music_logits, base)


def test_losses_are_per_codebook_and_weighted(tiny_model, captions):
    music, motion = random_codes(2, 8, seed=4), random_codes(2, 8, seed=5)
    out = tiny_model(music_codes=music, motion_codes=motion, **captions)
    assert out.music_codebook_losses.shape == (4,) and out.motion_codebook_losses.shape == (4,)
    assert torch.allclose(out.music_loss, out.music_codebook_losses.mean())
    w = tiny_model.config.loss_weights
    expected = (w["music"] * out.music_loss + w["motion"] * out.motion_loss) / (w["music"] + w["motion"])
    assert torch.allclose(out.loss, expected)
    # padded frames are ignored: a padded batch equals the unpadded one on the real frames
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 6:] = False
    padded = tiny_model(music_codes=music, music_mask=mask, **captions)
    short = tiny_model(music_codes=music[:, :, :6], **captions)
    assert torch.allclose(padded.music_loss, short.music_loss, atol=1e-6)
    # ... whatever the padding holds (the pad id, -100): only real frames are range-checked
    for fill in (2048, -100):
        odd = tiny_model(music_codes=music.masked_fill(~mask[:, None], fill), music_mask=mask, **captions)
        assert torch.equal(odd.music_logits, padded.music_logits) and torch.equal(odd.loss, padded.loss)
    # a weight of 0 leaves its stream out of the total (it divided 0 by 0 on a batch of that stream alone)
    zero = copy.deepcopy(tiny_model)
    zero.config.loss_weights = {"music": 1.0, "motion": 0.0}
    assert torch.equal(zero(music_codes=music, motion_codes=motion, **captions).loss, out.music_loss)
    assert zero(motion_codes=motion, **captions).loss.item() == 0.0
    # so does a stream without targets: a batch whose frames are all padding
    empty = torch.zeros(2, 8, dtype=torch.bool)
    assert tiny_model(music_codes=music, music_mask=empty, **captions).loss.item() == 0.0


def test_config_refuses_loss_weights_and_modalities_it_cannot_train_with():
    with pytest.raises(ValueError, match=r"give every modality of \['music', 'motion'\] a weight >= 0"):
        MuMoConfig.from_preset("tiny", loss_weights={"music": 1.0})  # was a KeyError at the first motion batch
    for weights in ({"music": -1.0, "motion": 1.0}, {"music": 0.0, "motion": 0.0}):
        with pytest.raises(ValueError, match="at least one a weight > 0"):
            MuMoConfig.from_preset("tiny", loss_weights=weights)
    with pytest.raises(ValueError, match="at most once"):
        MuMoConfig.from_preset("tiny", modalities=["music", "music"])
    with pytest.raises(ValueError, match=r"caption_dropout=1.5: a probability in \[0, 1\]"):
        MuMoConfig.from_preset("tiny", caption_dropout=1.5)
    assert MuMoConfig.from_preset("tiny", modalities=["music"], loss_weights={"music": 1.0}).loss_weights == {"music": 1.0}


def test_under_autocast_every_layer_carries_the_residual_stream_in_the_autocast_dtype(tiny_model, captions):
    """As with bf16 weights: no layer sees fp32 activations under bf16 autocast, in the teacher-forced forward
    and in cached decoding alike; the weights and their gradients stay fp32, and without autocast all is fp32."""
    seen = []
    for module in (*tiny_model.layers, tiny_model.norm):
        module.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    batch = dict(music_codes=random_codes(2, 12, seed=0), motion_codes=random_codes(2, 12, seed=1), **captions)
    reference = tiny_model(**batch).loss
    assert set(seen) == {torch.float32}
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = tiny_model(**batch).loss
        text = {m: (captions[f"{m}_caption_ids"], captions[f"{m}_caption_mask"]) for m in ("music", "motion")}
        generate(tiny_model, 3, {"music": None, "motion": None}, text, batch_size=2)
    n = tiny_model.config.num_hidden_layers + 1
    assert set(seen) == {torch.bfloat16} and len(seen) == n * (1 + 3 + 3)  # the forward, then 3 frames + 3 delay steps
    loss.backward()
    assert tiny_model.embeddings["music"].table.weight.grad.dtype == torch.float32
    assert torch.allclose(loss.float(), reference, rtol=0.02)


def test_bad_codes_are_refused_with_the_field_named(tiny_model):
    with pytest.raises(ValueError, match=r"motion_codes: codes must lie in 0\.\.2047"):
        tiny_model(motion_codes=torch.full((1, 4, 3), 2048))
    with pytest.raises(ValueError, match=r"music_codes: expected shape \[B, 4, T\]"):
        tiny_model(music_codes=torch.zeros(1, 3, 5, dtype=torch.long))


def test_bad_masks_captions_and_arguments_are_refused_with_the_field_named(tiny_model, captions):
    music, motion = random_codes(2, 8, seed=4), random_codes(2, 8, seed=5)
    ids, mask = captions["music_caption_ids"], captions["music_caption_mask"]
    with pytest.raises(ValueError, match=r"music_caption_ids: shape \[1, \d+\], expected \[2, L\]"):
        tiny_model(music_codes=music, music_caption_ids=ids[:1], music_caption_mask=mask[:1])  # was broadcast
    with pytest.raises(ValueError, match="music_caption_mask: shape"):
        tiny_model(music_codes=music, music_caption_ids=ids, music_caption_mask=mask[:, :3])
    with pytest.raises(ValueError, match=r"music_mask: shape \[1, 8\], expected \[2, 8\]"):
        tiny_model(music_codes=music, music_mask=torch.ones(1, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"different batch sizes \{'music': 2, 'motion': 1\}"):
        tiny_model(music_codes=music, motion_codes=motion[:1])
    padded = torch.ones(2, 8, dtype=torch.bool)
    padded[1, 5:] = False
    with pytest.raises(ValueError, match="music_mask pads frames the other stream does not"):  # motion would attend it
        tiny_model(music_codes=music, motion_codes=motion, music_mask=padded)
    shared = tiny_model(music_codes=music, motion_codes=motion, music_mask=padded, motion_mask=padded)
    assert torch.isfinite(shared.loss)
    with pytest.raises(TypeError, match="music_caption_id"):  # a misspelt caption trained without it
        tiny_model(music_codes=music, music_caption_id=ids)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_an_empty_caption_is_the_null_condition(tiny_model, implementation):
    """A caption whose mask is all 0 (an item without words) conditions as no caption does, in both kernels
    (eager attention over no key at all gave NaN)."""
    from mumo_ds.modeling.text import load_tokenizer, tokenize_captions, tokenize_conditions

    tiny_model.set_attn_implementation(implementation)
    music = random_codes(3, 6, seed=1)
    ids, mask = tokenize_conditions(load_tokenizer("byt5"), ["funk", "", "  "], 32)  # a sample without a caption
    assert mask[0].sum() == 5 and mask[1:].sum() == 0
    assert tokenize_captions(load_tokenizer("byt5"), ["funk", "", "  "], 32)[1][1].sum() == 1  # as a target: "</s>"
    out = tiny_model(music_codes=music, music_caption_ids=ids, music_caption_mask=mask)
    none = tiny_model(music_codes=music[1:])
    assert torch.isfinite(out.music_logits).all()
    torch.testing.assert_close(out.music_logits[1:], none.music_logits, atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_save_and_from_pretrained_give_bit_identical_logits(tiny_model, captions, tmp_path):
    music, motion = random_codes(2, 9, seed=6), random_codes(2, 9, seed=7)
    base = tiny_model(music_codes=music, motion_codes=motion, **captions)
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "mumo"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MuMoForConditionalGeneration)
    assert not any(p.requires_grad for p in loaded.text_encoder.parameters())
    out = loaded(music_codes=music, motion_codes=motion, **captions)
    assert torch.equal(out.music_logits, base.music_logits)
    assert torch.equal(out.motion_logits, base.motion_logits)


def test_motion_initialised_as_a_copy_of_music(tiny_model):
    tiny_model.init_motion_from_music()
    emb = tiny_model.embeddings
    assert torch.equal(emb["motion"].table.weight, emb["music"].table.weight)
    assert emb["motion"].table.weight.data_ptr() != emb["music"].table.weight.data_ptr()
    experts = tiny_model.layers[1].ffn.experts
    assert torch.equal(experts["motion"].fc1.weight, experts["music"].fc1.weight)


def test_caption_dropout_drops_per_sample(tiny_config):
    cfg = MuMoConfig.from_preset("tiny", caption_dropout=1.0)
    model = MuMoForConditionalGeneration(cfg).train()
    ids = torch.tensor([[104, 105, 1]])
    states, mask = model.encode_text(ids, torch.ones_like(ids), 1, "cpu")
    assert torch.count_nonzero(states) == 0 and mask.sum() == 1
    model.eval()
    states, mask = model.encode_text(ids, torch.ones_like(ids), 1, "cpu")
    assert torch.count_nonzero(states) > 0 and mask.sum() == 3


def test_codebook_cross_entropy_in_pieces_equals_one_pass():
    from mumo_ds.modeling.losses import IGNORE_INDEX, PIECE_ROWS, codebook_cross_entropy

    torch.manual_seed(0)
    b, k, s, v = 2, 4, 700, 2048
    assert b * k * s > 2 * PIECE_ROWS and b * k * s % PIECE_ROWS  # several pieces, the last one shorter
    labels = torch.randint(0, v, (b, k, s))
    labels[:, 1, :50] = IGNORE_INDEX
    labels[:, 3] = IGNORE_INDEX  # a codebook without targets contributes 0
    valid = labels != IGNORE_INDEX
    for dtype in (torch.float32, torch.bfloat16):
        leaf = (torch.randn(b, s, k, v) * 3).to(dtype).requires_grad_()
        mean, per_codebook = codebook_cross_entropy(leaf.transpose(1, 2), labels)  # [B, K, S, V] view, as the heads give it
        mean.backward()
        # reference: one fp32 cross-entropy over the whole grid (what autocast runs), its gradient rounded to dtype
        ref = leaf.detach().float().requires_grad_()
        ce = torch.nn.functional.cross_entropy(
            ref.transpose(1, 2).reshape(-1, v), labels.reshape(-1), reduction="none").view(b, k, s)
        expected = (ce * valid).sum(dim=(0, 2)) / valid.sum(dim=(0, 2)).clamp_min(1)
        expected.mean().backward()
        assert per_codebook.dtype == torch.float32 and per_codebook[3] == 0
        torch.testing.assert_close(per_codebook, expected, rtol=1e-6, atol=0)  # rows agree up to the kernels' rounding
        torch.testing.assert_close(mean, expected.mean(), rtol=1e-6, atol=0)
        assert leaf.grad.dtype == dtype and not leaf.grad[:, :, 3].any()  # no target, no gradient
        ulp = 1e-5 if dtype == torch.float32 else 2**-7  # bf16: at most one unit in the last place
        torch.testing.assert_close(leaf.grad, ref.grad.to(dtype), rtol=ulp, atol=1e-9)


def test_row_cross_entropy_operator_gradient_and_registration():
    """float64 gradcheck of the custom operator's backward, and torch.library's checks of its fake (compile)
    and autograd registrations."""
    from mumo_ds.modeling.losses import IGNORE_INDEX, PIECE_ROWS, row_cross_entropy

    torch.manual_seed(0)
    rows = torch.randn(PIECE_ROWS + 44, 37, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 37, (PIECE_ROWS + 44,))
    targets[::7] = IGNORE_INDEX
    assert torch.autograd.gradcheck(lambda x: row_cross_entropy(x, targets), (rows,))
    torch.library.opcheck(torch.ops.mumo.row_cross_entropy.default, (rows, targets))
