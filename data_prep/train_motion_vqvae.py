"""Train the motion VQ-VAE on HumanML3D 263-d features (any source fps, trained at the model's frame rate, 50 fps).

Launch (from the repository root)::

    python -m data_prep.train_motion_vqvae --features data_prep/sample_data/motion --fps 60 \\
        --preset tiny --steps 200 --out runs/motion_vqvae                       # one process
    torchrun --nproc_per_node 2 -m data_prep.train_motion_vqvae --features DIR --out runs/motion_vqvae
                                                                                # DDP (gloo on CPU, nccl on GPU)
    python -m data_prep.train_motion_vqvae ... --resume                         # continue from the latest checkpoint
    python -m data_prep.train_motion_vqvae ... --overwrite                      # start over in a used --out

A used ``--out`` (one with checkpoints) needs one of the two; ``--resume`` refuses a checkpoint of
another seed, rank count, model config, ``--fps`` or Mean/Std.

Each clip is loaded (checked), resampled to the model's ``frame_rate`` (50 fps) keeping the motion, as
encoding does (:func:`mumo_ds.tokenizers.motion_features.at_rate`), and normalised with ``--mean``/``--std``.
Held out: the last ``--val-clips`` clips (by name), or with ``--val-clips 0`` the last
``--val-fraction`` of every clip. Training draws random windows of ``--window`` frames.

Writes under ``--out``: ``train_config.json`` (resolved arguments), ``logs/metrics.jsonl`` (loss,
reconstruction and commitment loss, LR, codes restarted and batch perplexity per level, every step),
``checkpoints/step_XXXXXXXX/`` (model, optimizer, step, RNG: safetensors + JSON, atomic),
``model/`` (the HF folder: ``MotionVQVAE.from_pretrained``) and ``report.json`` (held-out
reconstruction MPJPE in mm on recovered joints, per-level code perplexity).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from mumo_ds.tokenizers.motion_checkpoint import (
    begin_checkpoint,
    commit_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    step_dir,
    write_main_state,
    write_rank_state,
)
from mumo_ds.tokenizers.motion_features import at_rate, denormalize, load_features, load_stats, normalize
from mumo_ds.tokenizers.motion_metrics import mpjpe_mm, perplexity, perplexity_from_counts
from mumo_ds.tokenizers.motion_vqvae import MotionVQVAE, MotionVQVAEConfig
from mumo_ds.tokenizers.motion_vqvae_config import PRESETS

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data" / "motion"
STATS_FILES = ("Mean.npy", "Std.npy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", nargs="+", default=[str(SAMPLE_DIR)], help=".npy feature files or folders of them (Mean.npy/Std.npy skipped)")
    p.add_argument("--fps", type=float, default=60.0, help="frame rate of the input features")
    p.add_argument("--mean", default=str(SAMPLE_DIR / "Mean.npy"), help="dataset Mean.npy [263]")
    p.add_argument("--std", default=str(SAMPLE_DIR / "Std.npy"), help="dataset Std.npy [263]")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--preset", default="base", choices=sorted(PRESETS), help="model size preset")
    p.add_argument("--config", default=None, help="JSON file of MotionVQVAEConfig fields, over those of --preset")
    p.add_argument("--window", type=int, default=64, help="training window in frames at the model's frame_rate (50 fps)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per rank per step")
    p.add_argument("--steps", type=int, default=20000, help="total optimizer steps")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup-steps", type=int, default=500, help="linear LR warm-up, then constant")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--val-clips", type=int, default=0, help="hold out the last N clips; 0: hold out the tail of every clip")
    p.add_argument("--val-fraction", type=float, default=0.2, help="tail fraction held out when --val-clips 0")
    p.add_argument("--eval-window", type=int, default=64, help="held-out clips are cut into windows of this many frames for the report (0: whole clips)")
    p.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps (and at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT/checkpoints (fresh start if none)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an OUT whose checkpoints/ holds an earlier run (deletes those checkpoints)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--num-threads", type=int, default=0, help="torch CPU threads per rank (0: torch's default; 1 is fastest on a busy CPU)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data
def find_feature_files(paths: list[str]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.glob("*.npy") if f.name not in STATS_FILES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"--features {p}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"--features {paths}: no .npy feature files found")
    return files


def prepare_clips(files: list[Path], fps: float, rate: float, mean: np.ndarray, std: np.ndarray) -> list[np.ndarray]:
    """Each file -> normalised features [T, 263] at ``rate``, the model's frame rate."""
    return [normalize(at_rate(load_features(f), fps, rate), mean, std) for f in files]


