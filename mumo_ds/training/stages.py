"""The training stages, as data: what each stage reads, trains, and starts from.

A reader who wants to know what stage 2 trains reads this table and nothing else.
A parameter trains in a stage when its name matches one of ``trainable`` and none
of ``frozen`` (``fnmatch`` patterns over ``model.named_parameters()`` names).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class Stage:
    number: int
    name: str
    streams: tuple[str, ...]  # data streams the loader yields (others are dropped)
    mix: dict[str, float]  # batch kinds and their weights: "paired", "music", "motion" (see data/mixing.py)
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    starts_from: int | None  # the stage whose export this one loads by default (None: --init-from or a preset)
    prepare: str | None  # model method run once on the starting weights
    ds_config: str  # default DeepSpeed config, relative to the repo root
    loss_weights: dict[str, float]  # per-modality loss weights, overriding the model config's while this stage trains
    task: str = "lm"  # the model's forward task: "lm" (codes) or "caption" (text from codes)
    model_overrides: dict = field(default_factory=dict)  # config changes when loading the start, e.g. captioning


STAGES: dict[int, Stage] = {
    1: Stage(
        number=1,
        name="motion",
        streams=("motion",),
        mix={"motion": 1.0},
        trainable=("embeddings.motion.*", "layers.*.ffn.experts.motion.*", "heads.motion.*"),
        frozen=(),
        starts_from=None,
        prepare="init_motion_from_music",
        ds_config="ds_configs/zero2.json",
        loss_weights={"motion": 1.0},  # motion-only batches; music keeps the model's weight
    ),
    2: Stage(
        number=2,
        name="joint",
        streams=("music", "motion"),
        mix={"paired": 0.8, "music": 0.1, "motion": 0.1},
        trainable=("*",),
        frozen=("text_encoder.*",),
        starts_from=1,
        prepare=None,
        ds_config="ds_configs/zero2.json",
        loss_weights={"music": 0.85, "motion": 0.15},
    ),
    3: Stage(
        number=3,
        name="caption",
        streams=("music", "motion"),
        mix={"paired": 0.5, "music": 0.25, "motion": 0.25},
        trainable=("layers.*.caption_self_attn.*", "caption_decoder.*"),
        frozen=("caption_decoder.t5.encoder.*",),  # the T5 encoder has no layers: MuMo encodes
        starts_from=2,
        prepare="init_captioning",
        ds_config="ds_configs/zero2.json",
        loss_weights={},  # the caption loss is the mean over the streams present
        task="caption",
        model_overrides={"captioning": True},
    ),
}


def get_stage(number: int) -> Stage:
    if number not in STAGES:
        raise ValueError(f"--stage {number}: no such stage; defined stages are {sorted(STAGES)} (mumo_ds/training/stages.py)")
    return STAGES[number]


def loss_weights(stage: Stage, model_weights: dict[str, float]) -> dict[str, float]:
    """The model config's loss weights with the stage's on top; refuses unknown or non-positive entries."""
    unknown = sorted(set(stage.loss_weights) - set(model_weights))
    bad = {m: w for m, w in stage.loss_weights.items() if not w > 0}
    if unknown or bad:
        raise ValueError(f"stage {stage.number} loss_weights {stage.loss_weights}: unknown modalities {unknown} or "
                         f"weights <= 0 {bad} (mumo_ds/training/stages.py; the model has {sorted(model_weights)})")
    return {**model_weights, **stage.loss_weights}


def is_trainable(stage: Stage, name: str) -> bool:
    match = lambda patterns: any(fnmatch.fnmatchcase(name, p) for p in patterns)  # noqa: E731
    return match(stage.trainable) and not match(stage.frozen)


def parameter_group(name: str) -> str:
    """A readable group for counting: ``heads.motion``, ``layers.*.ffn.experts.music``, ``layers.*.self_attn``."""
    parts = name.split(".")
    if parts[0] == "layers":
        return ".".join(["layers", "*", *(parts[2:-2] or parts[2:3])])
    if parts[0] in ("embeddings", "heads"):
        return ".".join(parts[:2])
    return parts[0]


def apply_stage(model: nn.Module, stage: Stage) -> dict[str, int]:
    """Set ``requires_grad`` for ``stage``; return trainable parameter counts per top-level group."""
    counts: dict[str, int] = {}
    for name, param in model.named_parameters():
        param.requires_grad_(is_trainable(stage, name))
        if param.requires_grad:
            group = parameter_group(name)
            counts[group] = counts.get(group, 0) + param.numel()
    if not counts:
        raise ValueError(f"stage {stage.number} ({stage.name}) trains no parameter: check its patterns {stage.trainable}")
    return counts
