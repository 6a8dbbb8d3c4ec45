"""Checkpoints that are either complete or ignored, and resume from the newest complete one.

Layout of ``RUN/checkpoints``::

    step00000004/            a committed checkpoint: DeepSpeed's files, then ours (JSON only)
        mp_rank_00_model_states.pt, zero_pp_rank_*_optim_states.pt, ...   (DeepSpeed)
        rank_state0.json, rank_state1.json   data position + python/numpy/torch(/cuda) RNG of each rank
        meta.json                            step, world size, last metrics, validation; written last
    step00000006.tmp/        a save in progress (or one that crashed): never read, deleted by the next save
    latest                   DeepSpeed's pointer to the newest committed tag (written via a temp file + os.replace)

A save writes everything under ``stepN.tmp``, waits for every rank (barrier), and only then rank 0
renames the folder to ``stepN`` and replaces ``latest``. A crash anywhere before the rename leaves the
previous checkpoints untouched; resume reads only committed folders (name ``stepN`` with ``meta.json``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import faults

TAG_RE = re.compile(r"^step(\d{8})$")
META = "meta.json"


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def committed(checkpoint_dir: Path) -> list[tuple[int, str]]:
    """(step, tag) of every committed checkpoint, oldest first; ``.tmp`` folders and stray files are ignored."""
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for path in checkpoint_dir.iterdir():
        match = TAG_RE.match(path.name)
        if match and (path / META).is_file():
            found.append((int(match.group(1)), path.name))
    return sorted(found)


def newest(checkpoint_dir: Path) -> tuple[int, str] | None:
    found = committed(checkpoint_dir)
    return found[-1] if found else None


def to_delete(steps: list[int], keep_last: int, keep_every: int) -> list[int]:
    """Steps to prune: all but the newest ``keep_last`` (0 keeps all) and multiples of ``keep_every`` (0: none)."""
    if keep_last <= 0:
        return []
    keep = set(sorted(steps)[-keep_last:])
    if keep_every > 0:
        keep |= {s for s in steps if s % keep_every == 0}
    return [s for s in sorted(steps) if s not in keep]


# ------------------------------------------------------------------ per-rank state (JSON, no pickle)
def rank_state(loader) -> dict:
    """This rank's data position and every RNG a step can draw from."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "data": loader.state_dict(),
        "torch_rng": torch.get_rng_state().tolist(),
        "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy_rng": {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])}},
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state().tolist()
    return state


def restore_rank_state(checkpoint: Path, rank: int, loader) -> None:
    path = checkpoint / f"rank_state{rank}.json"
    if not path.is_file():
        saved = sorted(p.name for p in checkpoint.glob("rank_state*.json"))
        raise FileNotFoundError(
            f"{path}: missing, the checkpoint holds {saved}; resume with the world size it was saved with "
            f"({len(saved)} rank(s)), or start over with --no-resume --overwrite"
        )
    state = json.loads(path.read_text())
    loader.load_state_dict(state["data"])
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy_rng"]
    np_state["state"]["key"] = np.array(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda_rng"], dtype=torch.uint8))


# ------------------------------------------------------------------ save / load
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(engine, loader, checkpoint_dir: Path, step: int, rank: int, meta: dict, keep_last: int, keep_every: int) -> str:
    """Save step ``step`` on every rank, commit it on rank 0, prune old ones; returns the tag. Collective."""
    tag = tag_for(step)
    final, tmp = checkpoint_dir / tag, checkpoint_dir / f"{tag}.tmp"
    if rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for stale in checkpoint_dir.glob("*.tmp"):  # crashed saves
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    dist.barrier()
    engine.save_checkpoint(str(checkpoint_dir), tag=tmp.name, client_state={"step": step}, save_latest=False)
    (tmp / f"rank_state{rank}.json").write_text(json.dumps(rank_state(loader)))
    dist.barrier()  # every rank's files are written
    faults.exit_in_save(step, rank)
    if rank == 0:
        _write_atomic(tmp / META, json.dumps({"step": step, "tag": tag, "world_size": dist.get_world_size(),
                                              "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta},
                                             indent=2, sort_keys=True))
        if final.exists():  # the same step saved again (a finished run re-saving): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_atomic(checkpoint_dir / "latest", tag)
        steps = [s for s, _ in committed(checkpoint_dir)]
        for old in to_delete(steps, keep_last, keep_every):
            shutil.rmtree(checkpoint_dir / tag_for(old))
    dist.barrier()
    return tag


def load(engine, loader, checkpoint_dir: Path, tag: str, rank: int) -> int:
    """Restore engine (weights, optimizer, scheduler), data position and RNGs; returns the step. Collective."""
    path, client = engine.load_checkpoint(str(checkpoint_dir), tag=tag)
    if path is None:
        raise RuntimeError(f"{checkpoint_dir / tag}: DeepSpeed could not load this checkpoint; delete it to fall back "
                           "to the previous one, or start over with --no-resume --overwrite")
    restore_rank_state(checkpoint_dir / tag, rank, loader)
    return int(client["step"])


def read_meta(checkpoint_dir: Path, tag: str) -> dict:
    return json.loads((checkpoint_dir / tag / META).read_text())


class ResumeError(ValueError):
    """The run folder's newest checkpoint belongs to a run with other settings (see :func:`check_same_run`)."""


def check_same_run(checkpoint_dir: Path, tag: str, run: dict) -> None:
    """Refuse to resume a checkpoint saved by a run that differs in ``run``'s settings (training stage, ZeRO stage,
    world size, micro-batch, accumulation, the export it started from): DeepSpeed would fail on it with an unrelated
    message, resume onto other samples, or ignore a new upstream export. Keys the checkpoint does not record (older
    checkpoints), or None on either side, are not compared."""
    saved = read_meta(checkpoint_dir, tag)
    differ = {k: (saved[k], v) for k, v in run.items() if saved.get(k) is not None and v is not None and saved[k] != v}
    if differ:
        what = ", ".join(f"{k} {old} (now {new})" for k, (old, new) in differ.items())
        raise ResumeError(
            f"{checkpoint_dir / tag}: saved by a run with {what}; resume it with the same settings, or start over "
            "with --no-resume --overwrite (or another --output-dir)"
        )
