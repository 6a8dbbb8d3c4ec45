"""The training entry point: one stage, one DeepSpeed engine, then an HF export.

Launch (CPU, 2 ranks; on GPUs drop OMP_NUM_THREADS and set --num_gpus)::

    OMP_NUM_THREADS=1 deepspeed --num_gpus 2 train.py --stage 1 --data data/sample
    OMP_NUM_THREADS=1 deepspeed --num_gpus 2 train.py --stage 2 --data data/sample   # starts from runs/stage1/export
    torchrun --nproc_per_node 2 train.py --stage 1 --no-resume --overwrite             # start over in a used run folder

A run folder with a complete checkpoint is resumed by default (requeue-friendly). SIGUSR1/SIGTERM
save a checkpoint at the next step and exit with ``preemption.PREEMPTED_EXIT_CODE``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist

from ..data import Manifest, expect_for
from ..data.mixing import MixedLoader
from ..modeling import MODALITIES, MuMoConfig, MuMoForConditionalGeneration
from ..modeling.text import load_tokenizer, tokenize_captions, tokenize_conditions
from . import checkpoint, distributed, faults
from .config import TrainConfig, parse_config
from .engine import attn_implementation, build_engine, load_ds_config, training_dtype, wants_compile
from .export import consolidated_state_dict, export_hf, export_meta, frozen_weights
from .guards import NonFiniteError, NonFiniteGuard, gradient_norm
from .metrics import RunLogger, memory_mb, mfu, params_per_frame, training_flops_per_token
from .preemption import PREEMPTED_EXIT_CODE, Preemption, clear_marker, write_marker
from .stages import Stage, apply_stage, get_stage, loss_weights
from .validation import caption_metrics, validate


def main(argv: list[str] | None = None, preemption: Preemption | None = None) -> None:
    """``preemption``: handlers installed earlier (train.py does, before importing this module)."""
    cfg = parse_config(argv)
    preemption = preemption or Preemption()  # first: a signal during start-up (a checkpoint loading) still requeues
    stage = get_stage(cfg.stage)
    previous = str(Path(cfg.runs_root) / f"stage{stage.starts_from}" / "export") if stage.starts_from else None
    try:
        cfg.resolve(stage.ds_config, previous)
    except ValueError as exn:
        print(f"error: {exn}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    rank, world_size, device = distributed.setup()
    try:
        train(cfg, stage, rank, world_size, device, preemption)
    except (NonFiniteError, checkpoint.ResumeError) as exn:  # every rank raises it at the same point
        distributed.teardown()
        if rank == 0:
            print(f"error: {exn}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    distributed.teardown()


def load_start(cfg: TrainConfig, manifest: Manifest, stage: Stage):
    """The starting model, its caption tokenizer, and whether the stage's ``prepare`` should run.

    An HF folder (with the stage's config overrides), or a fresh preset for this data. ``prepare``
    (e.g. copying music weights into motion) runs unless the folder is an export of this same stage.
    """
    if cfg.init_from != "scratch":
        if not Path(cfg.init_from, "config.json").is_file():
            raise FileNotFoundError(
                f"--init-from {cfg.init_from}: no HF model folder there (config.json missing); "
                "run the previous stage first, or pass --init-from DIR (or --init-from scratch --preset NAME)"
            )
        same_stage = export_meta(cfg.init_from).get("stage") == stage.number
        # fp32 whatever the folder's dtype (from_pretrained keeps a bf16 folder bf16): the weights the optimizer
        # updates; DeepSpeed casts the module itself when its config asks for bf16
        model = MuMoForConditionalGeneration.from_pretrained(cfg.init_from, dtype=torch.float32, **stage.model_overrides)
        return model, load_tokenizer(cfg.init_from), not same_stage
    config = MuMoConfig.from_preset(
        cfg.preset,
        **stage.model_overrides,
        num_codebooks=manifest.num_codebooks,
        codebook_size=manifest.codebook_size,
        frame_rate=manifest.frame_rate,
        music_codec=manifest.codec.get("name"),
        motion_tokenizer=manifest.motion_tokenizer.get("name"),
    )
    return MuMoForConditionalGeneration(config), load_tokenizer(config.text_tokenizer), True


def model_inputs(batch: dict, tokenizer, max_tokens: int, device: torch.device, targets: bool = False) -> dict:
    """A loader batch -> keyword arguments of ``MuMoForConditionalGeneration.forward``. Captions condition the
    streams (an empty one is the null condition: ``tokenize_conditions``), or with ``targets`` (stage 3) are what
    the caption decoder learns to write."""
    tokenize = tokenize_captions if targets else tokenize_conditions
    inputs = {}
    for m in MODALITIES:
        if f"{m}_codes" not in batch:
            continue
        inputs[f"{m}_codes"] = batch[f"{m}_codes"].to(device)
        inputs[f"{m}_mask"] = batch[f"{m}_mask"].to(device)
        ids, mask = tokenize(tokenizer, batch[f"{m}_captions"], max_tokens)
        inputs[f"{m}_caption_ids"], inputs[f"{m}_caption_mask"] = ids.to(device), mask.to(device)
    return inputs


def step_metrics(outputs: list, batches: list[dict], num_codebooks: int) -> torch.Tensor:
    """Per-rank sums as one vector, so ranks with different streams reduce the same layout.

    Layout: [loss, frames, then per modality: count, loss, K codebook losses, caption count, caption loss].
    """
    values = [sum(float(o.loss.detach()) for o in outputs), sum(float(b[f"{m}_mask"].sum()) for b in batches for m in MODALITIES if f"{m}_mask" in b)]
    for m in MODALITIES:
        present = [o for o in outputs if getattr(o, f"{m}_loss") is not None]
        values.append(len(present))
        values.append(sum(float(getattr(o, f"{m}_loss").detach()) for o in present))
        per_cb = sum((getattr(o, f"{m}_codebook_losses").detach().float().cpu() for o in present), torch.zeros(num_codebooks))
        values.extend(per_cb.tolist())
        captioned = [float(getattr(o, f"{m}_caption_loss").detach()) for o in outputs if getattr(o, f"{m}_caption_loss") is not None]
        values.extend([len(captioned), sum(captioned)])
    return torch.tensor(values, dtype=torch.float64)


def reduce_metrics(local: torch.Tensor, num_micro: int, num_codebooks: int, device) -> dict[str, float]:
    total = local.to(device)
    dist.all_reduce(total)
    total = total.cpu()
    world = dist.get_world_size()
    metrics = {"loss": total[0].item() / (num_micro * world), "frames": total[1].item()}
    i = 2
    for m in MODALITIES:
        count = total[i].item()
        if count:
            metrics[f"loss_{m}"] = total[i + 1].item() / count
            for k in range(num_codebooks):
                metrics[f"loss_{m}_cb{k}"] = total[i + 2 + k].item() / count
        captioned = total[i + 2 + num_codebooks].item()
        if captioned:
            metrics[f"loss_{m}_caption"] = total[i + 3 + num_codebooks].item() / captioned
        i += 4 + num_codebooks
    return metrics


def make_loader(cfg: TrainConfig, stage: Stage, mc: MuMoConfig, split: str, batch_size: int, rank: int,
                world_size: int) -> MixedLoader:
    return MixedLoader(
        cfg.data, split, mix=stage.mix, batch_size=batch_size, crop_frames=cfg.crop_frames, streams=stage.streams,
        rank=rank, world_size=world_size, seed=cfg.seed, shuffle=cfg.shuffle and split == "train",
        expect=expect_for(mc),
    )


def train(cfg: TrainConfig, stage: Stage, rank: int, world_size: int, device: torch.device,
          preemption: Preemption) -> None:
    is_main = rank == 0
    out_dir = Path(cfg.output_dir)
    manifest = Manifest.load(cfg.data)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank

    model, tokenizer, prepare = load_start(cfg, manifest, stage)
    if stage.prepare and prepare:
        getattr(model, stage.prepare)()
    model.config.loss_weights = loss_weights(stage, model.config.loss_weights)
    trainable = apply_stage(model, stage)
    if cfg.activation_checkpointing:
        model.gradient_checkpointing_enable()
    mc = model.config
    ds_config = load_ds_config(cfg, world_size, mc.hidden_size)
    model.set_attn_implementation(attn_implementation(cfg.attn_implementation, device, ds_config))
    micro, accum = ds_config["train_micro_batch_size_per_gpu"], ds_config["gradient_accumulation_steps"]
    loader = make_loader(cfg, stage, mc, "train", micro, rank, world_size)
    make_val_loader = lambda: make_loader(cfg, stage, mc, "val", micro, rank, world_size)  # noqa: E731
    if cfg.val_every:
        make_val_loader()  # refuse a missing val split now, not at the first validation
    non_embedding = params_per_frame(model)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)  # before ZeRO-3 partitions them
    compiled = wants_compile(cfg.compile, device)
    low_precision = training_dtype(ds_config) != torch.float32
    frozen_fp32 = frozen_weights(model) if is_main and low_precision and not cfg.dry_run else {}
    faults.signal_at_start(rank, world_size)
    engine, scheduler = build_engine(model, ds_config)
    if compiled:
        engine.compile()

    run = {"stage": stage.number, "zero_stage": engine.zero_optimization_stage(), "world_size": world_size,
           "micro_batch": micro, "grad_accum": accum,  # what a checkpoint must share to be resumed
           "start": start_identity(cfg.init_from)}
    start = resume_point(cfg)
    if start:
        checkpoint.check_same_run(cfg.checkpoint_dir, start[1], run)
    if not cfg.dry_run:
        clear_run_folder(cfg, is_main)
    start_step = checkpoint.load(engine, loader, cfg.checkpoint_dir, start[1], rank) if start else 0
    end_step = start_step + 1 if cfg.dry_run else cfg.max_steps
    if start and start_step >= cfg.max_steps and not cfg.dry_run and is_main:
        print(f"note: the run folder's checkpoint is at step {start_step}, --max-steps is {cfg.max_steps}: nothing to "
              "train, only the export is written again (raise --max-steps to continue, or --no-resume --overwrite to "
              "start over)", flush=True)

    if is_main:
        if not cfg.dry_run:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "train_config.json").write_text(cfg.to_json())
            (out_dir / "ds_config.json").write_text(json.dumps(ds_config, indent=2))
        sched = ds_config.get("scheduler", {})
        print(
            f"stage {stage.number} ({stage.name}): streams {stage.streams}, {world_size} rank(s), "
            f"ZeRO-{engine.zero_optimization_stage()}{', compiled' if compiled else ''}"
            f"{', activation checkpointing' if model.gradient_checkpointing else ''}, {mc._attn_implementation} attention, "
            f"micro-batch {micro} x accum {accum}, "
            f"steps {start_step}->{end_step}, start {cfg.init_from}" + (f" ({cfg.preset})" if cfg.init_from == "scratch" else "")
            + (f", resumed from step {start_step} ({cfg.checkpoint_dir / start[1]})" if start else "")
            + (" [dry run: one step, nothing written]" if cfg.dry_run else ""),
            flush=True,
        )
        print(f"  loss weights {mc.loss_weights}, lr {ds_config['optimizer']['params']['lr']} "
              f"({sched.get('type', 'constant')}), validation "
              + (f"every {cfg.val_every} steps x {cfg.val_batches} batches" if cfg.val_every else "off"), flush=True)
        for group, count in trainable.items():
            print(f"  trainable {group:<32} {count:>12,d}", flush=True)
        print(f"  frozen    {'(everything else)':<32} {frozen:>12,d}", flush=True)

    logger = RunLogger(out_dir / "logs", cfg.max_steps, start_step, enabled=is_main and not cfg.dry_run)
    flops_per_frame = training_flops_per_token(non_embedding, mc.num_hidden_layers, mc.hidden_size, cfg.crop_frames)
    no_checkpoint = "There is no checkpoint yet."
    guard = NonFiniteGuard(cfg.max_bad_steps, device, f"The newest checkpoint, {cfg.checkpoint_dir / start[1]}, is the "
                           "last good state." if start else no_checkpoint)
    batches = iter(loader)
    fixed = None
    micro_index = 0  # micro-batches drawn by this process, skipped ones included (fault injection counts them)
    last_saved = start_step if start else None
    last_metrics: dict[str, float] = {}
    last_val: dict[str, float] = {}

    def save(step: int) -> str:
        nonlocal last_saved
        meta = {**run, "metrics": last_metrics, "validation": last_val}
        tag = checkpoint.save(engine, loader, cfg.checkpoint_dir, step, rank, meta, cfg.keep_last, cfg.keep_every)
        guard.hint = f"The newest checkpoint, {cfg.checkpoint_dir / tag}, is the last good state."
        last_saved = step
        return tag

    def reduce(outputs, used):
        return reduce_metrics(step_metrics(outputs, used, mc.num_codebooks), len(outputs), mc.num_codebooks, device)

    to_inputs = lambda batch: {  # noqa: E731
        **model_inputs(batch, tokenizer, mc.max_caption_tokens, device, targets=stage.task == "caption"), "task": stage.task}

    def stop_for_preemption(step: int, tag: str | None) -> NoReturn:
        """Every rank: exit with PREEMPTED_EXIT_CODE, rank 0 leaving the requeue marker (``tag``: the checkpoint)."""
        logger.close()
        if is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_marker(out_dir, step, tag)
            saved = f"checkpoint {cfg.checkpoint_dir / tag}" if tag else "no checkpoint yet"
            print(f"preempted (signal on some rank) at step {step}: {saved}; exit {PREEMPTED_EXIT_CODE} "
                  "(requeue: the next run resumes from it)", flush=True)
        distributed.teardown()
        raise SystemExit(PREEMPTED_EXIT_CODE)

    if not cfg.dry_run and preemption.agreed(device):  # signalled during start-up: nothing new to save
        stop_for_preemption(start_step, start[1] if start else None)
    own_grad_norm = engine.zero_optimization_stage() == 0  # DeepSpeed reports no gradient norm there
    boundary_norm = None
    engine.train()
    for step in range(start_step + 1, end_step + 1):
        t0 = time.perf_counter()
        # the lr this step's update uses (the scheduler moves on inside engine.step)
        lr = scheduler.get_last_lr()[0] if scheduler is not None else ds_config["optimizer"]["params"]["lr"]
        outputs, used = [], []
        while len(outputs) < accum:  # a skipped micro-batch is replaced by the next one
            if cfg.fixed_batch:
                fixed = fixed if fixed is not None else next(batches)
                batch = fixed
            else:
                batch = next(batches)
            micro_index += 1
            out = engine(**to_inputs(batch))
            if not guard.loss_ok(out.loss, step, poison=faults.nan_loss(micro_index, rank, world_size)):
                continue
            engine.backward(out.loss)
            if own_grad_norm and engine.is_gradient_accumulation_boundary():
                boundary_norm = gradient_norm(engine.module)
            engine.step()
            outputs.append(out)
            used.append(batch)
        grad_norm = engine.get_global_grad_norm()
        if grad_norm is None and own_grad_norm:
            grad_norm = boundary_norm
        guard.check_grad_norm(grad_norm, step)
        validating = bool(cfg.val_every) and step % cfg.val_every == 0 and not cfg.dry_run
        if step % cfg.log_every == 0 or step == cfg.max_steps or validating or cfg.dry_run:
            metrics = reduce(outputs, used)
            seconds = time.perf_counter() - t0
            metrics.update(
                lr=lr,
                grad_norm=float(grad_norm or 0.0),
                frames_per_s=metrics.pop("frames") / seconds,
                samples_per_s=micro * accum * world_size / seconds,
                skipped_samples=float(loader.stats.num_bad),
                skipped_nonfinite=float(guard.skipped),
                **max_over_ranks(memory_mb(device), device),
            )
            if cfg.peak_tflops:
                metrics["mfu"] = mfu(metrics["frames_per_s"], flops_per_frame, cfg.peak_tflops, world_size)
            if validating:
                last_val = validate(engine, make_val_loader, cfg.val_batches, to_inputs, reduce)
                if stage.task == "caption":
                    last_val.update(caption_metrics(engine, make_val_loader, cfg.val_batches, tokenizer, device))
                metrics.update(last_val)
            logger.log(step, metrics)
            last_metrics = metrics
            if cfg.dry_run and is_main:
                print(json.dumps({"dry_run_step": step, **metrics}), flush=True)
        logger.advance()
        if cfg.dry_run:
            continue
        faults.pause_after_step(step, lambda: preemption.requested)
        if preemption.agreed(device):
            stop_for_preemption(step, save(step) if last_saved != step else checkpoint.tag_for(step))
        if cfg.save_every and step % cfg.save_every == 0 and step != cfg.max_steps:
            save(step)
    logger.close()
    if cfg.dry_run:
        if is_main:
            print("dry run done: no checkpoint, log or export written", flush=True)
        return

    final_step = max(start_step, cfg.max_steps)
    tag = save(final_step) if last_saved != final_step else checkpoint.tag_for(final_step)
    if is_main:
        state = consolidated_state_dict(cfg.checkpoint_dir, tag, engine.zero_optimization_stage()) | frozen_fp32
        exported = {"stage": stage.number, "step": final_step, "checkpoint": tag,
                    "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        export_hf(state, mc, tokenizer, cfg.export_dir, exported, assets_from=None if cfg.init_from == "scratch" else cfg.init_from)
        print(f"exported stage {stage.number} to {cfg.export_dir}", flush=True)
    dist.barrier()
    if cfg.verify_export:
        verify_export(engine, cfg, fixed if fixed is not None else next(batches), tokenizer, device, is_main)


def max_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The largest value of each scalar over ranks (memory: the fullest rank is the one that matters)."""
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return dict(zip(keys, t.tolist()))


def start_identity(init_from: str) -> str | None:
    """Which export a run starts from, as a checkpoint records it: an export of a stage names its stage, step and
    time (a re-run of that stage writes a new one, which a resume must not ignore); other starts are not compared."""
    info = export_meta(init_from) if init_from != "scratch" else {}
    if "exported_at" not in info:  # not an export of a stage, or one older than this record
        return None
    return f"the stage {info.get('stage')} export of step {info.get('step')} written {info['exported_at']}"


def resume_point(cfg: TrainConfig) -> tuple[int, str] | None:
    """The committed checkpoint to resume from, or None to start over.

    Resumes by default; ``--no-resume`` refuses a folder that holds checkpoints unless ``--overwrite``.
    """
    found = checkpoint.newest(cfg.checkpoint_dir)
    if found and not cfg.resume and not cfg.overwrite:
        raise FileExistsError(
            f"{cfg.checkpoint_dir}: holds checkpoints up to step {found[0]}; drop --no-resume to continue from "
            "the newest, or add --overwrite to delete them and start over"
        )
    return found if cfg.resume else None


def clear_run_folder(cfg: TrainConfig, is_main: bool) -> None:
    """Rank 0 drops the preemption marker and, for ``--no-resume --overwrite``, old checkpoints and logs. Collective."""
    dist.barrier()  # every rank has chosen its start before anything is deleted
    if is_main:
        clear_marker(Path(cfg.output_dir))
        if not cfg.resume and cfg.overwrite:
            for path in (cfg.checkpoint_dir, Path(cfg.output_dir) / "logs"):
                shutil.rmtree(path, ignore_errors=True)
    dist.barrier()

@torch.no_grad()
def verify_export(engine, cfg: TrainConfig, batch: dict, tokenizer, device, is_main: bool) -> None:
    """Compare the engine module's logits with the exported folder's on one batch (and, for a captioning model, the
    caption loss, which reads the caption decoder); write export_check.json.

    Every rank runs the engine forward (ZeRO-3 gathers parameters collectively); rank 0 compares.
    """
    module = engine.module
    module.eval()
    inputs = model_inputs(batch, tokenizer, module.config.max_caption_tokens, device)
    live = module(**inputs)
    targets = live_caption = None
    if module.config.captioning:  # the caption loss reads the caption decoder; its captions are targets
        targets = model_inputs(batch, tokenizer, module.config.max_caption_tokens, device, targets=True)
        live_caption = module(**targets, task="caption").loss
    if is_main:
        loaded = MuMoForConditionalGeneration.from_pretrained(cfg.export_dir).to(device).eval()
        loaded.set_attn_implementation(module.config._attn_implementation)  # the check is about weights, not kernels
        again = loaded(**inputs)
        diffs = {
            m: float((getattr(live, f"{m}_logits").float() - getattr(again, f"{m}_logits").float()).abs().max())
            for m in MODALITIES
            if getattr(live, f"{m}_logits") is not None
        }
        if live_caption is not None:
            diffs["caption_loss"] = float((live_caption.float() - loaded(**targets, task="caption").loss.float()).abs())
        Path(cfg.output_dir, "export_check.json").write_text(json.dumps({"max_abs_logit_diff": diffs}, indent=2))
        print(f"export check: max |logit diff| {diffs}", flush=True)
    module.train()
