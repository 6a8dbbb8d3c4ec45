"""Process-group set-up and tear-down, the same on CPU (gloo) and GPU (NCCL)."""

from __future__ import annotations

import logging
import os
import warnings

import torch
import torch.distributed as dist

from .host_memory import retain_freed_memory

# torch 2.13 warns once per collective inside ZeRO; harmless (see notes/deepspeed_cpu.md P10)
warnings.filterwarnings("ignore", message=r".*is deprecated\. Please use `torch\.distributed\..*_single`")


def setup() -> tuple[int, int, torch.device]:
    """Initialise the process group from the launcher's environment; return (rank, world_size, device).

    Works under the ``deepspeed`` launcher, ``torchrun`` and ``srun`` (RANK/WORLD_SIZE/MASTER_* set).
    On CPU every rank gets one thread, or ranks on one machine fight over cores, and keeps the host
    memory it frees for the next step (see host_memory.py).
    """
    if "RANK" not in os.environ:
        raise RuntimeError(
            "train.py needs a launcher: `deepspeed --num_gpus 2 train.py ...` or `torchrun --nproc_per_node 2 train.py ...` "
            "(one process: `torchrun --nproc_per_node 1 train.py ...`)"
        )
    import deepspeed
    import deepspeed.ops

    # The shm comm op serves only inference all-reduce; building it costs ~30 s on a fresh machine.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.utils.logger.setLevel(logging.WARNING)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
        retain_freed_memory()
    deepspeed.init_distributed(dist_backend=backend)
    return dist.get_rank(), dist.get_world_size(), device


def teardown() -> None:
    """Barrier, then destroy the group: avoids a random SIGABRT at interpreter exit (notes P3)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalars over ranks (for logging)."""
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))
