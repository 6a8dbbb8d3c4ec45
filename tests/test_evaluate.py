"""mumo-eval over checkpoints, tables, plots, best pick and resume; rendering and loss plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mumo_ds.data.sample import build_sample_shards
from mumo_ds.eval.evaluate import find_checkpoints, main
from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration
from mumo_ds.modeling.text import load_tokenizer
from mumo_ds.tokenizers.motion_vqvae import MotionVQVAE, MotionVQVAEConfig
from mumo_ds.viz.plots import plot_training_log
from mumo_ds.viz.render import render_motion
from tests.test_cli import tiny_codec


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    build_sample_shards(root / "data")
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    for seed in (1, 2):
        torch.manual_seed(seed)
        config = MuMoConfig.from_preset("tiny", music_codec=manifest["codec"]["name"],
                                        motion_tokenizer=manifest["motion_tokenizer"]["name"])
        MuMoForConditionalGeneration(config).save_pretrained(root / "run" / f"epoch{seed:02d}")
        load_tokenizer("byt5").save_pretrained(root / "run" / f"epoch{seed:02d}")
    torch.manual_seed(0)
    MotionVQVAE(MotionVQVAEConfig.from_preset("tiny")).save_pretrained(root / "vqvae")
    tiny_codec(root / "codec")
    return root


def test_mumo_eval_table_plots_best_and_resume(setup, tmp_path):
    args = ["--checkpoints", str(setup / "run" / "epoch*"), "--task", "music2motion", "--data", str(setup / "data"),
            "--seconds", "0.6", "--num-samples", "4", "--batch-size", "2", "--motion-vqvae", str(setup / "vqvae"),
            "--codec", str(setup / "codec"), "--out", str(tmp_path)]
    main(args)
    rows = (tmp_path / "table.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["checkpoint", "fid_k", "div_k", "div_k_reference", "fid_m"]
    assert [r.split(",")[0] for r in rows[1:]] == ["epoch01", "epoch02"]
    result = json.loads((tmp_path / "results" / "epoch01.json").read_text())
    assert result["num_samples"] == 4 and result["fid_k"] >= 0 and 0 <= result["beat_align"] <= 1
    assert (tmp_path / "fid_k.png").stat().st_size > 1000
    assert "epoch01, gs4: fid_k" in (tmp_path / "table.md").read_text()
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["metric"] == "fid_k" and best["value"] == min(
        json.loads((tmp_path / "results" / f"{n}.json").read_text())["fid_k"] for n in ("epoch01", "epoch02"))
    # finished checkpoints are not recomputed
    marked = {**result, "fid_k": -1.0}
    (tmp_path / "results" / "epoch01.json").write_text(json.dumps(marked))
    main(args)
    assert json.loads((tmp_path / "best.json").read_text()) == {"metric": "fid_k", "checkpoint": "epoch01", "value": -1.0}


def test_text2music_reports_fd(setup, tmp_path):
    main(["--checkpoints", str(setup / "run" / "epoch01"), "--task", "text2music", "--data", str(setup / "data"),
          "--seconds", "0.4", "--num-samples", "2", "--batch-size", "2", "--codec", str(setup / "codec"),
          "--best-by", "fd_encodec", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "results" / "epoch01.json").read_text())["fd_encodec"] >= 0


def test_find_checkpoints_expands_runs(tmp_path):
    run = tmp_path / "run"
    for tag in ("step00000002", "step00000004"):
        (run / "checkpoints" / tag).mkdir(parents=True)
        (run / "checkpoints" / tag / "mp_rank_00_model_states.pt").write_bytes(b"")
    (run / "checkpoints" / "step00000006.tmp").mkdir()  # incomplete: no model states
    (run / "export").mkdir()
    (run / "export" / "config.json").write_text("{}")
    assert [p.name for p in find_checkpoints([str(run)])] == ["step00000002", "step00000004", "export"]
    with pytest.raises(FileNotFoundError, match="neither a run"):
        find_checkpoints([str(tmp_path / "nothing")])


def test_render_and_loss_plot(tmp_path):
    t = np.linspace(0, 1, 20)
    clip = np.zeros((20, 22, 3))
    clip[:, :, 1] = np.linspace(0, 1.6, 22)[None, :]
    clip[:, 20, 0] = np.sin(2 * np.pi * t) * 0.5
    gif = render_motion([clip, clip[::-1]], tmp_path / "grid.gif", fps=20, titles=["generated", "reference"])
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames == 20 and image.size == (512, 256)
    log = tmp_path / "metrics.jsonl"
    log.write_text("\n".join(json.dumps({"step": s, "loss": 8 - s, "val_loss_music": 9 - s}) for s in range(1, 6)))
    assert plot_training_log(log, tmp_path / "loss.png").stat().st_size > 1000
