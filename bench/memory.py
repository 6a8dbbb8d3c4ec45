"""Model-state memory per rank under ZeRO-3 vs ZeRO-0 (2 CPU ranks), and ZeRO-0 vs a plain PyTorch loop.

    python bench/memory.py            # prints one JSON object (a few minutes on 2 cores)

Model: the "small" preset scaled down (d=256, 4 layers, tiny T5), stage 2 trainable set, AdamW, the
shipped ds_configs (ZeRO bucket sizes "auto" = sized from the model width), in bf16 mixed precision (the
production setting, and the one ZeRO's 16-bytes-per-parameter accounting is about) and in fp32.
Memory is counted, not sampled: every tensor reachable from the module (parameters, ZeRO-3 partitions,
.grad) and from the DeepSpeed optimizer object graph (master copies, gradient partitions, Adam moments),
each storage once, right after the backward and right after the step of the third step.
In fp32, ZeRO-3 still keeps both the module's weight partition and a separate fp32 master partition
("master_weights"), so its floor on 2 ranks is (2+2+2+4)/16 = 0.625x of ZeRO-0; in bf16 both sides
hold a master copy and ZeRO-3 partitions all of it.
The speed part runs both loops in one process on 1 rank with 2 threads, same model, same batch, steps
interleaved (DeepSpeed, plain, DeepSpeed, ...) so that load from other processes hits both alike.
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


def ds_config(name: str, world_size: int, dtype: str = "fp32") -> dict:
    from mumo_ds.training.config import TrainConfig
    from mumo_ds.training.engine import load_ds_config

    train = TrainConfig(stage=2, ds_config=str(REPO / "ds_configs" / name), micro_batch_size=2, max_steps=100)
    cfg = load_ds_config(train, world_size, SIZE["hidden_size"])
    cfg["bf16"] = {"enabled": dtype == "bf16"}
    return cfg


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


def worker_memory(zero: str, out: str, dtype: str) -> None:
    import torch.distributed as dist

    from mumo_ds.training import distributed
    from mumo_ds.training.engine import build_engine

    rank, world, _ = distributed.setup()
    model, batch = build()
    engine, _ = build_engine(model, ds_config(zero, world, dtype))
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
    opt = torch.optim.AdamW(param_groups(plain, params["weight_decay"]), lr=params["lr"], betas=params["betas"],
                            eps=params["eps"], fused=params.get("fused", False))
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
                                     "deepspeed_over_plain": median["deepspeed_zero0"] / median["plain_pytorch"]}))
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
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker == "memory":
        return worker_memory(args.zero, args.out, args.dtype)
    if args.worker == "speed":
        return worker_speed(args.out)
    runs = {(dtype, zero): launch(2, ["--worker", "memory", "--zero", f"{zero}.json", "--dtype", dtype], 1)
            for dtype in ("bf16", "fp32") for zero in ("zero0", "zero3")}
    peak = {key: max(max(r["after_backward"]["total"], r["after_step"]["total"]) for r in run["per_rank_bytes"])
            for key, run in runs.items()}
    result = {
        "model": {**SIZE, "preset": "small (scaled down)", "params": runs["fp32", "zero0"]["model_params"],
                  "trainable": "stage 2 (all but the text encoder)"},
        "bytes_per_rank_2_ranks": {f"{dtype} {zero}": run["per_rank_bytes"] for (dtype, zero), run in runs.items()},
        "largest_rank_total_bytes": {f"{dtype} {zero}": v for (dtype, zero), v in peak.items()},
        "zero3_over_zero0": {dtype: peak[dtype, "zero3"] / peak[dtype, "zero0"] for dtype in ("bf16", "fp32")},
        "target_zero3_over_zero0": 0.55,
        "speed_1_rank_2_threads": launch(1, ["--worker", "speed"], 2),
        "target_deepspeed_over_plain": 1.05,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