def split_clips(clips: list[np.ndarray], val_clips: int, val_fraction: float) -> tuple[list, list]:
    if val_clips > 0:
        if val_clips >= len(clips):
            raise ValueError(f"--val-clips {val_clips}: only {len(clips)} clip(s); leave at least one for training")
        return clips[:-val_clips], clips[-val_clips:]
    train, val = [], []
    for c in clips:
        cut = int(round(c.shape[0] * (1.0 - val_fraction)))
        train.append(c[:cut])
        if c.shape[0] - cut >= 2:
            val.append(c[cut:])
    if not val:
        raise ValueError(f"--val-fraction {val_fraction}: no held-out frames; raise it or use --val-clips")
    return train, val


class WindowSampler:
    """Random windows [B, W, 263] from clips, drawn with its own seeded generator (saved in checkpoints)."""

    def __init__(self, clips: list[np.ndarray], window: int, seed: int):
        self.clips = [torch.from_numpy(c) for c in clips if c.shape[0] >= window]
        if not self.clips:
            raise ValueError(f"--window {window}: every training clip is shorter; lower --window")
        self.window = window
        self.offsets = torch.tensor([0] + [c.shape[0] - window + 1 for c in self.clips]).cumsum(0)  # [C + 1]
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch: int) -> torch.Tensor:
        flat = torch.randint(0, int(self.offsets[-1]), (batch,), generator=self.generator)  # [B] (clip, start) pairs
        clip = torch.searchsorted(self.offsets, flat, right=True) - 1
        start = flat - self.offsets[clip]
        return torch.stack([self.clips[c][s : s + self.window] for c, s in zip(clip.tolist(), start.tolist())])


# ----------------------------------------------------------------------------- distributed
def setup_distributed(device_arg: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
    rank = 0
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
        rank = dist.get_rank()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def rng_state(sampler: WindowSampler) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "sampler": sampler.generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor], sampler: WindowSampler) -> None:
    torch.set_rng_state(state["torch"])
    sampler.generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------- training
def lr_at(step: int, args: argparse.Namespace) -> float:
    return args.lr * min(1.0, (step + 1) / max(1, args.warmup_steps))


