"""Shared fixtures: tiny random models and caption tokens, built on the fly (no hub)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("DS_ACCELERATOR", "cpu")
warnings.filterwarnings("ignore", message=r".*is deprecated\. Please use `torch\.distributed\..*_single`")

from mumo_ds.modeling import MuMoConfig, MuMoForConditionalGeneration  # noqa: E402
from mumo_ds.modeling.text import load_tokenizer, tokenize_captions  # noqa: E402


@pytest.fixture
def tiny_config() -> MuMoConfig:
    return MuMoConfig.from_preset("tiny")


@pytest.fixture
def tiny_model(tiny_config) -> MuMoForConditionalGeneration:
    torch.manual_seed(0)
    return MuMoForConditionalGeneration(tiny_config).eval()


@pytest.fixture
def captions():
    ids, mask = tokenize_captions(load_tokenizer("byt5"), ["funky waacking", "slow jazz"], 32)
    return {"music_caption_ids": ids, "music_caption_mask": mask, "motion_caption_ids": ids.flip(0), "motion_caption_mask": mask.flip(0)}


def random_codes(batch: int, frames: int, seed: int, num_codebooks: int = 4, codebook_size: int = 2048):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, codebook_size, (batch, num_codebooks, frames), generator=g)


def save_tiny_vqvae(folder) -> None:
    """A tiny random motion VQ-VAE saved with the bundled Mean/Std, as data_prep.train_motion_vqvae saves one."""
    from pathlib import Path

    import numpy as np

    from mumo_ds.tokenizers.motion_vqvae import MotionVQVAE, MotionVQVAEConfig

    stats = Path(__file__).resolve().parents[1] / "data_prep" / "sample_data" / "motion"
    model = MotionVQVAE(MotionVQVAEConfig.from_preset("tiny"))
    model.set_feature_stats(*(torch.from_numpy(np.load(stats / f"{name}.npy")) for name in ("Mean", "Std")))
    model.save_pretrained(folder)
