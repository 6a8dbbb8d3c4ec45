"""``mumo-eval``: evaluate every checkpoint of a run with fixed seeds, to pick the one before overfitting.

    mumo-eval --checkpoints runs/stage2 --task music2motion --seconds 5 --num-samples 300 \
        --guidance-scale 4 --data data/sample --motion-vqvae vqvae/ --codec runs/init/codec --out eval/

``--checkpoints`` takes run folders (every checkpoint under ``checkpoints/`` plus ``export/``), HF model
folders, DeepSpeed checkpoint tag folders, or globs of these. For each checkpoint, the val split's
first ``--num-samples`` samples at least ``--seconds`` long are used as conditions and references
(batch ``i`` generated with seed ``seed + i``). Shorter clips are skipped, and their number printed:
the loader pads them with code 0, which would be given to the model as music and decoded into the
clips that the metrics compare. Motion tasks report FID_k, FID_m, Div_k, Div_m (and the Beat Align
Score when music can be decoded; clips whose music has no beats are left out of it, counted in
``beat_align_skipped``, and it is NaN when no clip has any); music tasks report the Fréchet
distance of EnCodec embeddings (``fd_encodec``) and, with ``--classifier DIR`` (a local
audio-classification folder, e.g. an AudioSet AST), the KL between the label distributions of each
generated clip and its reference (``kl``) and the Fréchet distance of the classifier's embeddings
(``fd_classifier``). Results are kept per checkpoint in ``OUT/results/NAME.json`` (finished
checkpoints are not recomputed), and summarised in ``OUT/table.csv``, ``OUT/table.md``, one PNG
per metric and ``OUT/best.json``. NAME is the checkpoint's folder name (``RUN-export`` for a run's
export), with its parent folders where two checkpoints would share one (``runA-step00000040``,
``runB-step00000040``); a result file is reused only for the checkpoint and the settings that wrote it.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..data import CodesLoader, expect_for
from ..data.prep_motion import vqvae_codes_name
from ..modeling import MuMoConfig, MuMoForConditionalGeneration
from ..modeling.generation import TASKS, generation_device
from ..modeling.text import tokenize_conditions
from ..viz.plots import plot_metric
from .motion_metrics import mean_beat_align, motion_beats, motion_metrics, music_beats
from .music_metrics import AudioClassifier, EncodecEmbedder, classifier_metrics, music_fd

LOWER_IS_BETTER = ("fid", "fd", "kl")
NOT_METRICS = ("checkpoint", "files", "settings", "num_samples", "beat_align_skipped")  # result keys left out of the tables


# ------------------------------------------------------------------ checkpoints
def find_checkpoints(patterns: list[str]) -> list[Path]:
    """HF folders and DeepSpeed tag folders named by ``patterns`` (run folders expand to their checkpoints)."""
    found: list[Path] = []
    for pattern in patterns:
        for path in sorted(Path(p) for p in glob.glob(pattern)) or [Path(pattern)]:
            if (path / "checkpoints").is_dir():
                found += sorted(p for p in (path / "checkpoints").iterdir() if _is_ds_tag(p))
                found += [path / "export"] if (path / "export" / "config.json").is_file() else []
            elif (path / "config.json").is_file() or _is_ds_tag(path):
                found.append(path)
            else:
                raise FileNotFoundError(f"--checkpoints {pattern}: {path} is neither a run, an HF folder nor a checkpoint")
    return found


def _is_ds_tag(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*model_states.pt"))


def load_checkpoint(path: Path) -> MuMoForConditionalGeneration:
    """An HF folder directly; a DeepSpeed tag consolidated to fp32 with its run's model config."""
    if (path / "config.json").is_file():
        return MuMoForConditionalGeneration.from_pretrained(path).eval()
    from ..training.engine import training_dtype
    from ..training.export import consolidated_state_dict

    run = path.parent.parent
    config_dir = run / "export"
    if not (config_dir / "config.json").is_file():
        init = json.loads((run / "train_config.json").read_text()).get("init_from", "")
        config_dir = Path(init)
    if not (config_dir / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no model config found in {run / 'export'} or the run's init_from")
    ds_config = json.loads((run / "ds_config.json").read_text())
    state = consolidated_state_dict(path.parent, path.name, ds_config["zero_optimization"]["stage"])
    if training_dtype(ds_config) != torch.float32:
        state |= exact_frozen_weights(config_dir, json.loads((run / "train_config.json").read_text())["stage"], state)
    model = MuMoForConditionalGeneration(MuMoConfig.from_pretrained(config_dir))
    model.load_state_dict(state)
    model.freeze_text_encoder()
    return model.eval()


def exact_frozen_weights(folder: Path, stage: int, state: dict) -> dict:
    """The weights stage ``stage`` keeps frozen, in fp32 from ``folder`` (its run's export, or the folder it started
    from: a stage never changes them), for the names of ``state``. A bf16/fp16 run's DeepSpeed tag holds them rounded
    to that dtype; its export puts the fp32 values back the same way (``frozen_weights``), so a tag and the export of
    the same step score the same."""
    from ..training.export import frozen_weights
    from ..training.stages import apply_stage, get_stage

    source = MuMoForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    apply_stage(source, get_stage(stage))
    return {name: weight for name, weight in frozen_weights(source).items() if name in state}


def checkpoint_names(paths: list[Path]) -> list[str]:
    """One readable name per checkpoint, unique among ``paths``.

    The folder name (``RUN-export`` for a run's export); where two checkpoints would share a name,
    those two take parent folders until they differ (the ``checkpoints`` folder of a run is left out):
    runsA/checkpoints/step00000040, runsB/checkpoints/step00000040 -> runsA-step00000040, runsB-step00000040.
    Refuses a checkpoint listed twice (overlapping globs), and names that still collide.
    """
    resolved = [p.resolve() for p in paths]
    twice = sorted({str(p) for p in resolved if resolved.count(p) > 1})
    if twice:
        raise SystemExit(f"--checkpoints lists {twice} more than once (overlapping globs?); name each checkpoint once")
    parts = []
    for path in paths:
        folders = list(Path(os.path.abspath(path)).parts[1:])  # without the root
        if len(folders) >= 2 and folders[-2] == "checkpoints":
            del folders[-2]
        parts.append(folders)
    depth = [2 if p.name == "export" else 1 for p in paths]
    while True:
        names = ["-".join(folders[-d:]) for folders, d in zip(parts, depth)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(parts[i])]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    same = sorted({str(p) for p, n in zip(paths, names) if names.count(n) > 1})
    if same:
        raise SystemExit(f"--checkpoints {same}: no unique name for these checkpoints; evaluate them into separate --out")
    return names


SETTINGS = ("task", "data", "seconds", "num_samples", "batch_size", "guidance_scale", "top_k", "seed", "codec",
            "motion_vqvae", "classifier")  # what a result depends on besides the checkpoint (batch_size: the seeds)


def run_settings(args, device: torch.device) -> dict:
    """:data:`SETTINGS` of this run, paths resolved, and the type of the ``device`` the checkpoints generate on (a
    GPU samples other codes than a CPU from the same seed)."""
    settings = {k: (str(Path(v).resolve()) if k in ("data", "codec", "motion_vqvae", "classifier") and v else v)
                for k, v in ((k, getattr(args, k)) for k in SETTINGS)}
    return {**settings, "device": device.type}


def checkpoint_files(path: Path) -> dict[str, list[int]]:
    """Size and modification time of each file of a checkpoint folder: a re-export into the same folder (a resumed
    run's ``export/``) changes them, so its old result is not reused."""
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.iterdir()) if f.is_file()}


