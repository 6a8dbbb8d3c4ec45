"""Training: the stage table, a stage-1 optimizer step, and real 2-rank DeepSpeed runs of stage 1 -> 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mumo_ds.data.sample import build_sample_shards
from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.training.stages import STAGES, apply_stage, is_trainable
from tests.conftest import random_codes

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_stage_table_trainable_sets():
    s1, s2 = STAGES[1], STAGES[2]
    assert is_trainable(s1, "embeddings.motion.table.weight")
    assert is_trainable(s1, "layers.3.ffn.experts.motion.fc1.weight")
    assert is_trainable(s1, "heads.motion.proj.weight")
    for name in ("embeddings.music.table.weight", "layers.0.ffn.experts.music.fc1.weight",
                 "layers.0.self_attn.q_proj.weight", "norm.weight", "text_projection.weight"):
        assert not is_trainable(s1, name)
    assert is_trainable(s2, "layers.0.self_attn.q_proj.weight") and is_trainable(s2, "text_projection.weight")
    assert not is_trainable(s2, "text_encoder.encoder.block.0.layer.0.SelfAttention.q.weight")


def test_stage1_step_changes_exactly_the_trainable_parameters(tiny_config, captions):
    torch.manual_seed(0)
    model = MuMoForConditionalGeneration(tiny_config).train()
    model.init_motion_from_music()
    apply_stage(model, STAGES[1])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.1)
    out = model(motion_codes=random_codes(2, 12, seed=1), **{k: v for k, v in captions.items() if "motion" in k})
    out.loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed == trainable
    assert trainable == {n for n in before if is_trainable(STAGES[1], n)}
    assert len(trainable) == 2 + 4 * tiny_config.num_hidden_layers  # embedding, head, 4 tensors per expert



def test_an_export_carries_the_starting_folders_codec(tiny_model, tmp_path):
    from mumo_ds.modeling.text import load_tokenizer
    from mumo_ds.training.export import export_hf

    start = tmp_path / "init"
    (start / "codec").mkdir(parents=True)
    (start / "codec" / "config.json").write_text('{"model_type": "encodec"}')
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    out = export_hf(state, tiny_model.config, load_tokenizer("byt5"), tmp_path / "export", {"stage": 1}, assets_from=start)
    assert (out / "codec" / "config.json").read_text() == '{"model_type": "encodec"}'
    again = export_hf(state, tiny_model.config, load_tokenizer("byt5"), out, {"stage": 2}, assets_from=None)  # scratch
    assert not (again / "codec").exists() and json.loads((again / "mumo_training.json").read_text()) == {"stage": 2}
    out.rename(tmp_path / "export.old")  # a crash between export_hf's two renames: no export/, the good one is .old
    with pytest.raises(RuntimeError, match="does not match the model"):  # and this export fails before its renames
        export_hf({}, tiny_model.config, load_tokenizer("byt5"), out, {"stage": 3})
    assert json.loads((out / "mumo_training.json").read_text()) == {"stage": 2}  # the good export is back in place


def test_a_stage_starts_from_a_bf16_folder_in_fp32(tiny_model, tmp_path):
    """from_pretrained keeps a folder's dtype; the optimizer must update fp32 weights (DeepSpeed casts for bf16)."""
    from mumo_ds.modeling.text import load_tokenizer
    from mumo_ds.training.config import TrainConfig
    from mumo_ds.training.trainer import load_start

    tiny_model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    load_tokenizer("byt5").save_pretrained(tmp_path / "bf16")
    model, _, _ = load_start(TrainConfig(stage=2, init_from=str(tmp_path / "bf16")), None, STAGES[2])
    assert {p.dtype for p in model.parameters()} == {torch.float32}

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stage(stage: int, data: Path, runs: Path, launcher: str, ds_config: str, *extra: str, steps: int = 8) -> Path:
    args = [
        "train.py", "--stage", str(stage), "--data", str(data), "--runs-root", str(runs),
        "--ds-config", f"ds_configs/{ds_config}", "--max-steps", str(steps), "--crop-frames", "48",
        "--micro-batch-size", "2", "--lr", "3e-3", "--warmup-steps", "1", *extra,
    ]
    if launcher == "deepspeed":
        cmd = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), *args]
    else:
        cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return runs / f"stage{stage}"


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    build_sample_shards(out)
    return out


