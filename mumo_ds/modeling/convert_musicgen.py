"""Warm start: convert an HF ``MusicgenForConditionalGeneration`` folder into a MuMo folder.

    mumo-convert-musicgen --musicgen path/to/musicgen-small --out runs/musicgen-init

Copied: the T5 text encoder, the text projection, the music embeddings, every
transformer layer, the final norm and the music heads. The motion embeddings and
motion FFN experts start as copies of the music ones; the motion heads keep their
fresh initialisation. The EnCodec audio encoder is saved beside the model as
``codec/`` (a ``transformers.EncodecModel`` folder) for decoding generated music.
Any MusicGen weight that is not mapped, or MuMo weight that is not filled, is an error.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
from pathlib import Path

import torch

from .configuration_mumo import MuMoConfig
from .modeling_mumo import MuMoForConditionalGeneration

# MuMo weights that MusicGen does not have: filled by init_motion_from_music or left fresh.
ALLOWED_MISSING = ("embeddings.motion.*", "layers.*.ffn.experts.motion.*", "heads.motion.*")

LAYER_RENAMES = {
    "fc1": "ffn.experts.music.fc1",
    "fc2": "ffn.experts.music.fc2",
    "final_layer_norm": "ffn.experts.music.norm",
}


def mumo_config_from_musicgen(mg_config, **overrides) -> MuMoConfig:
    """The MuMo config of a MusicGen one; ``overrides`` replace any field (``dropout=0.0`` too)."""
    dec = mg_config.decoder
    if dec.scale_embedding:
        raise ValueError("MusicGen decoder with scale_embedding=True is not supported (MuMo adds positions unscaled)")
    if mg_config.audio_encoder.audio_channels != 1 or getattr(dec, "audio_channels", 1) != 1:
        raise ValueError("stereo MusicGen is not supported: it delays its codebooks in pairs (one per channel), MuMo "
                         "codebook k by k steps; convert a mono checkpoint such as facebook/musicgen-small")
    text = mg_config.text_encoder.to_dict()
    for key in ("architectures", "_name_or_path", "transformers_version", "model_type"):
        text.pop(key, None)
    fields = dict(
        hidden_size=dec.hidden_size,
        num_hidden_layers=dec.num_hidden_layers,
        num_attention_heads=dec.num_attention_heads,
        ffn_dim=dec.ffn_dim,
        num_codebooks=dec.num_codebooks,
        codebook_size=dec.vocab_size,
        frame_rate=mg_config.audio_encoder.frame_rate,
        max_position_embeddings=dec.max_position_embeddings,
        dropout=dec.dropout,
        attention_dropout=dec.attention_dropout,
        activation_dropout=dec.activation_dropout,
        activation_function=dec.activation_function,
        text_encoder=text,
    )
    return MuMoConfig(**{**fields, **overrides})


def convert_state_dict(mg_state: dict[str, torch.Tensor], config: MuMoConfig) -> dict[str, torch.Tensor]:
    """MusicGen names and layouts -> MuMo's. Raises on any MusicGen weight it cannot place."""
    k, v = config.num_codebooks, config.codebook_size
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    embed = [None] * k
    heads = [None] * k
    for name, tensor in mg_state.items():
        if name.startswith("audio_encoder."):
            continue  # saved separately as the codec folder
        if name.startswith("text_encoder."):
            out[name] = tensor
        elif name.startswith("enc_to_dec_proj."):
            out[name.replace("enc_to_dec_proj.", "text_projection.")] = tensor
        elif m := re.fullmatch(r"decoder\.model\.decoder\.embed_tokens\.(\d+)\.weight", name):
            embed[int(m.group(1))] = tensor  # [V + 1, D]
        elif m := re.fullmatch(r"decoder\.lm_heads\.(\d+)\.weight", name):
            heads[int(m.group(1))] = tensor  # [V, D]
        elif m := re.fullmatch(r"decoder\.model\.decoder\.layers\.(\d+)\.([a-z_0-9]+)\.(.+)", name):
            layer, module, rest = m.groups()
            out[f"layers.{layer}.{LAYER_RENAMES.get(module, module)}.{rest}"] = tensor
        elif name.startswith("decoder.model.decoder.layer_norm."):
            out[name.replace("decoder.model.decoder.layer_norm.", "norm.")] = tensor
        else:
            unmapped.append(name)
    if unmapped:
        raise KeyError(f"MusicGen weights with no place in MuMo: {unmapped}")
    if any(t is None for t in embed + heads):
        raise KeyError("MusicGen checkpoint lacks some codebook embeddings or heads")
    out["embeddings.music.table.weight"] = torch.cat(embed)  # K x [V+1, D] -> [K*(V+1), D]
    out["heads.music.proj.weight"] = torch.cat(heads)  # K x [V, D] -> [K*V, D]
    assert out["heads.music.proj.weight"].shape[0] == k * v
    return out


def convert(musicgen_dir: str | Path, out_dir: str | Path, **config_overrides) -> MuMoForConditionalGeneration:
    """Convert a local MusicGen folder (or hub id when online) and save a MuMo folder at ``out_dir``."""
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    musicgen = MusicgenForConditionalGeneration.from_pretrained(musicgen_dir)
    config = mumo_config_from_musicgen(musicgen.config, **config_overrides)
    model = MuMoForConditionalGeneration(config)
    state = convert_state_dict(musicgen.state_dict(), config)
    if "text_projection.weight" not in state:  # MusicGen skips the projection when the widths match
        d = config.hidden_size
        state["text_projection.weight"] = torch.eye(d, config.text_encoder["d_model"])
        state["text_projection.bias"] = torch.zeros(d)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"text_encoder.encoder.embed_tokens.weight"}  # tied to text_encoder.shared.weight
    missing = [n for n in missing if n not in tied and not any(fnmatch.fnmatchcase(n, p) for p in ALLOWED_MISSING)]
    if missing or unexpected:
        raise KeyError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.init_motion_from_music()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    musicgen.audio_encoder.save_pretrained(out_dir / "codec")
    try:
        AutoTokenizer.from_pretrained(musicgen_dir).save_pretrained(out_dir)
    except (OSError, ValueError) as err:
        print(f"note: no tokenizer saved ({err}); set config.text_tokenizer or copy one into {out_dir}")
    return model


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="mumo-convert-musicgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--musicgen", required=True, help="MusicgenForConditionalGeneration folder (or hub id when online)")
    p.add_argument("--out", required=True, help="MuMo folder to write")
    args = p.parse_args(argv)
    convert(args.musicgen, args.out)
    print(f"wrote {args.out} (music weights from {args.musicgen}; motion embeddings/experts copied from music)")


if __name__ == "__main__":
    main()
