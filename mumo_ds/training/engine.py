"""Building the DeepSpeed engine: config checks, optimizer groups, ``deepspeed.initialize``."""

from __future__ import annotations

import json
from pathlib import Path

import deepspeed
import torch
from torch import nn

from ..modeling.attention import MuMoAttention, fastest_attn_implementation
from .config import TrainConfig

KNOWN_KEYS = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
    "steps_per_print", "wall_clock_breakdown", "optimizer", "scheduler", "bf16", "fp16", "zero_optimization",
    "data_types", "communication_data_type", "zero_force_ds_cpu_optimizer",
    "tensorboard", "flops_profiler", "zero_allow_untested_optimizer",
}


# ZeRO buffer sizes that may be "auto": sized from the model width as HF Trainer does, so a small model
# does not preallocate a 200 MB bucket and a large one is not starved by a tiny one.
AUTO_ZERO_KEYS = {
    "reduce_bucket_size": lambda h: h * h,
    "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "stage3_param_persistence_threshold": lambda h: 10 * h,
}


def load_ds_config(cfg: TrainConfig, world_size: int, hidden_size: int | None = None) -> dict:
    """Read the DeepSpeed JSON, check it, apply command-line overrides, and set the global batch.

    DeepSpeed ignores misspelled keys silently, so they are refused here with the file and the key
    named. ``"auto"`` is resolved for the ZeRO bucket sizes in ``AUTO_ZERO_KEYS`` from ``hidden_size``
    and refused everywhere else (it works only under HF Trainer).
    """
    path = Path(cfg.ds_config)
    if not path.is_file():
        raise FileNotFoundError(f"--ds-config {path}: no such file; pick one of ds_configs/*.json")
    ds = json.loads(path.read_text())
    if "activation_checkpointing" in ds:  # DeepSpeed's block only configures its checkpoint API, which MuMo never calls
        raise ValueError(f"{path}: \"activation_checkpointing\" would do nothing here (it configures DeepSpeed's own "
                         "checkpointing calls, which MuMo does not make); remove it and pass --activation-checkpointing")
    unknown = sorted(set(ds) - KNOWN_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {unknown} (DeepSpeed would silently ignore them)")
    zero = ds.get("zero_optimization", {})
    for key, size in AUTO_ZERO_KEYS.items():
        if zero.get(key) == "auto" and hidden_size:
            zero[key] = size(hidden_size)
    autos = [key for key, value in _walk(ds) if value == "auto"]
    if autos:
        where = f"only {sorted(AUTO_ZERO_KEYS)} under zero_optimization, given the model width"
        raise ValueError(f"{path}: {autos} = \"auto\" is resolved {where}; write concrete numbers")
    if cfg.micro_batch_size:
        ds["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
    if cfg.grad_accum:
        ds["gradient_accumulation_steps"] = cfg.grad_accum
    ds["train_batch_size"] = ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * world_size
    if cfg.lr:
        ds["optimizer"]["params"]["lr"] = cfg.lr
    if cfg.lr_schedule:
        ds["scheduler"] = lr_scheduler(cfg, ds)
    sched = ds.get("scheduler", {}).get("params", {})
    if "warmup_max_lr" in sched:
        sched["warmup_max_lr"] = ds["optimizer"]["params"]["lr"]
    if cfg.warmup_steps >= 0 and "warmup_num_steps" in sched:
        if cfg.warmup_steps < 1:
            raise ValueError(f"--warmup-steps {cfg.warmup_steps}: DeepSpeed's {ds['scheduler']['type']} needs >= 1")
        sched["warmup_num_steps"] = cfg.warmup_steps
    if "total_num_steps" in sched:
        # The schedule spans --max-steps: resuming with another --max-steps changes the lr from there on.
        sched["total_num_steps"] = max(cfg.max_steps, sched.get("warmup_num_steps", 0) + 1)
    return ds


def lr_scheduler(cfg: TrainConfig, ds: dict) -> dict:
    """The DeepSpeed scheduler block for ``--lr-schedule`` (warmup and total steps are filled by the caller)."""
    warmup = {"warmup_num_steps": ds.get("scheduler", {}).get("params", {}).get("warmup_num_steps", 1), "warmup_type": "linear"}
    if cfg.lr_schedule == "linear":
        lr = ds["optimizer"]["params"]["lr"]
        return {"type": "WarmupDecayLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": lr, "total_num_steps": 1, **warmup}}
    if cfg.lr_schedule == "cosine":  # peak = the optimizer's lr
        params = {"warmup_min_ratio": 0.0, "cos_min_ratio": cfg.min_lr_ratio, "total_num_steps": 1, **warmup}
        return {"type": "WarmupCosineLR", "params": params}
    raise ValueError(f"--lr-schedule {cfg.lr_schedule!r}: choose 'linear' or 'cosine' (or leave it empty for the config's)")


def _walk(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, node


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two groups: decayed matrices, and norms/biases/embedding tables (every
    ``nn.Embedding``: the codebook tables, T5's shared table and relative position biases) without decay."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or id(param) in tables else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def wants_compile(choice: str, device) -> bool:
    """``--compile`` on / off / auto (on for CUDA, where compiling pays off within minutes)."""
    if choice not in ("auto", "on", "off"):
        raise ValueError(f"--compile {choice!r}: choose 'auto', 'on' or 'off'")
    return choice == "on" or (choice == "auto" and device.type == "cuda")


def training_dtype(ds_config: dict) -> torch.dtype:
    """The dtype DeepSpeed trains the module in: bf16 or fp16 when the config enables one, else fp32."""
    for key, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if ds_config.get(key, {}).get("enabled", False):
            return dtype
    return torch.float32


def attn_implementation(choice: str, device, ds_config: dict) -> str:
    """``--attn-implementation`` sdpa / eager / auto (the faster kernel for the device and training dtype)."""
    if choice not in ("auto", "sdpa", "eager"):
        raise ValueError(f"--attn-implementation {choice!r}: choose 'auto', 'sdpa' or 'eager'")
    return fastest_attn_implementation(device, training_dtype(ds_config)) if choice == "auto" else choice


def start_schedule(scheduler) -> None:
    """Move a fresh DeepSpeed warmup schedule to iteration 0 for the first update.

    Its construction sets the lr of iteration -1, the minimum, and iteration 0 is the minimum too: two updates ran at
    ``warmup_min_lr`` (0: no update at all). Started here, only the first update does, as with HF's warmup. A
    resumed run then loads the scheduler's saved iteration over this one."""
    if getattr(scheduler, "last_batch_iteration", None) == -1:
        scheduler.step()


def build_engine(model: nn.Module, ds_config: dict):
    """``deepspeed.initialize`` over the trainable parameters only; returns (engine, scheduler)."""
    wd = ds_config.get("optimizer", {}).get("params", {}).get("weight_decay", 0.0)
    groups = [g for g in param_groups(model, wd) if g["params"]]
    for module in model.modules():  # ZeRO-3 gathers these with the module whose forward reads them
        if isinstance(module, MuMoAttention):
            for weight in module.stacked_weights():
                deepspeed.zero.register_external_parameter(module, weight)
    engine, _, _, scheduler = deepspeed.initialize(model=model, model_parameters=groups, config=ds_config)
    start_schedule(scheduler)
    if engine.zero_optimization_stage() == 0 and engine.dp_world_size == 1:
        # One data-parallel rank has nothing to average: skip the flatten / all-reduce / copy-back of
        # every gradient (~30% of the backward on CPU). ZeRO >= 1 keeps it: it fills the partitions.
        engine.enable_backward_allreduce = False
    return engine, scheduler
