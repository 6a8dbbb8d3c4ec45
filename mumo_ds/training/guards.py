"""Numerical guard: a micro-batch with a non-finite loss on any rank is skipped by every rank.

The check runs after the forward and before the backward (one all_reduce of a flag), because in fp32
``engine.step()`` applies whatever gradients exist: a NaN that reached backward is already in the
weights. A skipped micro-batch is replaced by the next batch from the loader, so DeepSpeed's gradient
accumulation window and lr schedule stay in step with the training step count. After
``max_consecutive`` skipped micro-batches in a row the run stops with :class:`NonFiniteError` and
saves nothing, so the newest checkpoint is the last good state.

A non-finite gradient norm with a finite loss (overflow in backward) cannot be undone after
``engine.step()`` in fp32; :meth:`check_grad_norm` stops the run there, also without saving.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


class NonFiniteError(RuntimeError):
    pass


class NonFiniteGuard:
    def __init__(self, max_consecutive: int, device: torch.device, hint: str):
        self.max_consecutive = max_consecutive
        self.device = device
        self.hint = hint  # where the last good checkpoint is, for the error message
        self.skipped = 0
        self.consecutive = 0

    def loss_ok(self, loss: torch.Tensor, step: int, poison: bool = False) -> bool:
        """True on every rank when every rank's loss is finite. Collective: call it once per micro-batch."""
        bad = torch.tensor([0.0 if (torch.isfinite(loss.detach()).all() and not poison) else 1.0], device=self.device)
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if not bad.item():
            self.consecutive = 0
            return True
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteError(
                f"step {step}: {self.consecutive} micro-batches in a row had a non-finite loss on some rank "
                f"(--max-bad-steps {self.max_consecutive}); stopped without saving. {self.hint} "
                "Check the data and the lr, then rerun (it resumes from there)."
            )
        return False

    def check_grad_norm(self, grad_norm: float | None, step: int) -> None:
        if grad_norm is not None and not math.isfinite(grad_norm):
            raise NonFiniteError(
                f"step {step}: gradient norm {grad_norm} with a finite loss; the update is already applied (fp32), "
                f"so the run stops without saving. {self.hint} Lower the lr or enable gradient clipping, then rerun."
            )


def gradient_norm(module: torch.nn.Module) -> float:
    """L2 norm over every gradient of ``module``: the one to report where DeepSpeed reports none (ZeRO-0). Call it
    after the backward of an accumulation boundary (gradients all-reduced) and before ``engine.step()``."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))) if grads else 0.0
