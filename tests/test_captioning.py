"""Stage-3 captioning: the mask, the untouched LM path, losses, beam/greedy captions, save/load."""

from __future__ import annotations

import copy

import pytest
import torch

from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.modeling.captioning import bidirectional_stream_mask
from mumo_ds.modeling.text import load_tokenizer, tokenize_captions
from tests.conftest import random_codes


@pytest.fixture
def captioner(tiny_model):
    model = MuMoForConditionalGeneration(MuMoConfig.from_preset("tiny", captioning=True))
    missing, unexpected = model.load_state_dict(tiny_model.state_dict(), strict=False)
    assert not unexpected and all("caption" in n for n in missing)
    model.init_captioning()
    return model.eval()


def test_mask_is_bidirectional_inside_each_stream():
    lengths = (2, 3)
    got = bidirectional_stream_mask(lengths, cross_stream=False)
    stream = [i for i, n in enumerate(lengths) for _ in range(n)]
    ref = torch.tensor([[stream[i] == stream[j] for j in range(5)] for i in range(5)])
    assert torch.equal(got, ref)
    assert bidirectional_stream_mask(lengths, cross_stream=True) is None


@torch.no_grad()
def test_language_model_path_is_bit_identical_with_captioning_modules(tiny_model, captioner, captions):
    music, motion = random_codes(2, 9, seed=1), random_codes(2, 9, seed=2)
    a = tiny_model(music_codes=music, motion_codes=motion, **captions)
    b = captioner(music_codes=music, motion_codes=motion, **captions)
    assert torch.equal(a.music_logits, b.music_logits) and torch.equal(a.motion_logits, b.motion_logits)
    # and the caption attention really is a separate module: perturbing it leaves the LM path alone
    for layer in captioner.layers:
        layer.caption_self_attn.q_proj.weight.add_(1.0)
    c = captioner(music_codes=music, motion_codes=motion, **captions)
    assert torch.equal(a.music_logits, c.music_logits)


def test_init_copies_self_attention(captioner):
    for layer in captioner.layers:
        assert torch.equal(layer.caption_self_attn.k_proj.weight, layer.self_attn.k_proj.weight)
        assert layer.caption_self_attn.k_proj.weight.data_ptr() != layer.self_attn.k_proj.weight.data_ptr()


@torch.no_grad()
def test_streams_do_not_see_each_other_and_padding_is_invisible(captioner, captions):
    music, motion = random_codes(2, 8, seed=3), random_codes(2, 8, seed=4)
    both = captioner(music_codes=music, motion_codes=motion, task="caption", **captions)
    alone = captioner(music_codes=music, task="caption", **captions)
    assert torch.allclose(both.music_caption_loss, alone.music_caption_loss, atol=1e-6)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 6:] = False
    padded = captioner(music_codes=music, music_mask=mask, task="caption", **captions)
    short = captioner(music_codes=music[..., :6], task="caption", **captions)
    assert torch.allclose(padded.music_caption_loss, short.music_caption_loss, atol=1e-5)


def test_caption_training_lowers_the_loss_and_captions_decode(captioner):
    tok = load_tokenizer("byt5")
    ids, mask = tokenize_captions(tok, ["funky waacking dance", "slow jazz piano"], 32)
    music = random_codes(2, 10, seed=5)
    captioner.train()
    params = [p for n, p in captioner.named_parameters() if "caption" in n]
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(60):
        out = captioner(music_codes=music, music_caption_ids=ids, music_caption_mask=mask, task="caption")
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    captioner.eval()
    greedy = captioner.caption(music_codes=music, num_beams=1, max_new_tokens=24, tokenizer=tok)["music"]
    beam = captioner.caption(music_codes=music, num_beams=4, max_new_tokens=24, tokenizer=tok)["music"]
    assert len(greedy) == len(beam) == 2 and all(isinstance(t, str) for t in greedy + beam)
    assert greedy == captioner.caption(music_codes=music, num_beams=1, max_new_tokens=24, tokenizer=tok)["music"]
    assert all(text.startswith(("funky", "slow")) for text in greedy + beam), greedy + beam  # it learned words


@torch.no_grad()
def test_save_and_load_keep_the_captioner(captioner, tmp_path):
    music = random_codes(1, 6, seed=6)
    before = captioner.caption(music_codes=music, num_beams=2, max_new_tokens=8, tokenizer=load_tokenizer("byt5"))
    captioner.save_pretrained(tmp_path)
    load_tokenizer("byt5").save_pretrained(tmp_path)
    loaded = MuMoForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.captioning
    assert loaded.caption(music_codes=music, num_beams=2, max_new_tokens=8) == before
    ids = torch.tensor([[104, 105, 1]])
    a = captioner(music_codes=music, music_caption_ids=ids, task="caption").loss
    b = loaded(music_codes=music, music_caption_ids=ids, task="caption").loss
    assert torch.equal(a, b)



def test_a_language_model_loaded_for_captioning_ties_the_caption_decoder(tiny_model, tmp_path):
    """Stage 3 loads stage 2's export with captioning=True: the T5 decoder's embeddings and LM head must be one tensor
    in training as in the exported folder, or the export keeps only one of the trained copies."""
    tiny_model.save_pretrained(tmp_path)
    loaded = MuMoForConditionalGeneration.from_pretrained(tmp_path, captioning=True)
    t5 = loaded.caption_decoder.t5
    assert loaded.config.tie_word_embeddings
    assert t5.lm_head.weight is t5.shared.weight and t5.decoder.embed_tokens.weight is t5.shared.weight

def test_captioning_needs_the_modules(tiny_model):
    with pytest.raises(ValueError, match="captioning=True"):
        tiny_model.caption(music_codes=random_codes(1, 4, seed=0))


def test_the_caption_decoder_depth_may_be_given_as_t5_s_num_layers():
    from mumo_ds.modeling.captioning import CaptionDecoder

    shape = dict(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_heads=4)
    for depth in (dict(num_layers=3), dict(num_decoder_layers=3), dict(num_layers=1, num_decoder_layers=3)):
        decoder = CaptionDecoder(64, {**shape, **depth})
        assert len(decoder.t5.decoder.block) == 3 and len(decoder.t5.encoder.block) == 0, depth
    with pytest.raises(ValueError, match="give its depth as num_decoder_layers"):
        CaptionDecoder(64, shape)


def test_caption_runs_in_eval_mode(captioner):
    """Greedy captions of a model in training mode (T5 and MuMo dropout) are its eval-mode captions, and the model
    stays in training mode."""
    codes = random_codes(2, 12, seed=3)
    want = captioner.caption(music_codes=codes, num_beams=1, max_new_tokens=8)
    captioner.train()
    for _ in range(2):
        assert captioner.caption(music_codes=codes, num_beams=1, max_new_tokens=8) == want
    assert captioner.training and captioner.caption_decoder.t5.training
