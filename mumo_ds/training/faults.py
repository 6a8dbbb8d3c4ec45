"""Fault injection for the recovery tests, read from one environment variable.

``MUMO_FAULT`` holds comma-separated faults; the tests in ``tests/test_checkpoint_recovery.py``
and ``tests/test_preemption.py`` set it, production runs never do:

    pause_after_step:N:S    every rank sleeps S seconds after step N (a window to kill -9 or signal)
                            and wakes early once a preemption signal arrived on that rank
    exit_in_save:N          rank 0 calls os._exit(FAULT_EXIT_CODE) while saving step N, after DeepSpeed
                            wrote its files and before the checkpoint is committed
    nan_loss:I              rank 1 (rank 0 on one rank) sees a NaN loss on micro-batch number I (1-based, counting
                            every micro-batch drawn, skipped ones included); repeat the item for more
    signal_at_start         the last rank sends itself SIGUSR1 during start-up, before the engine is built
                            (a scheduler's preemption signal while a big checkpoint loads)
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

FAULT_EXIT_CODE = 97
ENV = "MUMO_FAULT"


def _items(name: str) -> list[list[str]]:
    return [item.split(":")[1:] for item in os.environ.get(ENV, "").split(",") if item.split(":")[0] == name]


def pause_after_step(step: int, interrupted: Callable[[], bool]) -> None:
    for args in _items("pause_after_step"):
        if int(args[0]) == step:
            end = time.monotonic() + float(args[1])
            while time.monotonic() < end and not interrupted():
                time.sleep(0.05)


def exit_in_save(step: int, rank: int) -> None:
    if rank == 0 and any(int(args[0]) == step for args in _items("exit_in_save")):
        os._exit(FAULT_EXIT_CODE)


def nan_loss(micro_index: int, rank: int, world_size: int) -> bool:
    return rank == min(1, world_size - 1) and any(int(args[0]) == micro_index for args in _items("nan_loss"))


def signal_at_start(rank: int, world_size: int) -> None:
    if rank == world_size - 1 and _items("signal_at_start"):
        os.kill(os.getpid(), signal.SIGUSR1)
