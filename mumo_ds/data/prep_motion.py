"""Motion side of data prep: load and check features, and the pluggable motion tokenizers.

A motion tokenizer is any object with::

    name: str                                   # recorded in manifest.json
    info: dict                                  # {"name", "frame_rate", "num_codebooks", "codebook_size", ...}
    encode(feats)  # float32 [T, 263] normalised, at 50 frames/s -> int [num_codebooks, T]
    resample(feats, src_fps, dst_fps)           # optional: [T, 263] -> [T', 263]; default below

Two are provided: ``LSHMotionTokenizer`` (the weightless "sample-lsh-v2" of the sample
data, see ``sample_codes``) and ``VQVAEMotionTokenizer`` (the motion VQ-VAE, imported lazily from
``mumo_ds.tokenizers.motion_vqvae`` when first used). Tokenizers are pickled to worker
processes, so heavy models must load on first use, not in ``__init__``.

The default resampler is ``mumo_ds.tokenizers.motion_features.resample_features``
(positions and velocities handled per notes/motion_features.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mumo_ds.tokenizers.motion_features import load_stats, resample_features  # noqa: F401  (load_stats: for the prep CLIs)
from mumo_ds.tokenizers.motion_layout import FEATURE_DIM

from .sample_codes import MOTION_TOKENIZER, lsh_codes


class InputError(ValueError):
    """A bad input record: ``reason`` labels it in rejects.jsonl, ``path`` names the file (if any)."""

    def __init__(self, reason: str, path: str | os.PathLike | None, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.reason = reason
        self.path = None if path is None else str(path)


def load_motion(path: str | os.PathLike, feature_dim: int = FEATURE_DIM) -> np.ndarray:
    """A features ``.npy`` -> float32 [T >= 2, feature_dim]; raises InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("missing_file", path, "motion features file not found; fix the path in the input manifest")
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exn:
        raise InputError("unreadable_motion", path, f"cannot read a .npy array ({exn}); re-export the features") from exn
    if feats.ndim != 2 or feats.shape[1] != feature_dim:
        raise InputError(
            "bad_feature_width", path,
            f"motion features have shape {list(feats.shape)}, expected [T, {feature_dim}] (HumanML3D features, "
            "frames first); transpose a [D, T] array or re-extract the features",
        )
    if feats.dtype.kind not in "fiu":
        raise InputError("bad_motion_values", path, f"dtype {feats.dtype} is not numeric; save float32 features")
    bad = ~np.isfinite(feats)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise InputError(
            "bad_motion_values", path,
            f"{int(bad.sum())} NaN/inf value(s), first at frame {rows[0]}, channel {cols[0]}; fix or drop this clip",
        )
    if feats.shape[0] < 2:
        raise InputError("too_short", path, f"{feats.shape[0]} frame(s); at least 2 are needed")
    return feats.astype(np.float32)


def default_resample(feats: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """[T, 263] at src_fps -> [T', 263] at dst_fps with the motion-aware resampler."""
    return resample_features(feats, src_fps, dst_fps)


class LSHMotionTokenizer:
    """The "sample-lsh-v2" tokenizer of ``data_prep.make_sample_shards`` (seeded sign-bit projections; no weights,
    no decoder). Prep with it gives the sample shards' codes: use it for tests and smoke runs, not for training."""

    name = MOTION_TOKENIZER["name"]
    info = dict(MOTION_TOKENIZER)

    def encode(self, feats: np.ndarray) -> np.ndarray:
        return lsh_codes(feats)  # [T, 263] -> int16 [4, T]


def vqvae_codes_name(model_dir: str | os.PathLike) -> str:
    """The name shards (and the models trained on them) give a motion VQ-VAE's codes: after its folder."""
    return f"motion-vqvae:{Path(model_dir).name}"


def saved_feature_stats(model_dir: str | os.PathLike) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The feature Mean/Std a motion VQ-VAE folder was saved with (its ``feature_mean``/``feature_std`` buffers,
    read without building the model), or (None, None) for a model saved without statistics."""
    from safetensors import safe_open

    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no motion VQ-VAE weights there; pass the model/ folder train_motion_vqvae wrote")
    with safe_open(str(path), "np") as f:
        mean, std = f.get_tensor("feature_mean"), f.get_tensor("feature_std")
    if (mean == 0).all() and (std == 1).all():  # the buffers' initial values: set_feature_stats never ran
        return None, None
    return mean.astype(np.float32), std.astype(np.float32)


class VQVAEMotionTokenizer:
    """The motion VQ-VAE from ``MotionVQVAE.from_pretrained(model_dir)``, loaded on first ``encode``."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", name: str | None = None):
        self.model_dir = str(model_dir)
        self.device = device
        self.name = name or vqvae_codes_name(model_dir)
        self.mean, self.std = saved_feature_stats(model_dir)  # what it was trained with (None, None if not saved)
        config = json.loads((Path(model_dir) / "config.json").read_text())  # its code format, without the model
        self.info = {"name": self.name, "frame_rate": config.get("frame_rate", 50),
                     "num_codebooks": config.get("num_quantizers", 4), "codebook_size": config.get("codebook_size", 2048),
                     "path": self.model_dir}
        self._model = None

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_model": None}

    def encode(self, feats: np.ndarray) -> np.ndarray:
        import torch

        if self._model is None:
            from mumo_ds.tokenizers.motion_vqvae import MotionVQVAE

            self._model = MotionVQVAE.from_pretrained(self.model_dir).to(self.device).eval()
        with torch.inference_mode():
            codes = self._model.encode(torch.from_numpy(feats)[None].to(self.device))  # [1, T, 263] -> [1, 4, T]
        return codes[0].cpu().numpy()