def train_step(model: MotionVQVAE, wrapped: torch.nn.Module, optimizer, batch: torch.Tensor, lr: float, grad_clip: float, world: int) -> dict:
    """One optimizer step + codebook update; statistics summed over ranks, buffers synced from rank 0."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    out = wrapped(batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    counts, sums = out["counts"], out["sums"]
    losses = torch.stack([out["loss"].detach(), out["recon_loss"].detach(), out["commit_loss"].detach()])
    if world > 1:
        for t in (counts, sums, losses):
            dist.all_reduce(t)
        losses /= world
    restarted = model.update_codebooks(counts, sums, out["residuals"])
    if world > 1:
        for buf in model.quantizer.buffers():  # restarts drew from rank 0's batch on every rank: keep rank 0's
            dist.broadcast(buf, 0)
    return {
        "loss": losses[0].item(),
        "recon_loss": losses[1].item(),
        "commit_loss": losses[2].item(),
        "lr": lr,
        "restarted": restarted,
        "batch_perplexity": [round(perplexity_from_counts(c.cpu().numpy()), 3) for c in counts],
    }


def eval_windows(val: list[np.ndarray], window: int) -> list[np.ndarray]:
    """Held-out clips -> non-overlapping windows of ``window`` frames (the last one shorter; >= 2 frames)."""
    if window <= 0:
        return val
    return [c[s : s + window] for c in val for s in range(0, c.shape[0], window) if c[s : s + window].shape[0] >= 2]


@torch.no_grad()
def evaluate(model: MotionVQVAE, val: list[np.ndarray], mean: np.ndarray, std: np.ndarray, device: torch.device) -> dict:
    """Held-out windows (normalised, at the model's rate) -> reconstruction loss, MPJPE (mm, frame-weighted means)
    on recovered joints, and per-level code perplexity over all held-out frames."""
    k, frames, sums, codes = model.config.codebook_size, 0, {}, []
    for clip in val:
        x = torch.from_numpy(clip)[None].to(device)  # [1, T, 263]
        out = model(x)
        pred = out["reconstruction"][0].float().cpu().numpy()  # [T, 263]
        t = clip.shape[0]
        metrics = {"val_recon_loss": out["recon_loss"].item(), **mpjpe_mm(denormalize(pred, mean, std), denormalize(clip, mean, std))}
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value * t
        frames += t
        codes.append(out["codes"][0].cpu().numpy())  # [L, T]
    all_codes = np.concatenate(codes, axis=1)  # [L, sum T]
    return {
        "val_windows": len(val),
        "val_frames": frames,
        **{name: total / frames for name, total in sums.items()},
        "perplexity": [perplexity(level, k) for level in all_codes],
        "codes_used": [int(np.unique(level).size) for level in all_codes],
    }


def build_config(args: argparse.Namespace) -> MotionVQVAEConfig:
    """``--preset``, with the fields of ``--config`` (a JSON object) over it; a field the config lacks is refused."""
    fields = json.loads(Path(args.config).read_text()) if args.config else {}
    known = set(inspect.signature(MotionVQVAEConfig.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"--config {args.config}: unknown MotionVQVAEConfig field(s) {unknown}; known: {sorted(known)}")
    return MotionVQVAEConfig.from_preset(args.preset, **fields)


def export_model(model: MotionVQVAE, out_dir: Path, args: argparse.Namespace) -> None:
    """save_pretrained into a temp folder, then rename into place."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    (tmp / "README.md").write_text(
        f"# Motion VQ-VAE\n\nHumanML3D 263-d features at {model.config.frame_rate} fps <-> "
        f"{model.config.num_quantizers} x {model.config.codebook_size} codes per frame "
        "(`mumo_ds.tokenizers.motion_vqvae.MotionVQVAE`).\n\n"
        f"Feature statistics (`feature_mean`/`feature_std` buffers) from `{args.mean}` / `{args.std}`. "
        "The bundled statistics and sample clip come from the AIST++ dataset (Li et al., \"AI Choreographer\", "
        "ICCV 2021), CC BY 4.0, as converted to HumanML3D features by the UniMuMo authors.\n"
    )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    rank, world, device = setup_distributed(args.device)
    out = Path(args.out)
    ckpt_root, log_file = out / "checkpoints", out / "logs" / "metrics.jsonl"
    torch.manual_seed(args.seed)

    config = build_config(args)
    mean, std = load_stats(args.mean, args.std)
    files = find_feature_files(args.features)
    clips = prepare_clips(files, args.fps, config.frame_rate, mean, std)
    train_clips, val_clips = split_clips(clips, args.val_clips, args.val_fraction)
    sampler = WindowSampler(train_clips, args.window, seed=args.seed * 1000 + rank)

    model = MotionVQVAE(config).to(device)
    model.set_feature_stats(torch.from_numpy(mean), torch.from_numpy(std))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    wrapped = torch.nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False) if world > 1 else model

    start = 0
    latest = latest_checkpoint(ckpt_root)
    if latest is not None and not args.resume:
        if not args.overwrite:
            raise ValueError(f"{latest}: {out} holds an earlier run's checkpoints; pass --resume to continue it, or "
                             f"--overwrite to start over (deletes {ckpt_root})")
        if world > 1:
            dist.barrier()  # every rank has found the checkpoint before rank 0 deletes it
        if rank == 0:
            shutil.rmtree(ckpt_root)
        if world > 1:
            dist.barrier()
        latest = None
    if latest is not None:
        check_same_run(latest, args.seed, world, config, args.fps)  # before loading: another shape cannot load
        state, rng = load_checkpoint(latest, model, optimizer, rank)
        check_same_stats(latest, model, mean, std, args)
        set_rng_state(rng, sampler)
        start = state["step"]
    elif args.resume and rank == 0:
        print(f"--resume: no checkpoint in {ckpt_root}; starting from step 0", file=sys.stderr)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps({"args": vars(args), "world_size": world, "model": config.to_dict()}, indent=2, default=str) + "\n")
        kept = [ln for ln in log_file.read_text().splitlines() if json.loads(ln)["step"] <= start] if log_file.exists() and start else []
        log_file.write_text("".join(ln + "\n" for ln in kept))
        print(
            f"motion VQ-VAE: {len(files)} clip(s), {sum(c.shape[0] for c in train_clips)} train / "
            f"{sum(c.shape[0] for c in val_clips)} held-out frames at {config.frame_rate} fps, {sum(p.numel() for p in model.parameters())} "
            f"parameters, {world} rank(s), steps {start}..{args.steps}",
            file=sys.stderr,
        )

    model.train()
    bar = tqdm(total=args.steps, initial=start, disable=rank != 0 or args.no_progress, desc="motion-vqvae")
    for step in range(start, args.steps):
        batch = sampler.sample(args.batch_size).to(device)  # [B, W, 263]
        metrics = train_step(model, wrapped, optimizer, batch, lr_at(step, args), args.grad_clip, world)
        done = step + 1
        if rank == 0:
            with open(log_file, "a") as f:
                f.write(json.dumps({"step": done, **metrics}) + "\n")
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        bar.update(1)
        if done % args.save_every == 0 or done == args.steps:
            save_checkpoint(ckpt_root, done, model, optimizer, sampler, rank, world, args)
    bar.close()

    report = {}
    if rank == 0:
        model.eval()
        report = {"step": args.steps, "world_size": world, "train_frames": sum(c.shape[0] for c in train_clips), **evaluate(model, eval_windows(val_clips, args.eval_window), mean, std, device)}
        model.train()
        export_model(model, out / "model", args)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report), file=sys.stderr)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return report


