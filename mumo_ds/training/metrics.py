"""Rank-0 run logging: tqdm progress, TensorBoard events and a JSONL file of every logged step."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm


def training_flops_per_token(num_params_non_embedding: int, num_layers: int, hidden: int, context: int) -> float:
    """Model FLOPs per trained token (PaLM appendix B): 6 N for the matmuls, plus attention scores.

    6 N   forward (2 N) + backward (4 N) over the non-embedding parameters.
    12 L D C   attention QK^T and AV over a context of C positions, forward + backward.
    """
    return 6.0 * num_params_non_embedding + 12.0 * num_layers * hidden * context


class RunLogger:
    """Does nothing on ranks other than 0.

    A run that starts at ``initial_step`` (a resume) first drops what an interrupted run logged after
    that step, from the JSONL file and from TensorBoard (``purge_step``), so each step appears once.
    """

    def __init__(self, log_dir: Path, total_steps: int, initial_step: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.tb = SummaryWriter(str(log_dir), purge_step=initial_step + 1)
        path = log_dir / "metrics.jsonl"
        if path.is_file():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= initial_step]
            path.write_text("".join(line + "\n" for line in kept))
        self.jsonl = open(path, "a")
        self.bar = tqdm(total=total_steps, initial=initial_step, desc="train", dynamic_ncols=True)
        self.last_time = time.perf_counter()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        for key, value in metrics.items():
            self.tb.add_scalar(key, value, step)
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics.get('lr', 0):.2e}")

    def advance(self, steps: int = 1) -> None:
        if self.enabled:
            self.bar.update(steps)

    def write(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.tb.close()
            self.jsonl.close()
