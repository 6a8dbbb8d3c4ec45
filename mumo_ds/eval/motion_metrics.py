"""Motion quality metrics: FID_k, FID_m, Div_k, Div_m and the Beat Align Score.

FID_k / FID_m: Fréchet distance between the kinetic / geometric ("manual") features of generated
and reference clips, with the AIST++ / Bailando feature definitions (``motion_features``);
Div_k / Div_m: mean pairwise distance of the generated clips' features.
As in the AIST++ / Bailando evaluation, features of both sets are z-scored with the mean and
standard deviation of the reference (ground-truth) features first.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import argrelextrema

from .frechet import diversity, frechet_distance
from .motion_features import geometric_features, kinetic_features


def _zscore(generated: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)  # a feature constant over the references is only centred
    return (generated - mean) / std, (reference - mean) / std


def motion_metrics(generated: list[np.ndarray], reference: list[np.ndarray], fps: float) -> dict[str, float]:
    """Metrics of generated joint clips against reference clips (each [T, 22, 3]; >= 2 clips per set)."""
    if len(generated) < 2 or len(reference) < 2:
        raise ValueError(f"need >= 2 clips per set, got {len(generated)} generated and {len(reference)} reference")
    out = {}
    for name, extract in (("k", lambda j: kinetic_features(j, fps)), ("m", geometric_features)):
        gen = np.stack([extract(j) for j in generated])
        ref = np.stack([extract(j) for j in reference])
        gen, ref = _zscore(gen, ref)
        out[f"fid_{name}"] = frechet_distance(gen, ref)
        out[f"div_{name}"] = diversity(gen)
        out[f"div_{name}_reference"] = diversity(ref)
    return out


def motion_beats(joints: np.ndarray, fps: float, sigma_seconds: float = 0.08) -> np.ndarray:
    """Beat times (s) of a dance: local minima of the smoothed mean joint speed (the body pauses)."""
    speed = np.linalg.norm(np.diff(np.asarray(joints, dtype=np.float64), axis=0), axis=-1).mean(axis=1) * fps
    smooth = gaussian_filter1d(speed, sigma=max(sigma_seconds * fps, 1e-3))
    minima = argrelextrema(smooth, np.less)[0]
    return (minima + 1) / fps  # speed[i] is between frames i and i+1


def music_beats(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Beat times (s) of a waveform [N], by librosa's dynamic-programming beat tracker."""
    import librosa

    _, beats = librosa.beat.beat_track(y=np.asarray(audio, dtype=np.float32), sr=sample_rate, units="time")
    return np.asarray(beats, dtype=np.float64)


def beat_align_score(music: np.ndarray, motion: np.ndarray, sigma: float = 0.05) -> float:
    """Bailando's Beat Align Score: mean over music beats of exp(-d^2 / 2 sigma^2), d = distance (s) to the
    nearest motion beat. 1 when every music beat has a motion beat on it; 0 with no motion beats."""
    music, motion = np.asarray(music, dtype=np.float64), np.asarray(motion, dtype=np.float64)
    if len(music) == 0:
        raise ValueError("no music beats: the beat tracker found none (silent or too short audio?)")
    if len(motion) == 0:
        return 0.0
    nearest = np.abs(music[:, None] - motion[None, :]).min(axis=1)
    return float(np.exp(-(nearest**2) / (2 * sigma**2)).mean())


def mean_beat_align(music: list[np.ndarray], motion: list[np.ndarray], sigma: float = 0.05) -> tuple[float, int]:
    """Mean Beat Align Score over paired clips (beat times of each clip's music and dance), and how many
    clips were left out because their music has no beats (the score is undefined there; one such clip
    must not sink the others). NaN when no clip's music has beats."""
    scores = [beat_align_score(m, d, sigma) for m, d in zip(music, motion, strict=True) if len(m) > 0]
    return (float(np.mean(scores)) if scores else float("nan")), len(music) - len(scores)
