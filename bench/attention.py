"""Frame-causal two-stream attention vs plain causal SDPA over the same length (forward + backward).

    python bench/attention.py [--frames 500] [--batch 4] [--repeats 9]

Prints one JSON object: ``frame_causal_vs_causal`` = seconds of MuMo's self-attention over
[music | motion] (2 x ``--frames`` positions, frame-causal, computed in time chunks as the model
does: ``FrameCausal``) over the same module with ``is_causal=True`` on 2 x ``--frames`` positions
(target <= 1.2). ``dense_mask_vs_causal`` is the same attention with one boolean [L, L] mask.
"""

from __future__ import annotations

import argparse
import json

import torch

from common import DEVICE, alternate, autocast, machine
from mumo_ds.modeling.attention import FrameCausal, MuMoAttention, frame_causal_mask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    args = p.parse_args()
    chunked = FrameCausal([args.frames, args.frames], DEVICE)
    mask = frame_causal_mask([args.frames, args.frames], DEVICE)
    result = {**machine(), "positions": 2 * args.frames, "batch": args.batch}
    for dtype in args.dtypes:
        torch.manual_seed(0)  # a fresh module and input per dtype: no state carried over from the last one
        attn = MuMoAttention(args.width, args.heads).to(DEVICE)
        x = torch.randn(args.batch, 2 * args.frames, args.width, device=DEVICE, requires_grad=True)

        def run(**kwargs):
            def step():
                with autocast(dtype):
                    out = attn(x, **kwargs)
                out.float().sum().backward()
            return step

        # two pairs, each alternating with its own causal runs, so the dense variant's large score
        # matrices do not disturb the pair the target is about
        times = alternate({"frame_causal": run(attn_mask=chunked), "causal": run(is_causal=True)}, args.repeats)
        dense = alternate({"dense_mask": run(attn_mask=mask), "causal": run(is_causal=True)}, args.repeats)
        result[dtype] = {"seconds": times, "frame_causal_vs_causal": times["frame_causal"] / times["causal"],
                         "dense_mask_vs_causal": dense["dense_mask"] / dense["causal"]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
