"""Tokenize a JSONL of music/motion records into webdataset shards + manifest.json + rejects.jsonl.

    python -m data_prep.build_shards --input data/raw/train.jsonl --out data/shards --split train \\
        --codec-model checkpoints/encodec_32khz \\
        --motion-tokenizer vqvae --motion-model checkpoints/motion_vqvae \\
        --motion-mean data/raw/Mean.npy --motion-std data/raw/Std.npy \\
        --samples-per-shard 256 --workers 8

Record format and timeline: ``mumo_ds.data.pairing``; shard plan, resume and merge:
``mumo_ds.data.prep``. Re-running the same command skips shards that are complete and
unchanged. For a Slurm array, each task runs with ``--task-id K --num-tasks N --no-merge``
and one final ``--merge`` writes manifest.json (see slurm/prep.sh). Bad records are listed
in rejects.jsonl with the file and the reason; the run goes on. Exit code 0 when the
manifest (or this task's shards) was written, 1 on a merge with missing shards.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys

import numpy as np

from mumo_ds.data.format import check_split
from mumo_ds.data.prep import MergeError, PrepSettings, merge, run_task
from mumo_ds.data.prep_motion import LSHMotionTokenizer, VQVAEMotionTokenizer, load_stats

from .tokenize_music import add_codec_args, tokenizer_from_args

MOTION_TOKENIZERS = ("vqvae", "sample-lsh")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", help="JSONL of records (see mumo_ds.data.pairing); not needed with --merge")
    p.add_argument("--out", required=True, help="output directory of shards, manifest.json, rejects.jsonl")
    p.add_argument("--split", default="train", help="split name (default train)")
    p.add_argument("--samples-per-shard", type=int, default=256, help="records per shard (default 256)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="reject samples shorter than this (default 1.0)")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes (default 1: in this process)")
    p.add_argument("--task-id", type=int, default=0, help="this task's id, 0..num_tasks-1 (Slurm: SLURM_ARRAY_TASK_ID)")
    p.add_argument("--num-tasks", type=int, default=1, help="number of tasks sharing the records (i %% N == task id)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-merge", action="store_true", help="only write this task's shards (array tasks)")
    mode.add_argument("--merge", action="store_true", help="only merge the tasks' shards into manifest.json")
    p.add_argument("--motion-tokenizer", choices=MOTION_TOKENIZERS, default="vqvae", help="motion tokenizer (default vqvae)")
    p.add_argument("--motion-model", help="motion VQ-VAE folder (for --motion-tokenizer vqvae)")
    p.add_argument("--motion-mean", help="Mean.npy of the motion features (default: the statistics saved in --motion-model; "
                   "refused if they differ from them)")
    p.add_argument("--motion-std", help="Std.npy of the motion features (default: --motion-model's, as --motion-mean)")
    p.add_argument("--frame-rate", type=int, default=50, help="shared frame rate of both streams (default 50)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every rejected record")
    add_codec_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(message)s")
    try:
        check_split(args.split)
    except ValueError as exn:
        print(f"error: --split: {exn}", file=sys.stderr)
        return 2
    if args.merge:
        return _merge(args)
    if not args.input:
        print("error: --input is required unless --merge", file=sys.stderr)
        return 2
    try:
        return _build(args)
    except (ImportError, OSError, ValueError) as exn:  # bad configuration: say what to fix, no traceback
        print(f"error: {exn}", file=sys.stderr)
        return 2


def _build(args: argparse.Namespace) -> int:
    music_tok = tokenizer_from_args(args) if args.codec_model or args.codec != "encodec_32khz" else None
    if args.motion_tokenizer == "sample-lsh":
        motion_tok = LSHMotionTokenizer()
    elif args.motion_model:
        motion_tok = VQVAEMotionTokenizer(args.motion_model, device=args.device)
    else:
        motion_tok = None
    mean = std = None
    stats_hash = None
    if args.motion_mean or args.motion_std:
        if not (args.motion_mean and args.motion_std):
            print("error: give both --motion-mean and --motion-std", file=sys.stderr)
            return 2
        mean, std = load_stats(args.motion_mean, args.motion_std)
        stats_hash = hashlib.sha256(mean.tobytes() + std.tobytes()).hexdigest()
        saved = getattr(motion_tok, "mean", None), getattr(motion_tok, "std", None)
        if saved[0] is not None and not (np.allclose(mean, saved[0], rtol=1e-6, atol=0)
                                         and np.allclose(std, saved[1], rtol=1e-6, atol=0)):
            print(f"error: --motion-mean {args.motion_mean} / --motion-std {args.motion_std} differ from the statistics "
                  f"--motion-model {args.motion_model} was trained with (saved in it); drop both options to use the "
                  "model's, or pass the files it was trained with", file=sys.stderr)
            return 2
    settings = PrepSettings(
        split=args.split, samples_per_shard=args.samples_per_shard, num_tasks=args.num_tasks, frame_rate=args.frame_rate,
        min_frames=max(1, round(args.min_seconds * args.frame_rate)),
        codec=music_tok.info if music_tok else {"name": "none"},
        codec_settings={"model": args.codec_model, "chunk_seconds": args.chunk_seconds, "context_seconds": args.context_seconds,
                        "allow_silent": args.allow_silent} if music_tok else {},
        motion_tokenizer=dict(motion_tok.info) if motion_tok else {"name": "none"},
        motion_stats=stats_hash,
    )
    report = run_task(args.input, args.out, settings, music_tok=music_tok, motion_tok=motion_tok, mean=mean, std=std,
                      task_id=args.task_id, workers=args.workers, progress=True)
    print(f"{args.out}: task {args.task_id}/{args.num_tasks}: wrote {len(report.written)} shards "
          f"({report.samples} samples, {report.rejects} rejected), skipped {len(report.skipped)} complete shards")
    if args.no_merge:
        return 0
    if args.num_tasks > 1:
        print("note: --num-tasks > 1: run --merge once every task has finished", file=sys.stderr)
        return 0
    return _merge(args)


def _merge(args: argparse.Namespace) -> int:
    try:
        manifest = merge(args.out, args.split)
    except MergeError as exn:
        print(f"error: {exn}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exn:  # a moved input, an unreadable manifest: say what, no traceback
        print(f"error: {exn}", file=sys.stderr)
        return 2
    info = manifest.splits[args.split]
    print(f"{args.out}: {args.split}: {info.num_samples} samples in {len(info.shards)} shards, counts {info.counts}; "
          f"rejects in {args.out}/rejects.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