def cached_result(result_file: Path, path: Path, settings: dict) -> dict | None:
    """The result ``path`` left in ``result_file`` by an earlier run with the same ``settings``; refuses one of
    another checkpoint or other settings (the table would mix them). Fields a file lacks predate the check."""
    if not result_file.is_file():
        return None
    result = json.loads(result_file.read_text())
    if result.get("checkpoint", str(path.resolve())) != str(path.resolve()):
        raise SystemExit(f"{result_file} holds the result of {result['checkpoint']}, not of {path}: "
                         f"use another --out, or remove the file to evaluate {path} here")
    changed = {k: (v, settings[k]) for k, v in result.get("settings", {}).items() if k in settings and v != settings[k]}
    if changed:
        what = ", ".join(f"--{k.replace('_', '-')} {old} (now {new})" for k, (old, new) in changed.items())
        raise SystemExit(f"{result_file} was computed with {what}: use another --out for these settings, or remove "
                         "the folder's results/ to recompute them all")
    files = checkpoint_files(path)
    if result.get("files", files) != files:
        print(f"{path}: its files changed since {result_file} was computed; evaluating it again", flush=True)
        return None
    return result


# ---------------------------------------------------------------------- decoding
class Decoders:
    """Codes -> waveforms / joints, with the codec and the motion VQ-VAE when given (and the audio classifier)."""

    def __init__(self, codec: str | None, motion_vqvae: str | None, classifier: str | None = None):
        self.codec = self.vqvae = None
        self.classifier = AudioClassifier(classifier) if classifier else None
        if codec:
            from ..tokenizers.music_codec import TransformersEncodec

            self.codec = TransformersEncodec(codec)
            self.embed = EncodecEmbedder(codec)
        if motion_vqvae:
            from ..tokenizers.motion_vqvae import MotionVQVAE

            self.vqvae = MotionVQVAE.from_pretrained(motion_vqvae).eval()

    def audio(self, codes: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            return [a[0].float().numpy() for a in self.codec.decode(codes.long())]

    def joints(self, codes: torch.Tensor) -> list[np.ndarray]:
        from ..tokenizers.motion_codec import decode_batch
        from ..tokenizers.motion_features import recover_joints

        return [recover_joints(f) for f in decode_batch(self.vqvae, codes)]


def warn_decoder_mismatch(cfg, args, decoders: Decoders) -> None:
    """A note when --codec / --motion-vqvae cannot be what made the model's codes (the names its config records from
    its training data's manifest; build_shards names a VQ-VAE's codes after its folder): metrics of clips decoded from
    them would mean nothing."""
    pairs = []
    if decoders.codec is not None:
        pairs.append(("music_codec", cfg.music_codec, "--codec", decoders.codec.info.name))
    if decoders.vqvae is not None:
        pairs.append(("motion_tokenizer", cfg.motion_tokenizer, "--motion-vqvae", vqvae_codes_name(args.motion_vqvae)))
    for field, made_by, option, decodes in pairs:
        if made_by and made_by != decodes:
            print(f"note: the model's codes come from {made_by!r} (config.{field}), {option} decodes {decodes!r} codes: "
                  "metrics of clips decoded from them mean nothing", flush=True)


# --------------------------------------------------------------------- evaluation
def conditions(args, cfg) -> list[dict]:
    """The first ``num_samples`` val samples that have the streams the task needs and at least
    ``args.seconds`` of them, as batches (the last one cut to reach exactly ``num_samples``).

    Shorter samples are skipped (counted and printed): the loader pads them with code 0 (``*_mask``
    False), and the model would take the padding as given music, the metrics as frames of the clips.
    """
    generated, given = TASKS[args.task]
    streams = tuple(sorted(set(generated) | ({given} if given else set()), key=("music", "motion").index))
    frames = round(args.seconds * cfg.frame_rate)
    # one clip at a time, batched here: the loader drops an epoch's last partial batch, which would lose val clips
    loader = CodesLoader(
        args.data, "val", batch_size=1, crop_frames=frames, streams=streams, shuffle=False, kinds=(streams,),
        expect=expect_for(cfg),
    )
    clips, short = [], 0
    for clip in loader:
        if loader.state_dict()["epoch"] > 0 or len(clips) == args.num_samples:  # one pass over val at most
            break
        if all(bool(clip[f"{m}_mask"].all()) for m in streams):
            clips.append(clip)
        else:
            short += 1
    if short:
        print(f"skipped {short} val clip(s) shorter than --seconds {args.seconds:g} ({frames} frames)", flush=True)
    if len(clips) < 2:  # checked before any generation: the metrics would refuse one clip after it
        raise SystemExit(f"{args.data}: {len(clips)} val clip(s) with {streams} at least --seconds {args.seconds:g} "
                         "long; FID/FD and diversity need 2 or more: lower --seconds, or add val data")
    groups = [clips[i : i + args.batch_size] for i in range(0, len(clips), args.batch_size)]
    return [{k: torch.cat([c[k] for c in group]) if torch.is_tensor(group[0][k]) else [x for c in group for x in c[k]]
             for k in group[0]} for group in groups]


def evaluate_checkpoint(model, args, batches: list[dict], decoders: Decoders) -> dict[str, float]:
    generated, given = TASKS[args.task]
    tokenizer = model.saved_tokenizer()
    outputs = {m: [] for m in generated}
    references = {m: [] for m in generated}
    conditions_music = []
    for i, batch in enumerate(batches):
        prompts = {m: None for m in generated}
        if given:
            prompts[given] = batch[f"{given}_codes"]
        text = {}
        for m in generated:
            ids, mask = tokenize_conditions(tokenizer, batch[f"{m}_captions"], model.config.max_caption_tokens)
            text[m] = (ids, mask)
        frames = batch[f"{generated[0]}_codes"].shape[-1]
        codes = model.generate(frames, prompts, text, guidance_scale=args.guidance_scale, top_k=args.top_k,
                               seed=args.seed + i, batch_size=len(batch["keys"]))
        codes = {m: c.cpu() for m, c in codes.items()}  # decoders and metrics run on the CPU
        for m in generated:
            outputs[m].append(codes[m])
            references[m].append(batch[f"{m}_codes"])
        if given == "music" or "music" in generated:  # the music the dance should follow
            conditions_music.append(codes["music"])
    result: dict[str, float] = {"num_samples": float(sum(len(b["keys"]) for b in batches))}
    fps = model.config.frame_rate
    if "motion" in generated:
        if decoders.vqvae is None:
            raise SystemExit("motion metrics need --motion-vqvae DIR (codes -> features -> joints)")
        gen = [j for c in outputs["motion"] for j in decoders.joints(c)]
        ref = [j for c in references["motion"] for j in decoders.joints(c)]
        result.update(motion_metrics(gen, ref, fps))
        if decoders.codec is not None and conditions_music:
            audio = [a for c in conditions_music for a in decoders.audio(c)]
            rate = decoders.codec.info.sample_rate
            score, skipped = mean_beat_align([music_beats(a, rate) for a in audio], [motion_beats(j, fps) for j in gen])
            result["beat_align"], result["beat_align_skipped"] = score, float(skipped)
            if skipped:
                print(f"beat_align: {skipped} of {len(audio)} clip(s) left out, their music has no beats", flush=True)
    if "music" in generated:
        if decoders.codec is None:
            raise SystemExit("music metrics need --codec DIR (an EnCodec folder to decode codes to audio)")
        gen = [a for c in outputs["music"] for a in decoders.audio(c)]
        ref = [a for c in references["music"] for a in decoders.audio(c)]
        rate = decoders.codec.info.sample_rate
        result["fd_encodec"] = music_fd(gen, ref, rate, decoders.embed)
        if decoders.classifier is not None:
            result.update(classifier_metrics(gen, ref, rate, decoders.classifier))
    return result


def summarise(rows: list[tuple[str, dict]], args, out: Path) -> None:
    metrics = [k for k in rows[0][1] if k not in NOT_METRICS]
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["checkpoint", *metrics])
        writer.writerows([[name, *(r.get(k, "") for k in metrics)] for name, r in rows])
    lines = [f"# {args.task}, guidance scale {args.guidance_scale:g}", ""]
    lines += [f"- {name}, gs{args.guidance_scale:g}: " + ", ".join(f"{k} {r[k]:.4g}" for k in metrics if k in r) for name, r in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    for k in metrics:
        plot_metric([n for n, _ in rows], [r.get(k, float("nan")) for _, r in rows], k, out / f"{k}.png")
    print("\n".join(lines[2:]))
    key = args.best_by if args.best_by in metrics else metrics[0]
    scored = [row for row in rows if np.isfinite(row[1].get(key, np.nan))]  # NaN: no beats in any clip, say
    if not scored:
        (out / "best.json").unlink(missing_ok=True)
        print(f"best by {key}: no checkpoint has a finite {key}; no best.json written")
        return
    best = pick_best(scored, key)
    (out / "best.json").write_text(json.dumps({"metric": key, "checkpoint": best[0], "value": best[1][key]}, indent=2))
    print(f"best by {key}: {best[0]} ({best[1][key]:.4g})")


def pick_best(rows: list[tuple[str, dict]], key: str) -> tuple[str, dict]:
    """The best row by ``key``: lowest for FIDs, FDs and KL, closest to the reference set's value for a diversity
    that has one (the field reads Div as "the nearer the real data's, the better"), else highest."""
    if f"{key}_reference" in rows[0][1]:
        return min(rows, key=lambda row: abs(row[1][key] - row[1][f"{key}_reference"]))
    return (min if key.startswith(LOWER_IS_BETTER) else max)(rows, key=lambda row: row[1][key])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mumo-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", required=True, help="run folders, HF folders, checkpoint folders or globs")
    p.add_argument("--task", default="music2motion", choices=sorted(TASKS))
    p.add_argument("--data", required=True, help="shard folder; its val split gives conditions and references")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--num-samples", type=int, default=300, help="val clips to condition on and compare with (>= 2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--guidance-scale", type=float, default=4.0)
    p.add_argument("--top-k", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="where checkpoints generate (default: cuda when available, else cpu); "
                   "decoding and metrics run on the CPU")
    p.add_argument("--codec", default=None, help="EnCodec folder (music decoding, music metrics, beat alignment)")
    p.add_argument("--motion-vqvae", default=None, help="motion VQ-VAE folder (motion metrics)")
    p.add_argument("--classifier", default=None,
                   help="audio-classification folder (model + feature extractor): music kl and fd_classifier")
    p.add_argument("--best-by", default="fid_k", help="metric that picks the best checkpoint (lowest FID/FD/KL, "
                   "diversity closest to the reference's, else highest)")
    p.add_argument("--out", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.num_samples < 2:
        raise SystemExit(f"--num-samples {args.num_samples}: FID/FD and diversity need 2 or more clips per set")
    out = Path(args.out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    decoders = Decoders(args.codec, args.motion_vqvae, args.classifier)
    rows, batches = [], None
    paths = find_checkpoints(args.checkpoints)
    names = checkpoint_names(paths)
    device = generation_device(args.device)
    settings = run_settings(args, device)
    cached = [cached_result(out / "results" / f"{name}.json", path, settings) for path, name in zip(paths, names)]
    for path, name, result in zip(paths, names, cached):
        result_file = out / "results" / f"{name}.json"
        if result is not None:  # resumable: finished checkpoints are kept
            rows.append((name, result))
            continue
        model = load_checkpoint(path).to(device)
        if batches is None:
            warn_decoder_mismatch(model.config, args, decoders)
        batches = batches or conditions(args, model.config)
        result = {"checkpoint": str(path.resolve()), "files": checkpoint_files(path), "settings": settings,
                  **evaluate_checkpoint(model, args, batches, decoders)}
        tmp = result_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(result_file)
        rows.append((name, result))
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items() if k not in NOT_METRICS),
              flush=True)
    if not rows:
        raise SystemExit(f"no checkpoints found in {args.checkpoints}")
    summarise(rows, args, out)


if __name__ == "__main__":
    main()
