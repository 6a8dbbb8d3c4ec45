"""Frame-causal two-stream attention vs plain causal SDPA over the same length (forward + backward).

    python bench/attention.py [--frames 500] [--batch 4] [--repeats 9]

Prints one JSON object: ``frame_causal_vs_causal`` = seconds of MuMo's self-attention over
[music | motion] (2 x ``--frames`` positions, frame-causal, computed in time chunks as the model
does: ``FrameCausal``) over the same module with ``is_causal=True`` on 2 x ``--frames`` positions
(target <= 1.2), with the kernel training picks for the device and dtype (``fastest_attn_implementation``:
eager matmuls + softmax for bf16 on CPU, SDPA elsewhere); ``frame_causal_sdpa_vs_causal`` is the same
with SDPA always. ``dense_mask_vs_causal`` is SDPA with one boolean [L, L] mask. The reference
(``causal``) is always SDPA's ``is_causal`` kernel.
"""

from __future__ import annotations

import argparse
import json

import torch

from common import DEVICE, TORCH_DTYPES, alternate, autocast, machine, medians, paired_ratio
from mumo_ds.modeling import MuMoConfig
from mumo_ds.modeling.attention import FrameCausal, MuMoAttention, fastest_attn_implementation, frame_causal_mask


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
        config = MuMoConfig.from_preset("tiny", hidden_size=args.width, num_attention_heads=args.heads)
        attn = MuMoAttention(config).to(DEVICE)
        x = torch.randn(args.batch, 2 * args.frames, args.width, device=DEVICE, requires_grad=True)
        kernel = fastest_attn_implementation(DEVICE, TORCH_DTYPES[dtype])

        def run(implementation, **kwargs):
            def step():
                config._attn_implementation = implementation
                with autocast(dtype):
                    out = attn(x, **kwargs)
                out.float().sum().backward()
            return step

        # pairs, each alternating with its own causal runs, so the dense variant's large score
        # matrices do not disturb the pair the target is about
        causal = run("sdpa", is_causal=True)
        times = alternate({"frame_causal": run(kernel, attn_mask=chunked), "causal": causal}, args.repeats)
        sdpa = times if kernel == "sdpa" else alternate(
            {"frame_causal": run("sdpa", attn_mask=chunked), "causal": causal}, args.repeats)
        dense = alternate({"dense_mask": run("sdpa", attn_mask=mask), "causal": causal}, args.repeats)
        result[dtype] = {"kernel": kernel, "seconds": medians(times),
                         "frame_causal_vs_causal": paired_ratio(times, "frame_causal", "causal"),
                         "frame_causal_sdpa_vs_causal": paired_ratio(sdpa, "frame_causal", "causal"),
                         "dense_mask_vs_causal": paired_ratio(dense, "dense_mask", "causal")}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
