"""Encode motion features into motion codes, or decode codes back to features and joints.

::

    python -m data_prep.motion_codes encode --model runs/motion_vqvae/model \\
        --features data_prep/sample_data/motion/gWA_sBM_cAll_d25_mWA0_ch01.npy --fps 60 --out codes.npy
        # -> int16 [4, T] at 50 codes/s
    python -m data_prep.motion_codes decode --model runs/motion_vqvae/model --codes codes.npy \\
        --out-features decoded.npy --out-joints joints.npy
        # -> float32 [T, 263] features and [T, 22, 3] joints (metres) at 50 fps

The model folder carries the dataset Mean/Std it was trained with; ``--mean``/``--std`` override them.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from mumo_ds.tokenizers.motion_codec import codes_to_features, features_to_codes
from mumo_ds.tokenizers.motion_features import load_features, load_stats, recover_joints
from mumo_ds.tokenizers.motion_vqvae import MotionVQVAE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="features .npy [T, 263] at --fps -> codes .npy int16 [4, T50]")
    enc.add_argument("--features", required=True)
    enc.add_argument("--fps", type=float, required=True, help="frame rate of --features")
    enc.add_argument("--out", required=True)
    dec = sub.add_parser("decode", help="codes .npy [4, T] -> features [T, 263] (and joints [T, 22, 3]) at 50 fps")
    dec.add_argument("--codes", required=True)
    dec.add_argument("--out-features", required=True)
    dec.add_argument("--out-joints", default=None)
    for s in (enc, dec):
        s.add_argument("--model", required=True, help="folder written by data_prep.train_motion_vqvae (model/)")
        s.add_argument("--mean", default=None, help="override the model's Mean.npy")
        s.add_argument("--std", default=None, help="override the model's Std.npy")
    return p.parse_args(argv)


def load_model(args: argparse.Namespace) -> MotionVQVAE:
    model = MotionVQVAE.from_pretrained(args.model).eval()
    if (args.mean is None) != (args.std is None):
        raise ValueError("--mean and --std go together; pass both or neither")
    if args.mean is not None:
        mean, std = load_stats(args.mean, args.std)
        model.set_feature_stats(torch.from_numpy(mean), torch.from_numpy(std))
    return model


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except (OSError, ValueError) as exn:  # a bad input file or model: say which and why, no traceback
        raise SystemExit(f"error: {exn}") from None


def run(args: argparse.Namespace) -> None:
    model = load_model(args)
    if args.command == "encode":
        codes = features_to_codes(model, load_features(args.features), args.fps, args.features)  # [4, T50] int16
        np.save(args.out, codes)
        print(f"{args.features} ({args.fps:g} fps) -> {args.out} codes {list(codes.shape)} int16", file=sys.stderr)
    else:
        codes = np.load(args.codes, allow_pickle=False)
        feats = codes_to_features(model, codes, args.codes)  # [T, 263]
        np.save(args.out_features, feats)
        if args.out_joints:
            np.save(args.out_joints, recover_joints(feats))  # [T, 22, 3]
        print(f"{args.codes} {list(codes.shape)} -> {args.out_features} {list(feats.shape)}", file=sys.stderr)


if __name__ == "__main__":
    main()
