"""Music metrics: closed forms for KL, FD of identical sets, EnCodec embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from mumo_ds.eval.music_metrics import EncodecEmbedder, kl_divergence, music_fd


def test_kl_closed_form():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-9)
    q = np.array([[0.25, 0.75], [0.9, 0.1]])
    expected = (0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)) / 2
    assert kl_divergence(p, q) == pytest.approx(expected)


def test_fd_with_a_simple_embedder():
    embed = lambda audio, sr: np.stack([audio[i : i + 4] for i in range(0, len(audio) - 3, 4)])  # noqa: E731
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=400) for _ in range(4)]
    assert music_fd(clips, clips, 16000, embed) == pytest.approx(0.0, abs=1e-9)
    louder = [c * 3 for c in clips]
    assert music_fd(louder, clips, 16000, embed) > 1.0


def test_encodec_embedder(tmp_path):
    from tests.test_cli import tiny_codec

    tiny_codec(tmp_path / "codec")
    embed = EncodecEmbedder(str(tmp_path / "codec"))
    t = np.arange(32000) / 32000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    frames = embed(tone, 32000)
    assert frames.shape[0] == 50 and frames.ndim == 2 and np.isfinite(frames).all()
    assert embed(tone[::2], 16000).shape == frames.shape  # resampled to the codec's rate
    assert music_fd([tone, tone * 0.5], [tone, tone * 0.5], 32000, embed) == pytest.approx(0.0, abs=1e-6)
