"""Warm start from MusicGen: the converted model's music logits equal MusicGen's decoder logits."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    T5Config,
)

from mumo_ds.modeling import MuMoForConditionalGeneration, build_delay_pattern
from mumo_ds.modeling.convert_musicgen import convert, mumo_config_from_musicgen
from mumo_ds.modeling.text import load_tokenizer, tokenize_captions
from tests.conftest import random_codes


def tiny_musicgen_config(text_width: int, channels: int = 1) -> MusicgenConfig:
    text = T5Config(vocab_size=384, d_model=text_width, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    audio = EncodecConfig(
        sampling_rate=32000, audio_channels=channels, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048,
        target_bandwidths=[2.2], hidden_size=16, num_filters=4, num_lstm_layers=1, codebook_dim=16,
        normalize=False, use_causal_conv=False, norm_type="weight_norm",
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=2048, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, ffn_dim=96,
        num_codebooks=4 * channels, audio_channels=channels,
    )
    return MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())


def tiny_musicgen(text_width: int) -> MusicgenForConditionalGeneration:
    torch.manual_seed(0)
    return MusicgenForConditionalGeneration(tiny_musicgen_config(text_width)).eval()


@torch.no_grad()
def check(tmp_path, text_width):
    musicgen = tiny_musicgen(text_width)
    musicgen.save_pretrained(tmp_path / "musicgen")
    load_tokenizer("byt5").save_pretrained(tmp_path / "musicgen")
    convert(tmp_path / "musicgen", tmp_path / "mumo")
    mumo = MuMoForConditionalGeneration.from_pretrained(tmp_path / "mumo").eval()
    assert (tmp_path / "mumo" / "codec" / "config.json").exists()

    ids, mask = tokenize_captions(load_tokenizer(str(tmp_path / "mumo")), ["techno with a deep kick", "calm piano"], 32)
    codes = random_codes(2, 12, seed=4)
    delayed = build_delay_pattern(codes, 2048)
    inputs = torch.cat([torch.full_like(delayed[..., :1], 2048), delayed[..., :-1]], dim=-1)  # [B, K, S]
    theirs = musicgen(input_ids=ids, attention_mask=mask, decoder_input_ids=inputs.reshape(-1, inputs.shape[-1])).logits
    ours = mumo.decode({"music": inputs}, {"music": mumo.encode_text(ids, mask, 2, "cpu")})["music"]  # [B, K, S, V]
    assert torch.allclose(ours.reshape(theirs.shape), theirs, atol=1e-5, rtol=1e-4)
    # motion starts as a copy of music (embeddings + experts); motion heads are fresh
    assert torch.equal(mumo.embeddings["motion"].table.weight, mumo.embeddings["music"].table.weight)
    assert torch.equal(mumo.layers[1].ffn.experts["motion"].fc2.weight, mumo.layers[1].ffn.experts["music"].fc2.weight)
    assert not torch.equal(mumo.heads["motion"].proj.weight, mumo.heads["music"].proj.weight)


def test_converted_music_logits_equal_musicgen(tmp_path):
    check(tmp_path, text_width=32)


def test_conversion_without_text_projection(tmp_path):
    """MusicGen has no enc_to_dec_proj when the T5 width equals the decoder width."""
    check(tmp_path, text_width=48)


def test_config_overrides_replace_musicgen_fields_and_stereo_is_refused():
    config = mumo_config_from_musicgen(tiny_musicgen_config(32), dropout=0.0, caption_dropout=0.1)
    assert (config.dropout, config.caption_dropout, config.hidden_size) == (0.0, 0.1, 48)
    with pytest.raises(ValueError, match="stereo MusicGen is not supported: it delays its codebooks in pairs"):
        mumo_config_from_musicgen(tiny_musicgen_config(32, channels=2))
