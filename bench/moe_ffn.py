"""The modality-expert FFN vs one dense FFN over the same tokens (forward + backward).

    python bench/moe_ffn.py [--tokens 500] [--batch 4] [--repeats 5]

Prints one JSON object: ``moe_vs_dense`` = MoE seconds / dense seconds for 2 x ``--tokens`` positions
(half music, half motion) against a single FFN over the same 2 x ``--tokens`` positions (target <= 1.05).
"""

from __future__ import annotations

import argparse
import json

import torch

from common import DEVICE, alternate, autocast, machine, medians, paired_ratio
from mumo_ds.modeling.moe import FeedForward, ModalityExpertFFN


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    args = p.parse_args()
    segments = [("music", args.tokens), ("motion", args.tokens)]
    result = {**machine(), "tokens": 2 * args.tokens, "batch": args.batch}
    for dtype in args.dtypes:
        torch.manual_seed(0)  # fresh modules and input per dtype: no state carried over from the last one
        moe = ModalityExpertFFN({m: FeedForward(args.width, args.ffn) for m in ("music", "motion")}).to(DEVICE)
        dense = FeedForward(args.width, args.ffn).to(DEVICE)
        x = torch.randn(args.batch, 2 * args.tokens, args.width, device=DEVICE, requires_grad=True)

        def run(fn):
            def step():
                with autocast(dtype):
                    out = fn()
                out.float().sum().backward()
            return step

        times = alternate({"moe": run(lambda: moe(x, segments)), "dense": run(lambda: dense(x))}, args.repeats)
        result[dtype] = {"seconds": medians(times), "moe_vs_dense": paired_ratio(times, "moe", "dense")}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
