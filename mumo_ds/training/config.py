"""Run configuration: one dataclass, filled from defaults, an optional run file, then the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # where ds_configs/ lives


@dataclass
class TrainConfig:
    stage: int
    data: str = "data/sample"  # folder with manifest.json and the shards
    output_dir: str = ""  # default: {runs_root}/stage{N}
    runs_root: str = "runs"
    init_from: str = "auto"  # HF folder, "scratch" (fresh preset), or "auto": the previous stage's export if any
    preset: str = ""  # model size when starting from scratch ("": tiny); refused with any other start
    ds_config: str = ""  # default: the stage's config in ds_configs/
    max_steps: int = 100
    micro_batch_size: int = 0  # 0: take the DeepSpeed config's value
    grad_accum: int = 0  # 0: take the DeepSpeed config's value
    lr: float = 0.0  # 0: take the DeepSpeed config's value
    warmup_steps: int = -1  # -1: take the DeepSpeed config's value
    lr_schedule: str = ""  # "": the DeepSpeed config's scheduler; "linear": WarmupDecayLR; "cosine": WarmupCosineLR
    min_lr_ratio: float = 0.1  # cosine: final lr / peak lr
    crop_frames: int = 500
    seed: int = 0
    log_every: int = 1
    save_every: int = 0  # 0: only the final checkpoint
    keep_last: int = 3  # committed checkpoints kept (0: all)
    keep_every: int = 0  # also keep every checkpoint whose step is a multiple of this (0: none)
    resume: bool = True  # continue from the newest complete checkpoint in the run folder, if any
    overwrite: bool = False  # with --no-resume: delete the run folder's checkpoints and logs first
    shuffle: bool = True  # shuffle shard order and samples (--no-shuffle: read them in order)
    max_bad_steps: int = 5  # stop after this many micro-batches in a row with a non-finite loss
    val_every: int = 0  # validate on the val split every N steps (0: never)
    val_batches: int = 4  # batches per rank in one validation
    dry_run: bool = False  # build everything, run one step, print the plan and metrics; write nothing
    fixed_batch: bool = False  # debug: train on the first batch again and again (overfit check)
    verify_export: bool = False  # compare the export's logits with the engine's module after saving
    peak_tflops: float = 0.0  # per-device peak for MFU; 0: MFU not reported
    compile: str = "auto"  # torch.compile the model through DeepSpeed: on, off, or auto (on for CUDA devices)
    attn_implementation: str = "auto"  # attention kernel: sdpa, eager, or auto (eager for bf16/fp16 on CPU)
    activation_checkpointing: bool = False  # recompute each decoder layer in the backward: less memory, ~1/3 more compute
    local_rank: int = field(default=-1, repr=False)  # set by the deepspeed launcher

    def resolve(self, stage_ds_config: str, previous_export: str | None) -> "TrainConfig":
        """Fill the derived defaults (the stage's DeepSpeed config is found from any working directory)."""
        self.output_dir = self.output_dir or str(Path(self.runs_root) / f"stage{self.stage}")
        self.ds_config = self.ds_config or str(REPO_ROOT / stage_ds_config)
        if self.init_from == "auto":
            self.init_from = previous_export or "scratch"
        if self.preset and self.init_from != "scratch":
            raise ValueError(f"--preset {self.preset}: a size preset applies only to a fresh model, and this stage starts "
                             f"from {self.init_from}, whose size it keeps; add --init-from scratch to start fresh")
        self.preset = self.preset or "tiny"
        return self

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.output_dir) / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return Path(self.output_dir) / "export"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