def run_config(config: MotionVQVAEConfig) -> dict:
    """The model config as a checkpoint stores it (JSON types; the transformers version left out)."""
    return json.loads(config.to_json_string(use_diff=False)) | {"transformers_version": None}


def check_same_run(checkpoint: Path, seed: int, world: int, config: MotionVQVAEConfig, fps: float) -> None:
    """--resume continues the run the checkpoint belongs to: same ranks, seed, input fps and model, or a clear error."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    if state["world_size"] != world:
        raise ValueError(f"{checkpoint}: written by {state['world_size']} rank(s), resumed with {world}; use the same number")
    if state.get("seed", seed) != seed:
        raise ValueError(f"{checkpoint}: the run used --seed {state['seed']}, this one --seed {seed}; resume with "
                         f"--seed {state['seed']}, or start over with --overwrite")
    if state.get("fps", fps) != fps:
        raise ValueError(f"{checkpoint}: the run read its features at --fps {state['fps']}, this one at --fps {fps}; "
                         f"resume with --fps {state['fps']}, or start over with --overwrite")
    saved, current = state.get("model"), run_config(config)
    if saved is not None and saved != current:
        changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
        raise ValueError(f"{checkpoint}: the run's model differs in {changed}; resume with its --preset/--config, or "
                         "start over with --overwrite")


def check_same_stats(checkpoint: Path, model: MotionVQVAE, mean: np.ndarray, std: np.ndarray, args) -> None:
    """The loaded checkpoint's Mean/Std are those this run normalises its clips with: the saved model keeps the
    checkpoint's, so other files would train on data the exported model does not normalise that way."""
    saved = model.feature_mean.cpu().numpy(), model.feature_std.cpu().numpy()
    if not (np.array_equal(saved[0], mean) and np.array_equal(saved[1], std)):
        raise ValueError(f"{checkpoint}: the run normalised its features with other statistics than --mean {args.mean} "
                         f"/ --std {args.std}; resume with the run's Mean/Std files, or start over with --overwrite")


def save_checkpoint(root: Path, step: int, model, optimizer, sampler: WindowSampler, rank: int, world: int, args) -> None:
    """All ranks: rank 0 writes model/optimizer/state, every rank its RNG, then rank 0 renames into place."""
    tmp = step_dir(root, step).with_suffix(".tmp")
    if rank == 0:
        begin_checkpoint(root, step)
        write_main_state(tmp, model, optimizer, {"step": step, "world_size": world, "seed": args.seed, "fps": args.fps,
                                                 "model": run_config(model.config)})
    if world > 1:
        dist.barrier()
    write_rank_state(tmp, rank, rng_state(sampler))
    if world > 1:
        dist.barrier()
    if rank == 0:
        commit_checkpoint(tmp, args.keep_checkpoints)
    if world > 1:
        dist.barrier()


if __name__ == "__main__":
    main()
