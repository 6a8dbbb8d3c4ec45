"""Write train/val shards from the bundled sample clip.

    python -m data_prep.make_sample_shards --out data/sample

Replaces the train and val splits in ``--out`` (other splits in its manifest are kept).
See ``mumo_ds.data.sample`` for what the samples are and ``mumo_ds.data.sample_codes``
for its weightless stand-in tokenizers.
"""

from __future__ import annotations

import argparse

from mumo_ds.data.sample import build_sample_shards


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory for the shards and manifest.json")
    parser.add_argument("--samples-per-shard", type=int, default=8, help="samples per shard (default 8)")
    parser.add_argument("--crop-seconds", type=float, default=4.0, help="window length in seconds (default 4.0)")
    parser.add_argument("--stride-seconds", type=float, default=0.04, help="window stride in seconds (default 0.04)")
    parser.add_argument("--val-every", type=int, default=5, help="every N-th window goes to val (default 5)")
    args = parser.parse_args(argv)
    if args.val_every < 2:
        parser.error(f"--val-every {args.val_every}: must be >= 2 (every N-th window goes to val, the others to train)")
    manifest = build_sample_shards(
        args.out,
        samples_per_shard=args.samples_per_shard,
        window_seconds=args.crop_seconds,
        stride_seconds=args.stride_seconds,
        val_every=args.val_every,
    )
    for split, info in manifest.splits.items():
        print(f"{args.out}: {split}: {info.num_samples} samples in {len(info.shards)} shards, counts {info.counts}")


if __name__ == "__main__":
    main()
