"""Model-state memory per rank under ZeRO-3 vs ZeRO-0 (2 CPU ranks), and ZeRO-0 vs a plain PyTorch loop.

    python bench/memory.py            # prints one JSON object (about a minute on 2 cores)

Model: the "small" preset scaled down (d=256, 4 layers, tiny T5), stage 2 trainable set, fp32, AdamW.
Memory is counted, not sampled: every tensor reachable from the module (parameters, ZeRO-3 partitions,
.grad) and from the DeepSpeed optimizer object graph (master copies, gradient partitions, Adam moments),
each storage once, right after the backward and right after the step of the third step.
The speed part runs both loops in one process on 1 rank with 2 threads, same model, same batch, steps
interleaved (DeepSpeed, plain, DeepSpeed, ...) so that load from other processes hits both alike.
Under ZeRO-3 fp32, DeepSpeed keeps a partition of the module weights and a separate fp32 master copy
("master_weights"), and preallocates a gradient bucket of reduce_bucket_size elements ("ipg_buckets"),
which dominates for a model this small with the shipped 5e7-element buckets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, ffn_dim=1024)


def build(seed: int = 0):
    import torch

    from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
    from mumo_ds.modeling.configuration_mumo import TEXT_ENCODERS
    from mumo_ds.modeling.text import load_tokenizer, tokenize_captions
    from mumo_ds.training.stages import STAGES, apply_stage

    torch.manual_seed(seed)
    config = MuMoConfig.from_preset("small", **SIZE, dropout=0.0, text_encoder=TEXT_ENCODERS["tiny-t5"], text_tokenizer="byt5")
    model = MuMoForConditionalGeneration(config).train()
    apply_stage(model, STAGES[2])
    g = torch.Generator().manual_seed(1)
    ids, mask = tokenize_captions(load_tokenizer("byt5"), ["funk", "waacking"], 32)
    batch = {f"{m}_codes": torch.randint(0, 2048, (2, 4, 100), generator=g) for m in ("music", "motion")}
    batch.update(music_caption_ids=ids, music_caption_mask=mask, motion_caption_ids=ids, motion_caption_mask=mask)
    return model, batch


def ds_config(name: str, world_size: int) -> dict:
    from mumo_ds.training.config import TrainConfig
    from mumo_ds.training.engine import load_ds_config

    return load_ds_config(TrainConfig(stage=2, ds_config=str(REPO / "ds_configs" / name), micro_batch_size=2, max_steps=100), world_size)


def reachable_bytes(roots, seen_storage: set | None = None) -> int:
    """Bytes of every distinct tensor storage reachable from ``roots`` (objects, dicts, lists; depth-limited),
    skipping and then adding to ``seen_storage``."""
    import torch

    seen_storage = set() if seen_storage is None else seen_storage
    seen_obj, total = set(), 0
    stack = [(r, 0) for r in roots]
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen_obj or depth > 6:
            continue
        seen_obj.add(id(obj))
        if isinstance(obj, torch.Tensor):
            for t in (obj, getattr(obj, "ds_tensor", None), obj.grad if obj.is_leaf else None):
                if t is not None and t.numel():
                    ptr = t.untyped_storage().data_ptr()
                    if ptr not in seen_storage:
                        seen_storage.add(ptr)
                        total += t.untyped_storage().nbytes()
            continue
        if isinstance(obj, dict):
            children = list(obj.values()) + [k for k in obj if isinstance(k, torch.Tensor)]
        elif isinstance(obj, (list, tuple, set)):
            children = list(obj)
        elif isinstance(obj, torch.nn.Module):
            children = list(obj.parameters())
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith(("deepspeed", "torch.optim")):
            children = list(vars(obj).values())
        else:
            continue
        stack.extend((c, depth + 1) for c in children)
    return total


def breakdown(engine) -> dict[str, int]:
    """Bytes by owner: module parameters (ZeRO-3: this rank's partitions), .grad, Adam moments, then each
    optimizer attribute holding more (master weights, gradient partitions, communication buckets)."""
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    seen: set = set()
    params = [getattr(p, "ds_tensor", None) if getattr(p, "ds_tensor", None) is not None else p.data
              for p in engine.module.parameters()]
    out = {"params": reachable_bytes([params], seen)}
    out["param.grad"] = reachable_bytes([[p.grad for p in engine.module.parameters() if p.grad is not None]], seen)
    out["adam_moments"] = reachable_bytes([[v for state in inner.state.values() for v in state.values()]], seen)
    if engine.optimizer is not inner:
        for name, value in vars(engine.optimizer).items():
            extra = reachable_bytes([value], seen)
            if extra > 2**20:
                label = "master_weights" if name == "optimizer" else f"optimizer.{name.split('__')[-1]}"
                out[label] = extra
    out["total"] = sum(out.values()) + reachable_bytes([engine.module, engine.optimizer], seen)
    return out


def worker_memory(zero: str, out: str, bucket: int) -> None:
    import torch.distributed as dist

    from mumo_ds.training import distributed
    from mumo_ds.training.engine import build_engine

    rank, world, _ = distributed.setup()
    model, batch = build()
    cfg = ds_config(zero, world)
    if bucket:
        for key in ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size"):
            if key in cfg["zero_optimization"]:
                cfg["zero_optimization"][key] = bucket
    engine, _ = build_engine(model, cfg)
    snapshots = {}
    for step in range(3):
        loss = engine(**batch).loss
        engine.backward(loss)
        if step == 2:
            snapshots["after_backward"] = breakdown(engine)
        engine.step()
    snapshots["after_step"] = breakdown(engine)
    numel = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    gathered = [None] * world
    dist.all_gather_object(gathered, snapshots)
    if rank == 0:
        Path(out).write_text(json.dumps({"model_params": numel, "per_rank_bytes": gathered}))
    distributed.teardown()


def worker_speed(out: str, steps: int = 12) -> None:
    import torch

    from mumo_ds.training import distributed
    from mumo_ds.training.engine import build_engine, param_groups

    distributed.setup()
    torch.set_num_threads(2)
    cfg = ds_config("zero0.json", 1)
    model, batch = build()
    engine, _ = build_engine(model, cfg)
    plain, _ = build()
    params = cfg["optimizer"]["params"]
    opt = torch.optim.AdamW(param_groups(plain, params["weight_decay"]), lr=params["lr"], betas=params["betas"], eps=params["eps"])
    trainable = [p for p in plain.parameters() if p.requires_grad]

    def deepspeed_step():
        engine.backward(engine(**batch).loss)
        engine.step()

    def plain_step():
        plain(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg["gradient_clipping"])
        opt.step()
        opt.zero_grad(set_to_none=True)

    # interleaved, so load from other processes on a shared machine hits both loops alike
    times = {"deepspeed_zero0": [], "plain_pytorch": []}
    for _ in range(steps):
        for name, fn in (("deepspeed_zero0", deepspeed_step), ("plain_pytorch", plain_step)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    median = {k: statistics.median(v[2:]) for k, v in times.items()}  # first 2 steps warm up
    Path(out).write_text(json.dumps({"median_step_s": median, "steps_timed": steps - 2,
                                     "overhead": median["deepspeed_zero0"] / median["plain_pytorch"] - 1}))
    distributed.teardown()


def launch(nproc: int, args: list[str], threads: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
        cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(nproc), "--master_port",
               str(29600 + os.getpid() % 300), __file__, *args, "--out", f.name]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
        return json.loads(Path(f.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=["memory", "speed"])
    parser.add_argument("--zero", default="zero0.json")
    parser.add_argument("--bucket", type=int, default=0, help="override the ZeRO bucket sizes (elements)")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker == "memory":
        return worker_memory(args.zero, args.out, args.bucket)
    if args.worker == "speed":
        return worker_speed(args.out)
    runs = {
        "zero0": launch(2, ["--worker", "memory", "--zero", "zero0.json"], 1),
        "zero3 (ds_configs/zero3.json, 5e7-element buckets)": launch(2, ["--worker", "memory", "--zero", "zero3.json"], 1),
        "zero3 with 5e5-element buckets": launch(2, ["--worker", "memory", "--zero", "zero3.json", "--bucket", "500000"], 1),
    }
    peak = {name: max(max(r["after_backward"]["total"], r["after_step"]["total"]) for r in run["per_rank_bytes"])
            for name, run in runs.items()}
    result = {
        "model": {**SIZE, "preset": "small (scaled down)", "params": runs["zero0"]["model_params"], "dtype": "fp32",
                  "trainable": "stage 2 (all but the text encoder)"},
        "bytes_per_rank_2_ranks": {name: run["per_rank_bytes"] for name, run in runs.items()},
        "largest_rank_total_bytes": peak,
        "speed_1_rank_2_threads": launch(1, ["--worker", "speed"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
