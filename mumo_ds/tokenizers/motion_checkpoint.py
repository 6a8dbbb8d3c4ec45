"""Training checkpoints of the motion VQ-VAE: safetensors + JSON (no pickle), written atomically.

A checkpoint is a folder ``<dir>/step_00000012/``::

    model.safetensors        model state dict (weights and codebook buffers)
    optimizer.safetensors    optimizer tensors, keyed "state.<param index>.<name>"
    optimizer.json           optimizer param groups and non-tensor state
    rng_rank<r>.safetensors  each rank's torch RNG and window-sampler generator states
    trainer_state.json       step, world size, anything else the trainer stores

It is written under ``step_XXXXXXXX.tmp`` and renamed into place once complete, so
:func:`latest_checkpoint` only ever sees complete checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STEP_DIR = re.compile(r"^step_(\d{8})$")


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root``, or None."""
    root = Path(root)
    found = sorted(p for p in root.glob("step_*") if p.is_dir() and STEP_DIR.match(p.name)) if root.is_dir() else []
    return found[-1] if found else None


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state dict -> (tensors for safetensors, JSON-able rest)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value.detach().contiguous().clone()
            else:
                scalars[f"{idx}.{name}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of :func:`optimizer_to_files`: load into ``optimizer``."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def begin_checkpoint(root: str | Path, step: int) -> Path:
    """Create (fresh) the temporary folder of the checkpoint of ``step``; rank 0 only."""
    tmp = step_dir(Path(root), step).with_suffix(".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rank_state(tmp: Path, rank: int, rng: dict[str, torch.Tensor]) -> None:
    """Each rank writes its RNG states (uint8 tensors) into the temporary folder."""
    save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / f"rng_rank{rank}.safetensors"))


def write_main_state(tmp: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, trainer_state: dict) -> None:
    """Rank 0 writes model, optimizer and trainer state into the temporary folder."""
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    tensors, meta = optimizer_to_files(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    write_json(tmp / "optimizer.json", meta)
    write_json(tmp / "trainer_state.json", trainer_state)


def commit_checkpoint(tmp: Path, keep_last: int = 2) -> Path:
    """Rename the complete temporary folder into place (fsync'd files, one ``os.replace``) and prune old ones."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    final = tmp.with_suffix("")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    done = sorted(p for p in final.parent.glob("step_*") if p.is_dir() and STEP_DIR.match(p.name))
    for old in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int) -> tuple[dict, dict]:
    """Load model and optimizer in place; return (trainer_state, this rank's RNG tensors)."""
    path = Path(path)
    trainer_state = json.loads((path / "trainer_state.json").read_text())
    rng_file = path / f"rng_rank{rank}.safetensors"
    if not rng_file.exists():
        raise FileNotFoundError(
            f"{rng_file}: no RNG state for rank {rank}; the checkpoint was written by "
            f"{trainer_state.get('world_size')} rank(s): resume with the same number of processes"
        )
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    optimizer_from_files(optimizer, load_file(str(path / "optimizer.safetensors")), json.loads((path / "optimizer.json").read_text()))
    return trainer_state, load_file(str(rng_file))
