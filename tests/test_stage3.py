"""Stage 3 (captioning) under real 2-rank DeepSpeed: only the caption modules train."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mumo_ds.data.sample import build_sample_shards
from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.modeling.text import load_tokenizer
from mumo_ds.training.stages import STAGES, is_trainable
from tests.test_training import losses, run_stage


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """Sample shards and a stage-2-like export to start stage 3 from."""
    root = tmp_path_factory.mktemp("stage3")
    build_sample_shards(root / "data")
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    torch.manual_seed(3)
    config = MuMoConfig.from_preset("tiny", music_codec=manifest["codec"]["name"],
                                    motion_tokenizer=manifest["motion_tokenizer"]["name"])
    MuMoForConditionalGeneration(config).save_pretrained(root / "stage2")
    load_tokenizer("byt5").save_pretrained(root / "stage2")
    return root


@pytest.mark.distributed
@pytest.mark.parametrize("ds_config", ["zero2.json", "zero3.json"])
def test_stage3_trains_only_the_caption_modules(start, tmp_path, ds_config):
    run = run_stage(3, start / "data", tmp_path, "torchrun", ds_config, "--init-from", str(start / "stage2"),
                    "--fixed-batch", "--val-every", "4", "--val-batches", "1", "--verify-export", steps=4)
    logged = losses(run)
    assert logged[-1] < logged[0], logged
    last = json.loads((run / "logs" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss_music_caption", "loss_motion_caption"} & set(last), last
    assert last["val_loss"] > 0 and ("val_bleu4" in last) == (ds_config == "zero2.json")  # greedy captions need ZeRO <= 2
    assert 0 <= last.get("val_rouge_l", 0) <= 1
    check = json.loads((run / "export_check.json").read_text())["max_abs_logit_diff"]
    assert check["caption_loss"] == 0.0, check  # the exported caption decoder is the trained one
    before = load_file(start / "stage2" / "model.safetensors")
    after = load_file(run / "export" / "model.safetensors")
    exported = MuMoForConditionalGeneration.from_pretrained(run / "export")
    assert exported.config.captioning
    trained = [n for n, _ in exported.named_parameters() if is_trainable(STAGES[3], n)]
    assert trained and all("caption" in n for n in trained)
    for name, value in before.items():  # every stage-2 weight is bit-identical after stage 3
        assert torch.equal(after[name], value), f"frozen {name} changed"
    start_model = MuMoForConditionalGeneration.from_pretrained(start / "stage2", captioning=True)
    start_model.init_captioning()
    moved = [n for n in trained if n.startswith("layers.") and not torch.equal(after[n], dict(start_model.named_parameters())[n])]
    assert moved, "caption self-attention did not train"
