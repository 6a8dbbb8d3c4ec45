"""Tokenize audio files to music codes, or decode codes back to audio for listening checks.

    python -m data_prep.tokenize_music --codec-model checkpoints/encodec_32khz --out codes/ a.flac b.wav
        -> codes/a.npy, codes/b.npy (int16 [4, T] at 50 frames/s), codes/codec.json
    python -m data_prep.tokenize_music --codec-model checkpoints/encodec_32khz --decode --out wav/ codes/a.npy
        -> wav/a.wav (32 kHz mono)

Inputs may have any sample rate and channel count (downmixed to mono, resampled with
scipy.signal.resample_poly). Files that cannot be tokenized are reported with the reason
and skipped; the exit code is 1 when any file failed. Shards are built by
``data_prep.build_shards``; this CLI is for single files and decode checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mumo_ds.tokenizers.audio_io import AudioError
from mumo_ds.tokenizers.music_codec import BACKENDS, MusicTokenizer


def add_codec_args(parser: argparse.ArgumentParser) -> None:
    """Options that build a MusicTokenizer (shared with build_shards)."""
    parser.add_argument("--codec", default="encodec_32khz", choices=sorted(BACKENDS), help="codec backend (default encodec_32khz)")
    parser.add_argument("--codec-model", help="codec weights: local folder (or hub id when online)")
    parser.add_argument("--chunk-seconds", type=float, default=30.0, help="longest audio per forward (default 30)")
    parser.add_argument("--context-seconds", type=float, default=1.0, help="context on each side of a chunk (default 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="chunks per forward (default 8)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--allow-silent", action="store_true", help="keep silent audio with a warning instead of rejecting it")


def tokenizer_from_args(args: argparse.Namespace, progress: bool = False) -> MusicTokenizer:
    return MusicTokenizer(
        args.codec, args.codec_model, chunk_seconds=args.chunk_seconds, context_seconds=args.context_seconds,
        batch_size=args.batch_size, device=args.device, progress=progress, allow_silent=args.allow_silent,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="audio files (or .npy codes with --decode)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--decode", action="store_true", help="decode .npy codes to .wav instead of encoding")
    add_codec_args(parser)
    args = parser.parse_args(argv)
    stems = [Path(name).stem for name in args.inputs]
    same = sorted({n for n, stem in zip(args.inputs, stems) if stems.count(stem) > 1})
    if same:  # each writes OUT/<stem>.npy (.wav): the later would overwrite the earlier
        print(f"error: {same} share a file name; tokenize them into separate --out folders", file=sys.stderr)
        return 2
    tok = tokenizer_from_args(args, progress=True)
    try:
        tok.backend  # load the codec once, before any file: a bad --codec-model is one error, not one per file
    except (ImportError, OSError, ValueError) as exn:
        print(f"error: {exn}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in args.inputs:
        src = Path(name)
        try:
            if args.decode:
                codes = np.load(src, allow_pickle=False)  # [K, T]
                dst = tok.write_wav(out / f"{src.stem}.wav", tok.decode(codes, source=str(src)))
            else:
                dst = out / f"{src.stem}.npy"
                np.save(dst, tok.encode_file(src), allow_pickle=False)
        except (AudioError, OSError, ValueError) as exn:
            failed += 1
            print(f"FAILED {exn}", file=sys.stderr)
            continue
        print(f"{src} -> {dst}")
    if not args.decode:
        (out / "codec.json").write_text(json.dumps(tok.info, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
