"""Check every shard of a data directory against its manifest.json; exit code 1 on any problem.

    python -m data_prep.validate_shards data/shards

Checks sha256, sample counts (per shard, per split and per kind), that every .npy decodes
without pickle as int16 [num_codebooks, T] in 0..codebook_size-1, that paired streams
have the same length, that captions are present, and that no partial or unlisted .tar
files are left (see mumo_ds.data.check_shards).
"""

from __future__ import annotations

import argparse
import sys

from mumo_ds.data.check_shards import check_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="directory with manifest.json and the shards")
    args = parser.parse_args(argv)
    problems = check_dir(args.data_dir)
    for problem in problems:
        print(f"PROBLEM {problem}")
    print(f"{args.data_dir}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
