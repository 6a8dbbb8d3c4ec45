"""Preemption: a signal asks for a checkpoint at the next step boundary, then a distinct exit.

Slurm (``#SBATCH --signal=B:USR1@120`` or ``scancel --signal=USR1``) and most schedulers send
SIGUSR1 or SIGTERM before killing a job. The handler only sets a flag; at every step boundary the
ranks agree with one all_reduce(MAX), so a signal that reached a single rank stops all of them at
the same step. They save a checkpoint and exit with :data:`PREEMPTED_EXIT_CODE`; rank 0 also writes
``RUN/preempted.json`` (the exit code of ``torchrun`` is always 1 when a rank fails, while the
``deepspeed`` launcher passes the rank's code through). A requeue script resubmits the job when it sees
either; the next run resumes from that checkpoint by itself.

Which process to signal (measured with torch 2.13 on CPU): ``torchrun`` turns a SIGTERM into SIGTERM for
every rank, which then checkpoint and exit 42 (torchrun itself exits 1, after up to its shutdown timeout).
``torchrun`` has no SIGUSR1 handler: a SIGUSR1 sent to it kills torchrun alone (exit 138) and leaves the
ranks running as orphans, without a checkpoint. So send SIGTERM to torchrun, or SIGUSR1/SIGTERM to the
rank processes themselves (its children). The ``deepspeed`` launcher likewise handles only SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

PREEMPTED_EXIT_CODE = 42  # "checkpoint saved, requeue me"; any other non-zero code is a real failure
MARKER = "preempted.json"
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preemption:
    """Installs the handlers on construction; ``requested`` is this rank's view, ``agreed()`` every rank's.

    This module imports no torch, so train.py builds one before its heavy imports (seconds on a shared
    filesystem): a scheduler's signal that early is recorded, not fatal."""

    def __init__(self):
        self.signal: int | None = None
        for sig in SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def agreed(self, device) -> bool:
        """True on every rank when any rank got a signal. Collective: call it on all ranks at the same step."""
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def write_marker(run_dir: Path, step: int, tag: str) -> None:
    (run_dir / MARKER).write_text(json.dumps({"step": step, "checkpoint": tag, "exit_code": PREEMPTED_EXIT_CODE}))


def clear_marker(run_dir: Path) -> None:
    (run_dir / MARKER).unlink(missing_ok=True)
