"""Generation speed: per-step flatness of the KV cache, cached vs uncached, MuMo vs HF MusicGen.

    python bench/generation.py [--frames 500] [--repeats 3]

Prints one JSON object. Everything is measured in this run on this machine (ratios, not absolute
times, are what to compare: these machines are noisy):
- ``step_ratio_400_vs_10``: median time of cached steps 395-405 over steps 5-15 (target <= 1.3).
- ``cached_speedup``: uncached / cached time for ``--frames`` frames of text-to-music with guidance,
  at the matched size below (``--speedup-size tiny`` for a quick run), ``--speedup-batch`` samples at
  once (target >= 20; the cached time is the median of ``--repeats`` runs, the slow uncached reference runs
  once). On CPU at batch 1 a cached step is bound by reading the fp32 weights (~100 MB,
  49 matmuls per step), so the ratio grows with the batch.
- ``vs_musicgen``: HF ``MusicgenForCausalLM.generate`` time / MuMo text-to-music time for ``--frames``
  frames at matched size (width 512, 6 layers, 8 heads, FFN 2048, 4 x 2048), both sampling with
  top-k 250 and without guidance, both cross-attending the same-length caption (target >= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

from common import DEVICE, MATCHED, machine, seconds
from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.modeling.generation import delayed_column, generate


@torch.no_grad()
def step_times(model: MuMoForConditionalGeneration, steps: int) -> list[float]:
    """Seconds per cached joint step (music + motion, CFG-doubled batch of 2)."""
    cfg = model.config
    text = {m: model.encode_text(None, None, 2, DEVICE) for m in ("music", "motion")}
    cache = model.new_cache(2, 2 * steps)
    cross_kv = model.cross_attention_kv(text)
    grid = torch.randint(0, cfg.codebook_size, (2, cfg.num_codebooks, steps), device=DEVICE)
    times = []
    for step in range(steps):
        column = delayed_column(grid, step - 1, cfg.special_token_id)
        times.append(seconds(lambda: model.decode_step({"music": column, "motion": column}, step, text, cache, cross_kv)))
    return times


def musicgen_peer(mumo: MuMoForConditionalGeneration):
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    cfg = mumo.config
    peer_cfg = MusicgenDecoderConfig(
        vocab_size=cfg.codebook_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, ffn_dim=cfg.ffn_dim, num_codebooks=cfg.num_codebooks,
        dropout=0.0, max_position_embeddings=4096,
    )
    return MusicgenForCausalLM(peer_cfg).to(DEVICE).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--speedup-size", choices=["matched", "tiny"], default="matched")
    parser.add_argument("--speedup-batch", type=int, default=1, help="samples generated at once for the cached/uncached ratio")
    args = parser.parse_args()
    torch.manual_seed(0)
    result: dict = {**machine(), "dtype": "fp32", "frames": args.frames}

    tiny = MuMoForConditionalGeneration(MuMoConfig.from_preset("tiny")).to(DEVICE).eval()
    times = step_times(tiny, 410)
    early, late = statistics.median(times[5:16]), statistics.median(times[395:406])
    result["step_s_at_10"], result["step_s_at_400"] = early, late
    result["step_ratio_400_vs_10"] = late / early

    mumo = MuMoForConditionalGeneration(MuMoConfig.from_preset("tiny", **MATCHED)).to(DEVICE).eval()
    subject = mumo if args.speedup_size == "matched" else tiny
    words = torch.randint(3, 300, (1, 16), device=DEVICE)  # a caption, so that guidance doubles the batch
    opts = dict(text={"music": (words, torch.ones_like(words))}, guidance_scale=4.0, top_k=250, seed=0,
                batch_size=args.speedup_batch)
    cached = statistics.median(seconds(lambda: generate(subject, args.frames, {"music": None}, **opts))
                               for _ in range(args.repeats))
    uncached = seconds(lambda: generate(subject, args.frames, {"music": None}, use_cache=False, **opts))  # once: slow
    result.update(speedup_size=args.speedup_size, speedup_batch=args.speedup_batch, cached_s=cached, uncached_s=uncached,
                  cached_speedup=uncached / cached)

    peer = musicgen_peer(mumo)
    caption = torch.randint(3, 300, (1, 16), device=DEVICE)
    text = {"music": (caption, torch.ones_like(caption))}
    encoder_states, _ = mumo.encode_text(caption, torch.ones_like(caption), 1, DEVICE)
    ours, theirs = [], []
    with torch.no_grad():
        for _ in range(args.repeats):  # alternate, then take medians
            ours.append(seconds(lambda: generate(mumo, args.frames, {"music": None}, text, guidance_scale=1.0, top_k=250)))
            start = torch.full((mumo.config.num_codebooks, 1), mumo.config.special_token_id, device=DEVICE)
            theirs.append(seconds(lambda: peer.generate(
                input_ids=start, encoder_hidden_states=encoder_states, encoder_attention_mask=torch.ones(1, 16, device=DEVICE),
                max_new_tokens=args.frames + mumo.config.num_codebooks - 1, do_sample=True, top_k=250, guidance_scale=None,
                pad_token_id=mumo.config.special_token_id, decoder_start_token_id=mumo.config.special_token_id, num_return_sequences=1,
            )))
    result.update(mumo_text2music_s=statistics.median(ours), musicgen_s=statistics.median(theirs),
                  vs_musicgen=statistics.median(theirs) / statistics.median(ours))
    result["targets_met"] = {
        "step_ratio_400_vs_10<=1.3": result["step_ratio_400_vs_10"] <= 1.3,
        "cached_speedup>=20": result["cached_speedup"] >= 20,
        "vs_musicgen>=1.0": result["vs_musicgen"] >= 1.0,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main()