def assert_frozen_kept_and_trainable_moved(stage1: Path) -> None:
    """Stage 1's export: frozen weights bit-identical to the starting model (seed 0, scratch), every trainable one moved."""
    torch.manual_seed(0)
    start = MuMoForConditionalGeneration(MuMoConfig.from_pretrained(stage1 / "export"))
    start.init_motion_from_music()
    exported = load_file(stage1 / "export" / "model.safetensors")
    for name, p in start.named_parameters():
        if is_trainable(STAGES[1], name):
            assert not torch.equal(exported[name], p), f"{name} did not train"
        else:
            assert torch.equal(exported[name], p), f"frozen {name} changed"


@pytest.mark.distributed
def test_bf16_stage1_export_keeps_the_frozen_weights_in_fp32(sample_data, tmp_path):
    """DeepSpeed bf16 casts the whole module, frozen weights included; the export puts their fp32 values back."""
    stage1 = run_stage(1, sample_data, tmp_path / "runs", "deepspeed", "zero2_bf16.json", "--fixed-batch", steps=4)
    assert_frozen_kept_and_trainable_moved(stage1)
    # mumo-eval scores the run's last DeepSpeed tag as the export of the same step: the same weights, bit for bit
    from mumo_ds.eval.evaluate import load_checkpoint

    tag = load_checkpoint(stage1 / "checkpoints" / "step00000004").state_dict()
    exported = MuMoForConditionalGeneration.from_pretrained(stage1 / "export").state_dict()
    assert tag.keys() == exported.keys()
    assert [name for name in tag if not torch.equal(tag[name], exported[name])] == []


@pytest.mark.distributed
@pytest.mark.parametrize(
    "ds_config,launcher",
    [("zero0.json", "torchrun"), ("zero1.json", "deepspeed"), ("zero2.json", "deepspeed"), ("zero3.json", "torchrun")],
)
def test_two_rank_stage1_then_stage2(sample_data, tmp_path, ds_config, launcher):
    runs = tmp_path / "runs"
    stage1 = run_stage(1, sample_data, runs, launcher, ds_config, "--fixed-batch", "--verify-export")
    l1 = losses(stage1)
    assert len(l1) == 8 and l1[-1] < l1[0] - 0.5, l1  # overfits its one batch
    norms = [json.loads(line)["grad_norm"] for line in (stage1 / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert all(n > 0 for n in norms), norms  # ZeRO-0 too, where DeepSpeed reports none

    assert_frozen_kept_and_trainable_moved(stage1)

    # the export reproduces the engine's logits exactly, and stage 2 starts from it
    assert json.loads((stage1 / "export_check.json").read_text())["max_abs_logit_diff"] == {"motion": 0.0}
    stage2 = run_stage(2, sample_data, runs, launcher, ds_config, "--fixed-batch", "--verify-export")
    assert json.loads((stage2 / "train_config.json").read_text())["init_from"] == str(runs / "stage1" / "export")
    l2 = losses(stage2)
    assert l2[-1] < l2[0] - 0.5, l2
    diffs = json.loads((stage2 / "export_check.json").read_text())["max_abs_logit_diff"]
    assert diffs and all(v == 0.0 for v in diffs.values()), diffs
    model = MuMoForConditionalGeneration.from_pretrained(stage2 / "export").eval()
    codes = model.generate(6, {"music": random_codes(1, 2, seed=0), "motion": None}, seed=0)
    assert codes["music"].shape == (1, 4, 6) and codes["motion"].shape == (1, 4, 6)
    assert torch.equal(codes["music"][..., :2], random_codes(1, 2, seed=0))



def test_a_sample_without_a_caption_trains_on_the_null_condition_and_stage_3_keeps_it_as_a_target():
    from mumo_ds.modeling.text import load_tokenizer
    from mumo_ds.training.trainer import model_inputs

    batch = {"music_codes": random_codes(2, 5, seed=0), "music_mask": torch.ones(2, 5, dtype=torch.bool),
             "music_captions": ["funk", ""]}
    conditions = model_inputs(batch, load_tokenizer("byt5"), 32, torch.device("cpu"))
    assert conditions["music_caption_mask"].sum(dim=1).tolist() == [5, 0]  # "" is "no caption", not "</s>"
    targets = model_inputs(batch, load_tokenizer("byt5"), 32, torch.device("cpu"), targets=True)
    assert targets["music_caption_mask"].sum(dim=1).tolist() == [5, 1]
