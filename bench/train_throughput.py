"""Training throughput: MuMo vs HF MusicGen at matched size, joint vs music-only, and MFU.

    python bench/train_throughput.py [--frames 500] [--batch 4] [--repeats 7] [--dtypes fp32 bf16] [--no-compile]

Forward + backward + AdamW step on batch x frames codes, width 512, 6 layers, 8 heads, FFN 2048,
4 x 2048 codebooks (same process, alternating repeats; ``seconds`` are medians, and each ratio is the median
over rounds of the ratio within a round, see bench/common.py). Prints one JSON object with, per dtype:
- ``mumo_vs_musicgen``: frames/s of MuMo built for music alone (``modalities=["music"]``: MusicGen's
  parameter count) over HF ``MusicgenForCausalLM`` frames/s (targets: >= 1.1 bf16, >= 1.0 fp32);
- ``bimodal_vs_musicgen``: the same for the music+motion model the stages train, on music-only batches;
  its motion embeddings, experts and heads (~21M parameters at this size) get zero gradients through the
  ghost forwards that keep ranks in step (mumo_ds/modeling/moe.py), and AdamW steps them too;
- ``joint_vs_music``: the music+motion model's frames/s on joint batches (both streams counted) over its
  music-only frames/s (target >= 0.9);
- ``mfu``: 6 x non-embedding params x frames/s (plus attention) over the GEMM peak measured in the same
  run (target >= 0.75 in bf16), and the same for MusicGen. The cross-attention keys/values and the text
  projection count at the 16 caption tokens they run on, not at every frame.
Both models get the same caption (a 16-token encoder output) for cross-attention, and fused AdamW. Under bf16
autocast MuMo carries its residual stream in bf16 (``MuMoForConditionalGeneration.embed``), MusicGen in fp32.
MuMo runs the attention kernel train.py picks for the device and dtype (``--attn-implementation auto``:
eager matmuls + softmax for bf16 on CPU, SDPA elsewhere); MusicGen runs HF's default (SDPA), and, as
``musicgen_eager`` where the kernels differ, with ``attn_implementation="eager"`` too
(``mumo_vs_musicgen_eager``), so the share of the kernel choice in the ratio is visible.
Unless ``--no-compile``, MuMo also runs ``torch.compile``d (``train.py --compile on``; compile time not
counted, about a minute per batch shape on 2 CPU cores): ``*_compiled`` entries and ratios.
"""

from __future__ import annotations

import argparse
import json

import torch

from common import DEVICE, MATCHED, TORCH_DTYPES, alternate, autocast, gemm_peak_flops, machine, medians, paired_ratio
from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.modeling.attention import fastest_attn_implementation
from mumo_ds.training.metrics import runs_on_captions, training_flops_per_token


