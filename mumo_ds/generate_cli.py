"""``mumo-generate``: sample music and motion codes from an exported MuMo folder.

    mumo-generate --model runs/stage2/export --prompt-data data/sample --seconds 2 --out outputs/sample

Writes ``music.npy`` / ``motion.npy`` (int16 [B, 4, T] codes at the model's frame rate) and
``generation.json`` (settings). Decoding codes to audio and motion is a later addition.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from .data import CodesLoader
from .modeling import MODALITIES
from .modeling.text import load_tokenizer, tokenize_captions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mumo-generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported HF folder (config.json, model.safetensors, tokenizer)")
    p.add_argument("--streams", nargs="+", default=list(MODALITIES), choices=MODALITIES, help="streams to generate jointly")
    p.add_argument("--seconds", type=float, default=2.0, help="length of the output, prompt included")
    p.add_argument("--prompt-data", default=None, help="shard folder: continue its first val sample (default: no prompt)")
    p.add_argument("--prompt-seconds", type=float, default=1.0, help="prompt length taken from --prompt-data")
    p.add_argument("--text", default=None, help="caption for every stream (default: unconditional)")
    p.add_argument("--top-k", type=int, default=250)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    model = AutoModel.from_pretrained(args.model).eval()
    cfg = model.config
    num_frames = max(1, round(args.seconds * cfg.frame_rate))
    prompts: dict[str, torch.Tensor | None] = {m: None for m in args.streams}
    if args.prompt_data:
        prompt_frames = min(num_frames, round(args.prompt_seconds * cfg.frame_rate))
        loader = CodesLoader(
            args.prompt_data, "val", batch_size=1, crop_frames=prompt_frames, streams=tuple(args.streams),
            shuffle=False, kinds=(tuple(args.streams),),
            expect=dict(num_codebooks=cfg.num_codebooks, codebook_size=cfg.codebook_size, frame_rate=cfg.frame_rate),
        )
        batch = next(iter(loader))
        prompts = {m: batch[f"{m}_codes"] for m in args.streams}
    text = None
    if args.text:
        ids, mask = tokenize_captions(load_tokenizer(args.model), [args.text], cfg.max_caption_tokens)
        text = {m: (ids, mask) for m in args.streams}
    codes = model.generate(
        num_frames, prompts, text, top_k=args.top_k, temperature=args.temperature, seed=args.seed, progress=True
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for m, c in codes.items():
        np.save(out / f"{m}.npy", c.cpu().numpy().astype(np.int16))
    (out / "generation.json").write_text(json.dumps({**vars(args), "num_frames": num_frames}, indent=2))
    print(f"wrote {', '.join(f'{m}.npy {list(c.shape)}' for m, c in codes.items())} to {out}")


if __name__ == "__main__":
    main()
