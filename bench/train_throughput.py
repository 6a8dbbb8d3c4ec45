"""Training throughput: MuMo vs HF MusicGen at matched size, joint vs music-only, and MFU.

    python bench/train_throughput.py [--frames 500] [--batch 4] [--repeats 5] [--dtypes fp32 bf16] [--no-compile]

Forward + backward + AdamW step on batch x frames codes, width 512, 6 layers, 8 heads, FFN 2048,
4 x 2048 codebooks (same process, alternating repeats, median). Prints one JSON object with, per dtype:
- ``mumo_vs_musicgen``: MuMo music-only frames/s over HF ``MusicgenForCausalLM`` frames/s
  (targets: >= 1.1 bf16, >= 1.0 fp32);
- ``joint_vs_music``: MuMo music+motion frames/s (both streams counted) over music-only (target >= 0.9);
- ``mfu``: 6 x non-embedding params x frames/s (plus attention) over the GEMM peak measured in the same
  run (target >= 0.75 in bf16), and the same for MusicGen.
Both models get the same caption (a 16-token encoder output) for cross-attention, and fused AdamW.
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

from common import DEVICE, MATCHED, TORCH_DTYPES, alternate, autocast, gemm_peak_flops, machine
from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.modeling.attention import fastest_attn_implementation
from mumo_ds.training.metrics import training_flops_per_token


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
            loss = peer(input_ids=inputs.reshape(b * k, s), encoder_hidden_states=states, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def build(compile_model: bool, dtype: str):
    """MuMo (and its compiled twin, sharing parameters) and HF MusicGen peers (SDPA, and eager where MuMo trains
    with eager), each with fused AdamW (HF Trainer's default optimizer for torch >= 2.8, and the one ds_configs/
    ask for)."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    kernel = fastest_attn_implementation(DEVICE, TORCH_DTYPES[dtype])
    torch.manual_seed(0)
    config = MuMoConfig.from_preset("tiny", caption_dropout=0.0, **MATCHED)
    model = MuMoForConditionalGeneration(config).to(DEVICE).train()
    model.set_attn_implementation(kernel)
    model.text_encoder.requires_grad_(False)
    peer_config = MusicgenDecoderConfig(
        vocab_size=2048, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, ffn_dim=2048, num_codebooks=4,
        dropout=0.0, max_position_embeddings=4096)
    peers = {"musicgen": "sdpa", "musicgen_eager": "eager"} if kernel == "eager" else {"musicgen": "sdpa"}
    peers = {name: MusicgenForCausalLM._from_config(peer_config, attn_implementation=impl).to(DEVICE).train()
             for name, impl in peers.items()}
    optimizers = {name: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-4, fused=True)
                  for name, m in {"mumo": model, **peers}.items()}
    return model, torch.compile(model) if compile_model else None, peers, optimizers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    args = p.parse_args()
    codes = torch.randint(0, 2048, (args.batch, 4, args.frames), device=DEVICE)
    motion = torch.randint(0, 2048, (args.batch, 4, args.frames), device=DEVICE)
    caption = torch.randint(3, 300, (args.batch, 16), device=DEVICE)
    text = dict(music_caption_ids=caption, motion_caption_ids=caption)
    states = torch.randn(args.batch, 16, 512, device=DEVICE)
    music, joint = dict(music_codes=codes, **text), dict(music_codes=codes, motion_codes=motion, **text)
    result = {**machine(), "frames": args.frames, "batch": args.batch, "size": MATCHED}
    for dtype in args.dtypes:
        model, compiled, peers, opts = build(args.compile, dtype)  # fresh per dtype: nothing carried over
        opt = opts["mumo"]
        steps = {
            "mumo_music": mumo_step(model, opt, music, dtype),
            "mumo_joint": mumo_step(model, opt, joint, dtype),
            **{name: musicgen_step(peer, opts[name], codes, states, dtype) for name, peer in peers.items()},
        }
        if compiled is not None:
            steps.update(mumo_music_compiled=mumo_step(compiled, opt, music, dtype),
                         mumo_joint_compiled=mumo_step(compiled, opt, joint, dtype))
            for name in ("mumo_music_compiled", "mumo_joint_compiled"):
                steps[name]()  # compile outside the timing
        times = alternate(steps, args.repeats)
        peak = gemm_peak_flops(dtype)
        fps = {name: args.batch * args.frames * (2 if "joint" in name else 1) / t for name, t in times.items()}
        # parameters a music-only step uses, embeddings and the frozen text encoder excluded
        non_embedding = sum(q.numel() for n, q in model.named_parameters()
                            if not n.startswith(("embeddings.", "text_encoder.")) and "motion" not in n)
        peer_non_embedding = sum(q.numel() for n, q in peers["musicgen"].named_parameters() if "embed_tokens" not in n)
        per_frame = training_flops_per_token(non_embedding, 6, 512, args.frames)
        peer_per_frame = training_flops_per_token(peer_non_embedding, 6, 512, args.frames)
        result[dtype] = {
            "attn_implementation": model.config._attn_implementation,
            "seconds": times, "frames_per_s": fps, "gemm_peak_flops": peak,
            "mumo_vs_musicgen": fps["mumo_music"] / fps["musicgen"],
            "joint_vs_music": fps["mumo_joint"] / fps["mumo_music"],
            "mfu_mumo_music": fps["mumo_music"] * per_frame / peak,
            "mfu_musicgen": fps["musicgen"] * peer_per_frame / peak,
        }
        if "musicgen_eager" in fps:
            result[dtype]["mumo_vs_musicgen_eager"] = fps["mumo_music"] / fps["musicgen_eager"]
        if compiled is not None:
            result[dtype].update(
                compiled_mumo_vs_musicgen=fps["mumo_music_compiled"] / fps["musicgen"],
                compiled_joint_vs_music=fps["mumo_joint_compiled"] / fps["mumo_music_compiled"],
                mfu_mumo_music_compiled=fps["mumo_music_compiled"] * per_frame / peak,
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