HELP = {
    "stage": "training stage (see mumo_ds/training/stages.py): 1 motion-only, 2 joint, 3 captioning "
    "(required, on the command line or in the run file)",
    "data": "folder with manifest.json and {split}-NNNNNN.tar shards",
    "output_dir": "run folder (checkpoints/, export/, logs/); default RUNS_ROOT/stageN",
    "runs_root": "parent folder of the per-stage run folders",
    "init_from": "HF model folder to start from, 'scratch' for a fresh --preset model, or 'auto': "
    "the previous stage's export (stage 1: scratch)",
    "preset": "model size preset of a fresh model (--init-from scratch, or stage 1's auto start): tiny (the default) "
    "or small",
    "ds_config": "DeepSpeed JSON config; default: the stage's own in ds_configs/",
    "resume": "continue from the newest complete checkpoint in OUTPUT_DIR/checkpoints when there is one "
    "(the default); --no-resume starts over and refuses a folder with checkpoints unless --overwrite",
    "overwrite": "with --no-resume: delete OUTPUT_DIR/checkpoints and logs before starting over",
    "save_every": "save a checkpoint every N steps (0: only at the end); preemption signals also save",
    "keep_last": "keep the newest N committed checkpoints (0: keep all)",
    "keep_every": "also keep checkpoints whose step is a multiple of N (0: none)",
    "lr_schedule": "'' keeps the DeepSpeed config's scheduler; 'linear' = WarmupDecayLR, 'cosine' = WarmupCosineLR "
    "(warmup --warmup-steps, then down to --min-lr-ratio x lr at --max-steps)",
    "min_lr_ratio": "cosine schedule: the lr at --max-steps as a fraction of the peak lr",
    "shuffle": "shuffle shard order and samples; --no-shuffle reads them in manifest order (tests, debugging)",
    "grad_accum": "micro-batches per optimizer step (0: the DeepSpeed config's gradient_accumulation_steps)",
    "micro_batch_size": "samples per rank per micro-batch (0: the DeepSpeed config's train_micro_batch_size_per_gpu)",
    "lr": "peak learning rate (0: the DeepSpeed config's)",
    "warmup_steps": "learning-rate warmup steps (default: the DeepSpeed config's)",
    "max_bad_steps": "skip micro-batches whose loss is NaN/inf on any rank; stop with an error (saving nothing) "
    "after this many in a row",
    "val_every": "validate every N steps on the val split: loss per modality in the logs and the checkpoint's meta.json "
    "(0: never)",
    "val_batches": "batches per rank in one validation (the same batches every time)",
    "dry_run": "build data, model and engine (loading a checkpoint if one exists), run one step, print the plan "
    "and that step's metrics, and exit without writing checkpoints, logs or exports",
    "activation_checkpointing": "recompute each decoder layer's activations in the backward instead of keeping them "
    "(less activation memory for about a third more compute; same losses)",
    "compile": "torch.compile the model (engine.compile()): 'on', 'off', or 'auto' = on for CUDA devices. On CPU it "
    "speeds bench/train_throughput.py's bf16 step up 2-4%% (fp32: not at all) but compiles for a minute or more "
    "per batch shape",
    "attn_implementation": "attention kernel (HF's attn_implementation): 'sdpa', 'eager' (matmuls and a softmax; "
    "keeps the attention probabilities for backward), or 'auto' = eager when training in bf16/fp16 on CPU, where "
    "it is faster than torch's CPU flash kernel, sdpa otherwise",
    "config": "run file (JSON or YAML) with any of these options; the command line wins",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a MuMo stage with DeepSpeed. Launch with `deepspeed --num_gpus N train.py --stage 1` "
        "or `torchrun --nproc_per_node N train.py --stage 1`.",
    )
    parser.add_argument("--config", default=None, help=HELP["config"])
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        names = [flag, "--local_rank"] if f.name == "local_rank" else [flag]
        text = HELP.get(f.name, f.name.replace("_", " "))
        # parser defaults stay None ("not given", so a run file can set the option); the real default is shown
        shown = f.default not in (dataclasses.MISSING, "", -1) and f.name != "local_rank"  # '' / -1: the text says
        kwargs = {"help": f"{text} (default: {f.default!r})" if shown else text}
        if _kind(f) is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, default=None, **kwargs)
        else:
            parser.add_argument(*names, type=_kind(f), default=None, **kwargs)
    return parser


def _kind(f: dataclasses.Field) -> type:
    """The Python type of a TrainConfig field (annotations are strings under ``from __future__ import annotations``)."""
    return {"int": int, "float": float, "str": str, "bool": bool}[f.type if isinstance(f.type, str) else f.type.__name__]


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults < run file (--config) < command line."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    values: dict = {}
    run_file = args.pop("config")
    if run_file:
        values.update(load_run_file(run_file))
    values.update({k: v for k, v in args.items() if v is not None})
    if "stage" not in values:
        parser.error("--stage is required (on the command line or as 'stage:' in the --config run file)")
    if values.get("log_every", 1) < 1:
        parser.error(f"--log-every {values['log_every']}: must be >= 1")
    if values.get("overwrite") and values.get("resume", True):
        parser.error("--overwrite deletes a run folder's checkpoints only with --no-resume: add --no-resume to start "
                     "over, or drop --overwrite to resume")
    return TrainConfig(**values)


def load_run_file(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data or {}, dict):
        raise ValueError(f"{path}: a run file is a mapping of option: value, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in (data or {}).items()}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {unknown}; allowed: {sorted(fields)}")
    return {k: _run_file_value(path, k, v, _kind(fields[k])) for k, v in data.items()}


def _run_file_value(path: str, key: str, value, kind: type):
    """A run-file value as the option's type; numbers written as strings are read as numbers (YAML 1.1 reads
    ``3e-4`` as a string: it wants ``3.0e-4``). Anything else is an error naming the file, the key and the type."""
    if isinstance(value, bool) == (kind is bool):  # booleans for switches only (a bool is also an int)
        if isinstance(value, kind):
            return value
        if kind is float and isinstance(value, int):
            return float(value)
        if kind in (int, float) and isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
    raise ValueError(f"{path}: {key}: {value!r} is not {'an' if kind is int else 'a'} {kind.__name__}; "
                     f"write it as {'true or false' if kind is bool else f'a {kind.__name__} value'}")