def mumo_step(model, opt, batch, dtype):
    def step():
        with autocast(dtype):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def musicgen_step(peer, opt, codes, states, dtype):
    from mumo_ds.modeling import build_delay_pattern

    delayed = build_delay_pattern(codes, 2048)
    inputs = torch.cat([torch.full_like(delayed[..., :1], 2048), delayed[..., :-1]], dim=-1)
    labels = delayed.masked_fill(delayed == 2048, -100).transpose(1, 2)  # [B, S, K]
    b, k, s = inputs.shape

    def step():
        with autocast(dtype):
            loss = peer(input_ids=inputs.reshape(b * k, s), encoder_hidden_states=states, labels=labels,
                        use_cache=False).loss  # training: no key/value cache to fill
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def build(compile_model: bool, dtype: str):
    """The MuMo models and HF MusicGen peers of one dtype, each with fused AdamW (HF Trainer's default optimizer
    for torch >= 2.8, and the one ds_configs/ ask for), and compiled twins of the MuMo models (sharing parameters).

    "mumo": built for music alone (``modalities=["music"]``), MusicGen's parameter count plus the text projection;
    "bimodal": music and motion, the model the stages train. MusicGen runs SDPA, and eager too where MuMo trains
    with eager."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    kernel = fastest_attn_implementation(DEVICE, TORCH_DTYPES[dtype])
    models = {}
    for name, modalities in (("mumo", ["music"]), ("bimodal", ["music", "motion"])):
        torch.manual_seed(0)
        config = MuMoConfig.from_preset("tiny", caption_dropout=0.0, modalities=modalities, **MATCHED)
        models[name] = MuMoForConditionalGeneration(config).to(DEVICE).train()
        models[name].set_attn_implementation(kernel)
    peer_config = MusicgenDecoderConfig(
        vocab_size=2048, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, ffn_dim=2048, num_codebooks=4,
        dropout=0.0, max_position_embeddings=4096)
    peers = {"musicgen": "sdpa", "musicgen_eager": "eager"} if kernel == "eager" else {"musicgen": "sdpa"}
    models.update({name: MusicgenForCausalLM._from_config(peer_config, attn_implementation=impl).to(DEVICE).train()
                   for name, impl in peers.items()})
    optimizers = {name: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-4, fused=True)
                  for name, m in models.items()}
    compiled = {name: torch.compile(models[name]) for name in ("mumo", "bimodal")} if compile_model else {}
    return models, compiled, optimizers


def music_flops_per_frame(model, frames: int, caption_tokens: int) -> float:
    """Training FLOPs per frame of a music-only step: 6 x the parameters a frame goes through (embeddings, the frozen
    text encoder and anything of motion excluded) plus attention, and the share of one frame in the work done on
    the captions (cross-attention keys/values, text projection: ``runs_on_captions``), as training logs MFU."""
    used = {n: q.numel() for n, q in model.named_parameters()
            if not n.startswith(("embeddings.", "text_encoder.", "model.decoder.embed_tokens")) and "motion" not in n}
    on_captions = sum(k for n, k in used.items() if runs_on_captions(n))
    per_frame = sum(used.values()) - on_captions
    return (training_flops_per_token(per_frame, MATCHED["num_hidden_layers"], MATCHED["hidden_size"], frames)
            + 6.0 * on_captions * caption_tokens / frames)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    args = p.parse_args()
    codes = torch.randint(0, 2048, (args.batch, 4, args.frames), device=DEVICE)
    motion = torch.randint(0, 2048, (args.batch, 4, args.frames), device=DEVICE)
    caption = torch.randint(3, 300, (args.batch, 16), device=DEVICE)
    states = torch.randn(args.batch, 16, 512, device=DEVICE)
    music = dict(music_codes=codes, music_caption_ids=caption)
    joint = dict(music_codes=codes, motion_codes=motion, music_caption_ids=caption, motion_caption_ids=caption)
    result = {**machine(), "frames": args.frames, "batch": args.batch, "size": MATCHED}
    for dtype in args.dtypes:
        models, compiled, opts = build(args.compile, dtype)  # fresh per dtype: nothing carried over
        # each comparison's two runs next to each other in a round (the rounds are ~10 s long)
        steps = {"mumo_music": mumo_step(models["mumo"], opts["mumo"], music, dtype),
                 "musicgen": musicgen_step(models["musicgen"], opts["musicgen"], codes, states, dtype)}
        if compiled:
            steps["mumo_music_compiled"] = mumo_step(compiled["mumo"], opts["mumo"], music, dtype)
        if "musicgen_eager" in models:
            steps["musicgen_eager"] = musicgen_step(models["musicgen_eager"], opts["musicgen_eager"], codes, states, dtype)
        steps.update(bimodal_music=mumo_step(models["bimodal"], opts["bimodal"], music, dtype),
                     bimodal_joint=mumo_step(models["bimodal"], opts["bimodal"], joint, dtype))
        if compiled:
            steps.update(bimodal_music_compiled=mumo_step(compiled["bimodal"], opts["bimodal"], music, dtype),
                         bimodal_joint_compiled=mumo_step(compiled["bimodal"], opts["bimodal"], joint, dtype))
            for name in ("mumo_music_compiled", "bimodal_music_compiled", "bimodal_joint_compiled"):
                steps[name]()  # compile outside the timing
        samples = alternate(steps, args.repeats)
        times = medians(samples)
        peak = gemm_peak_flops(dtype)
        fps = {name: args.batch * args.frames * (2 if "joint" in name else 1) / t for name, t in times.items()}
        per_frame = {name: music_flops_per_frame(models[name], args.frames, caption.shape[1]) for name in ("mumo", "musicgen")}

        def speedup(name: str, peer: str) -> float:  # frames/s of name over peer's, both counting music frames
            return paired_ratio(samples, peer, name)

        result[dtype] = {
            "attn_implementation": models["mumo"].config._attn_implementation,
            "seconds": times, "frames_per_s": fps, "gemm_peak_flops": peak,
            "mumo_vs_musicgen": speedup("mumo_music", "musicgen"),
            "bimodal_vs_musicgen": speedup("bimodal_music", "musicgen"),
            "joint_vs_music": 2 * speedup("bimodal_joint", "bimodal_music"),  # a joint step carries 2x the frames
            "mfu_mumo_music": fps["mumo_music"] * per_frame["mumo"] / peak,
            "mfu_musicgen": fps["musicgen"] * per_frame["musicgen"] / peak,
        }
        if "musicgen_eager" in fps:
            result[dtype]["mumo_vs_musicgen_eager"] = speedup("mumo_music", "musicgen_eager")
        if compiled:
            result[dtype].update(
                compiled_mumo_vs_musicgen=speedup("mumo_music_compiled", "musicgen"),
                compiled_bimodal_vs_musicgen=speedup("bimodal_music_compiled", "musicgen"),
                compiled_joint_vs_music=2 * speedup("bimodal_joint_compiled", "bimodal_music_compiled"),
                mfu_mumo_music_compiled=fps["mumo_music_compiled"] * per_frame["mumo"] / peak,
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
