"""``mumo-generate``: generate music and/or dance with an exported MuMo folder.

    mumo-generate --model runs/stage2/export --task text2both --text "upbeat funk" --seconds 10 --out out/
    mumo-generate --model M --task music2motion --given song_codes.npy --out out/       # dance for given music
    mumo-generate --model M --task text2both --prompt-data data/sample --prompt-seconds 2 --out out/   # continue
    mumo-generate --model runs/stage3/export --task music2text --given song_codes.npy --out out/   # caption

Writes ``{stream}.npy`` (int16 codes [B, 4, T] at the model's frame rate), ``music.wav``
when an EnCodec folder is available (``--codec``, default ``MODEL/codec``), motion features
when a motion VQ-VAE folder is given (``--motion-vqvae``), and ``generation.json``. The captioning
tasks (``music2text``, ``motion2text``; a stage-3 model) write ``captions.json`` instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from .data import CodesLoader, expect_for
from .modeling.generation import TASKS, generation_device
from .modeling.text import tokenize_captions

CAPTION_TASKS = {"music2text": "music", "motion2text": "motion"}  # task -> stream described


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mumo-generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported HF folder (config.json, model.safetensors, tokenizer)")
    p.add_argument("--task", default="text2both", choices=sorted(TASKS) + sorted(CAPTION_TASKS), help="what to generate from what")
    p.add_argument("--text", default=None, help="caption of the generated stream(s); text2both gives it to both (default: none)")
    p.add_argument("--seconds", type=float, default=10.0, help="output length (a given stream sets it instead)")
    p.add_argument("--given", default=None, help="music2motion/motion2music/*2text: codes .npy [4,T] or [B,4,T] of the given stream")
    p.add_argument("--prompt-data", default=None, help="shard folder: take the prompt / given stream from its first val sample")
    p.add_argument("--prompt-seconds", type=float, default=0.0,
                   help="text2*: continue the first N seconds of the --prompt-data sample (needs --prompt-data)")
    p.add_argument("--guidance-scale", type=float, default=4.0, help="classifier-free guidance (1 = off; no effect without --text)")
    p.add_argument("--device", default=None, help="where the model generates (default: cuda when available, else cpu); "
                   "decoding to audio and motion runs on the CPU")
    p.add_argument("--top-k", type=int, default=250, help="sample among the k likeliest codes (0 = off)")
    p.add_argument("--top-p", type=float, default=0.0, help="then among the smallest set of probability >= p (0 = off)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--codec", default=None, help="EnCodec folder to decode music to WAV (default: MODEL/codec if present)")
    p.add_argument("--num-beams", type=int, default=4, help="captioning: beam size (1 = greedy)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="captioning: longest caption in tokens")
    p.add_argument("--motion-vqvae", default=None, help="motion VQ-VAE folder to decode motion codes to features")
    p.add_argument("--out", required=True, help="output folder")
    return p


def first_val_sample(data_dir: str, streams: tuple[str, ...], frames: int, cfg) -> dict[str, torch.Tensor]:
    """The first ``frames`` frames (all, if fewer) of the first val sample with ``streams``: m -> [1, K, <= frames]."""
    loader = CodesLoader(
        data_dir, "val", batch_size=1, crop_frames=frames, streams=streams, shuffle=False, kinds=(streams,),
        expect=expect_for(cfg), random_crop=False,
    )
    batch = next(iter(loader))
    return {m: batch[f"{m}_codes"][..., : int(batch[f"{m}_mask"][0].sum())] for m in streams}


def plan_prompts(args, cfg) -> tuple[dict[str, torch.Tensor | None], int]:
    """The prompts dict of ``generate`` and the number of frames, from the task and inputs."""
    generated, given = TASKS.get(args.task) or ((), CAPTION_TASKS[args.task])
    num_frames = max(1, round(args.seconds * cfg.frame_rate))
    prompts: dict[str, torch.Tensor | None] = {m: None for m in generated}
    if args.prompt_seconds > 0 and not args.prompt_data:
        raise SystemExit("--prompt-seconds needs --prompt-data DIR (the shards whose first val sample it continues)")
    if args.prompt_seconds > 0 and given:
        raise SystemExit(f"--prompt-seconds continues the generated streams of a text2* task; --task {args.task} "
                         f"takes the whole {given} stream from --given or --prompt-data instead")
    if args.given and not given:
        raise SystemExit(f"--given is the given stream of music2motion, motion2music and *2text; --task {args.task} "
                         "generates from text (continue a sample with --prompt-data DIR --prompt-seconds N)")
    if args.prompt_data and not given and args.prompt_seconds <= 0:
        raise SystemExit(f"--prompt-data on --task {args.task} continues its first val sample: give the seconds to "
                         "continue with --prompt-seconds N (or drop --prompt-data to generate from text alone)")
    prompt_frames = max(1, round(args.prompt_seconds * cfg.frame_rate)) if args.prompt_seconds > 0 else 0
    if prompt_frames >= num_frames:
        raise SystemExit(f"--prompt-seconds {args.prompt_seconds:g} covers all of --seconds {args.seconds:g}: nothing "
                         "would be generated; give fewer prompt seconds or more output seconds")
    if given:
        if args.given:
            codes = torch.from_numpy(np.load(args.given).astype(np.int64))
            codes = codes[None] if codes.dim() == 2 else codes
        elif args.prompt_data:
            codes = first_val_sample(args.prompt_data, (given,), num_frames, cfg)[given]
        else:
            raise SystemExit(f"--task {args.task} needs the {given} codes: --given FILE.npy or --prompt-data DIR")
        prompts[given] = codes
        num_frames = codes.shape[-1]
    elif prompt_frames:
        prompts.update(first_val_sample(args.prompt_data, generated, prompt_frames, cfg))
    return prompts, num_frames


def write_music_wav(codes: torch.Tensor, codec_dir: Path, out: Path) -> Path:
    """Decode music codes [B, K, T] with an EnCodec folder and write ``music.wav`` (first item)."""
    from scipy.io import wavfile

    from .tokenizers.music_codec import TransformersEncodec

    codec = TransformersEncodec(codec_dir)
    with torch.inference_mode():
        audio = codec.decode(codes.long())  # [B, K, T] -> [B, 1, T * hop]
    path = out / "music.wav"
    wavfile.write(path, codec.info.sample_rate, audio[0, 0].float().clamp(-1, 1).cpu().numpy())
    return path


def write_motion(codes: torch.Tensor, vqvae_dir: str, out: Path) -> list[str]:
    """Decode motion codes [B, 4, T] with a motion VQ-VAE: features [B, T, 263] and joints [B, T, 22, 3]."""
    from .tokenizers.motion_codec import decode_batch
    from .tokenizers.motion_features import recover_joints
    from .tokenizers.motion_vqvae import MotionVQVAE

    features = decode_batch(MotionVQVAE.from_pretrained(vqvae_dir).eval(), codes)
    np.save(out / "motion_features.npy", features)
    np.save(out / "motion_joints.npy", np.stack([recover_joints(f) for f in features]))
    return ["motion_features.npy", "motion_joints.npy"]


OUTPUTS = ("music.npy", "motion.npy", "music.wav", "motion_features.npy", "motion_joints.npy", "captions.json",
           "generation.json")  # everything a run may write into --out


def prepare_out(folder: str) -> Path:
    """``--out``, created, without the outputs of an earlier run (a text2music run after a text2both one would
    leave that run's motion.npy beside the new music)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
    return out


def write_captions(model, args, prompts: dict[str, torch.Tensor]) -> None:
    stream = CAPTION_TASKS[args.task]
    texts = model.caption(**{f"{stream}_codes": prompts[stream]}, num_beams=args.num_beams,
                          max_new_tokens=args.max_new_tokens)[stream]
    out = prepare_out(args.out)
    (out / "captions.json").write_text(json.dumps({"task": args.task, "captions": texts}, indent=2))
    for text in texts:
        print(f"{stream}: {text}")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    device = generation_device(args.device)
    model = AutoModel.from_pretrained(args.model).eval().to(device)
    cfg = model.config
    prompts, num_frames = plan_prompts(args, cfg)
    prompts = {m: None if p is None else p.to(device) for m, p in prompts.items()}
    if args.task in CAPTION_TASKS:
        return write_captions(model, args, prompts)
    generated, _ = TASKS[args.task]
    text = None
    if args.text:
        ids, mask = tokenize_captions(model.saved_tokenizer(), [args.text], cfg.max_caption_tokens)
        text = {m: (ids, mask) for m in generated}
    codes = model.generate(
        num_frames, prompts, text, guidance_scale=args.guidance_scale, top_k=args.top_k, top_p=args.top_p,
        temperature=args.temperature, seed=args.seed, progress=True,
    )
    codes = {m: c.cpu() for m, c in codes.items()}
    out = prepare_out(args.out)
    written = []
    for m, c in codes.items():
        np.save(out / f"{m}.npy", c.cpu().numpy().astype(np.int16))
        written.append(f"{m}.npy {list(c.shape)}")
    codec = Path(args.codec) if args.codec else Path(args.model) / "codec"
    if "music" in codes and (codec / "config.json").is_file():
        written.append(str(write_music_wav(codes["music"], codec, out).name))
    elif "music" in codes:
        print(f"note: no EnCodec folder at {codec}; music left as codes (pass --codec DIR to decode)")
    if "motion" in codes:
        if args.motion_vqvae:
            written.extend(write_motion(codes["motion"], args.motion_vqvae, out))
        else:
            print("note: motion left as codes; pass --motion-vqvae DIR to decode them to motion features")
    (out / "generation.json").write_text(json.dumps({**vars(args), "device": str(device), "num_frames": num_frames}, indent=2))
    print(f"wrote {', '.join(written)} to {out}")


if __name__ == "__main__":
    main()
