"""Every ZeRO stage trains the same model: ZeRO-1/2/3 on 2 ranks == ZeRO-0 on 1 rank, same global batch.

Same samples: the loader gives each rank every world_size-th shard. With --no-shuffle, shards of exactly
2 samples and one sample kind (stage 1 keeps motion only), 1 rank at micro-batch 4 reads shards (0, 1) in
step 1, (2, 3) in step 2, ...; 2 ranks at micro-batch 2 read shard 0 on rank 0 and shard 1 on rank 1 in
step 1, and so on: the union of the rank batches is the 1-rank batch. All samples have the crop length (no
padding, so every sample weighs the same in the mean loss) and caption dropout is 0 (its RNG draws would
differ between one batch of 4 and two of 2). Then only the reduction order differs: fp32 tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mumo_ds.data.sample_codes import MOTION_TOKENIZER, MUSIC_CODEC
from mumo_ds.data.writer import ShardWriter
from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.modeling.text import load_tokenizer
from mumo_ds.training.engine import param_groups
from mumo_ds.training.stages import STAGES, is_trainable
from tests.test_training import BIN, REPO, free_port, losses

STEPS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero")
    rng = np.random.default_rng(0)
    with ShardWriter(root / "data", "train", samples_per_shard=2, codec=MUSIC_CODEC, motion_tokenizer=MOTION_TOKENIZER) as w:
        for i in range(8):
            motion = rng.integers(0, 2048, (4, 48)).astype(np.int16)
            w.write(f"s{i:02d}", motion=motion, meta={"captions": {"motion": f"dance number {i}"}})
    with ShardWriter(root / "data", "val", samples_per_shard=2, codec=MUSIC_CODEC, motion_tokenizer=MOTION_TOKENIZER) as w:
        for i in range(4):
            motion = rng.integers(0, 2048, (4, 48)).astype(np.int16)
            w.write(f"v{i:02d}", motion=motion, meta={"captions": {"motion": f"val dance {i}"}})
    torch.manual_seed(0)
    config = MuMoConfig.from_preset("tiny", caption_dropout=0.0, music_codec=MUSIC_CODEC["name"],
                                    motion_tokenizer=MOTION_TOKENIZER["name"])
    MuMoForConditionalGeneration(config).save_pretrained(root / "init")
    load_tokenizer(config.text_tokenizer).save_pretrained(root / "init")
    return root


def train(root, name: str, nproc: int, ds_config: str, *extra: str):
    runs = root / name
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", str(free_port()), "train.py",
           "--stage", "1", "--data", str(root / "data"), "--init-from", str(root / "init"), "--runs-root", str(runs),
           "--ds-config", f"ds_configs/{ds_config}", "--max-steps", str(STEPS), "--crop-frames", "48", "--no-shuffle",
           "--lr", "3e-3", "--lr-schedule", "cosine", "--warmup-steps", "2", "--val-every", "2", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return runs / "stage1"


@pytest.mark.distributed
def test_zero_1_2_3_on_two_ranks_match_zero_0_on_one(setup):
    # validation sees the same 4 val samples in every run: 1 batch of 4, 2 ranks x 1 batch of 2, 2 ranks x 2 of 1
    reference = train(setup, "ref", 1, "zero0.json", "--micro-batch-size", "4", "--val-batches", "1")
    runs = {
        "zero1": train(setup, "z1", 2, "zero1.json", "--micro-batch-size", "2", "--val-batches", "1"),
        "zero2 accum 2": train(setup, "z2", 2, "zero2.json", "--micro-batch-size", "1", "--grad-accum", "2",
                               "--val-batches", "2"),
        "zero3": train(setup, "z3", 2, "zero3.json", "--micro-batch-size", "2", "--val-batches", "1"),
    }
    val = lambda run: [json.loads(x).get("val_loss_motion") for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    ref_val = val(reference)
    assert ref_val[0] is None and ref_val[1] > 0 and ref_val[3] > 0, ref_val
    ref_losses = losses(reference)
    lrs = [json.loads(line)["lr"] for line in (reference / "logs" / "metrics.jsonl").read_text().splitlines()]
    # a 2-step warmup from 0 (only the first update at 0: DeepSpeed's schedule is started one step in), cosine decay
    assert lrs[:2] == pytest.approx([0.0, 1.5e-3]) and lrs[3] < lrs[2], lrs
    init = load_file(setup / "init" / "model.safetensors")
    ref_weights = load_file(reference / "export" / "model.safetensors")
    for name, run in runs.items():
        assert losses(run) == pytest.approx(ref_losses, rel=1e-5, abs=1e-6), name
        assert val(run) == pytest.approx(ref_val, rel=1e-5, abs=1e-6), name
        assert [json.loads(x)["lr"] for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()] == lrs, name
        weights = load_file(run / "export" / "model.safetensors")
        for key, value in weights.items():
            if is_trainable(STAGES[1], key):
                # Adam turns a gradient entry whose sign is rounding noise into a full +-lr step, so compare
                # the distance between runs with the distance travelled, not entry by entry.
                moved, apart = (ref_weights[key] - init[key]).norm(), (value - ref_weights[key]).norm()
                assert apart < 0.02 * moved, f"{name}: {key} is {apart / moved:.2e} of the update away from ZeRO-0"
            else:
                assert torch.equal(value, init[key]), f"{name}: frozen {key} changed"


def test_weight_decay_skips_norms_biases_and_embeddings(tiny_model):
    decay, no_decay = param_groups(tiny_model, 0.1)
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    for p in decay["params"]:
        assert p.ndim == 2 and not names[id(p)].startswith("embeddings."), names[id(p)]
    plain = {names[id(p)] for p in no_decay["params"]}
    assert any(n.startswith("embeddings.") for n in plain) and any(n.endswith(".bias") for n in plain)
    assert any("norm" in n for n in plain) and all(p.ndim == 1 or n.startswith("embeddings.") for n, p in
                                                     tiny_model.named_parameters() if n in plain)
    assert len(decay["params"]) + len(no_decay["params"]) == sum(1 for p in tiny_model.parameters() if p.requires_grad)
    captioner = MuMoForConditionalGeneration(MuMoConfig.from_preset("tiny", captioning=True))  # stage 3's T5 decoder
    _, no_decay = param_groups(captioner, 0.1)
    plain = {id(p) for p in no_decay["params"]}
    tables = [n for n, p in captioner.named_parameters() if "caption_decoder" in n and p.ndim == 2 and id(p) in plain]
    assert "caption_decoder.t5.shared.weight" in tables and any("relative_attention_bias" in n for n in tables), tables
