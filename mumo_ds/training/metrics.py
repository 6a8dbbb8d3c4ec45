"""Rank-0 run logging: tqdm progress, TensorBoard events and a JSONL file of every logged step."""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import torch
from tqdm import tqdm


def training_flops_per_token(num_params_non_embedding: int, num_layers: int, hidden: int, context: int) -> float:
    """Model FLOPs per trained token (PaLM appendix B): 6 N for the matmuls, plus attention scores.

    6 N   forward (2 N) + backward (4 N) over the non-embedding parameters.
    12 L D C   attention QK^T and AV over a context of C positions, forward + backward.
    """
    return 6.0 * num_params_non_embedding + 12.0 * num_layers * hidden * context


CAPTION_SIDE = (".encoder_attn.k_proj.", ".encoder_attn.v_proj.")  # cross-attention keys/values: per caption token


def runs_on_captions(name: str) -> bool:
    """Whether parameter ``name`` (MuMo's or HF MusicGen's) works on caption tokens rather than frames: the text
    projection and the cross-attention key/value projections run once per caption token (16 or so per sample),
    not once per frame, so they are not part of a frame's N."""
    return name.startswith("text_projection.") or any(part in name for part in CAPTION_SIDE)


def params_per_frame(model: torch.nn.Module) -> int:
    """The N of :func:`training_flops_per_token` for a MuMo model: the parameters one frame of one stream goes
    through. Shared layers plus one modality's FFN experts and head (a frame never touches another modality's);
    no embedding tables, no text encoder, text projection or cross-attention keys/values (they run per caption
    token: :func:`runs_on_captions`), no captioning modules."""
    others = model.config.modalities[1:]  # every modality's experts and head have the same size as the first's

    def used(name: str) -> bool:
        if name.startswith(("embeddings.", "text_encoder.", "caption_decoder.")) or ".caption_self_attn." in name:
            return False
        if runs_on_captions(name):
            return False
        return not any(f".experts.{m}." in name or name.startswith(f"heads.{m}.") for m in others)

    return sum(p.numel() for n, p in model.named_parameters() if used(n))


def mfu(frames_per_s: float, flops_per_frame: float, peak_tflops: float, world_size: int) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all devices.

    frames_per_s counts real (unpadded) frames of every stream over all ranks; a frame of one stream is
    one position of the sequence (one token of the decoder), so flops_per_frame = training_flops_per_token.
    """
    return frames_per_s * flops_per_frame / (peak_tflops * 1e12 * world_size)


def memory_mb(device: torch.device) -> dict[str, float]:
    """This process's memory: resident set now and at its peak, and CUDA's max allocated on GPUs (MiB)."""
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    out = {"rss_mb": rss / 2**20, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


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
