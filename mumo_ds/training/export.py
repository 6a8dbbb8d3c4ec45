"""Consolidating a DeepSpeed checkpoint into an HF folder, atomically.

The HF folder is the boundary between stages: the next stage starts with
``from_pretrained`` on it and a fresh engine, because switching frozen sets
through ``load_checkpoint(load_module_only=True)`` breaks under ZeRO-2/3
(notes/deepspeed_cpu.md P7).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from ..modeling import MuMoConfig, MuMoForConditionalGeneration


def consolidated_state_dict(checkpoint_dir: Path, tag: str, zero_stage: int) -> dict[str, torch.Tensor]:
    """Full fp32 weights of a saved checkpoint, frozen parameters included.

    ZeRO-2/3: ``zero_to_fp32`` (fp32 master weights + frozen fragments). ZeRO-0/1: the rank-0 module file,
    because zero_to_fp32 drops frozen parameters there (P8); under ZeRO-1 the trainable ones are then
    replaced by the fp32 master weights.
    """
    if zero_stage >= 2:
        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
    module_file = checkpoint_dir / tag / "mp_rank_00_model_states.pt"
    # Our own run directory's DeepSpeed file: DeepSpeed itself loads these with weights_only=False.
    state = torch.load(module_file, map_location="cpu", weights_only=False)["module"]
    state = {k: v.float() for k, v in state.items()}
    if zero_stage == 1:
        state.update(get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag))
    return state


def frozen_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU fp32 copies of the frozen parameters, under every state-dict name they have (tied names included).

    Taken before DeepSpeed casts the module to bf16/fp16 (``"bf16": {"enabled": true}``): the checkpoint then holds
    the frozen weights rounded to that dtype (trainable ones have fp32 master weights), and the export puts these
    copies back over them, so a stage leaves every weight it does not train bit-identical."""
    copies = {id(p): p.detach().to("cpu", torch.float32, copy=True) for p in model.parameters() if not p.requires_grad}
    return {name: copies[id(t)] for name, t in model.state_dict(keep_vars=True).items() if id(t) in copies}


EXPORT_META = "mumo_training.json"  # what a stage's export records about the run that wrote it


def export_meta(folder: str | Path) -> dict:
    """The :data:`EXPORT_META` record of a model folder: {"stage", "step", "checkpoint", "exported_at"}; {} for a
    folder no stage exported (a converted MusicGen, a hub id, "scratch")."""
    path = Path(folder, EXPORT_META)
    return json.loads(path.read_text()) if path.is_file() else {}


ASSET_DIRS = ("codec",)  # folders a model folder carries besides its weights (convert_musicgen's EnCodec)


def export_hf(
    state: dict[str, torch.Tensor], config: MuMoConfig, tokenizer, out_dir: Path, metadata: dict,
    assets_from: str | Path | None = None,
) -> Path:
    """Write ``out_dir`` as an HF folder (config, safetensors, tokenizer, mumo_training.json), with the
    :data:`ASSET_DIRS` of the stage's starting folder ``assets_from`` (so ``mumo-generate`` still finds ``codec/``).

    Written next to the target and renamed into place, so a crash never leaves a partial export
    where a good one was.
    """
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    old = out_dir.with_name(out_dir.name + ".old")
    if old.is_dir() and not out_dir.exists():  # a crash between the two renames below, last time: put it back
        old.rename(out_dir)
    model = MuMoForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / EXPORT_META).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    for name in ASSET_DIRS:
        if assets_from is not None and (Path(assets_from) / name).is_dir():
            shutil.copytree(Path(assets_from) / name, tmp / name)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir
