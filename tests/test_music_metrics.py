"""Music metrics: closed forms for KL, FD of identical sets, EnCodec embeddings, a tiny AST classifier."""

from __future__ import annotations

import numpy as np
import pytest

from mumo_ds.eval.music_metrics import (
    AudioClassifier,
    EncodecEmbedder,
    classifier_metrics,
    kl_divergence,
    music_fd,
    music_kl,
)


def tiny_audio_classifier(path, problem_type=None):
    """A tiny random AST (5 labels, 16 mel bins, 64 frames = 0.655 s windows at 16 kHz) and its extractor."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_mel_bins=16, max_length=64, num_labels=5, problem_type=problem_type)
    torch.manual_seed(0)
    ASTForAudioClassification(config).save_pretrained(path)
    ASTFeatureExtractor(num_mel_bins=16, max_length=64, sampling_rate=16000).save_pretrained(path)


def tone(freq, seconds=1.0, rate=16000):
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_kl_closed_form():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-9)
    q = np.array([[0.25, 0.75], [0.9, 0.1]])
    expected = (0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)) / 2
    assert kl_divergence(p, q) == pytest.approx(expected)
    # KL([.5, .5] || [.9, .1]) = .5 ln(.5/.9) + .5 ln(.5/.1) = .5 ln(25/9); unnormalised rows are normalised
    assert kl_divergence([[0.5, 0.5]], [[0.9, 0.1]]) == pytest.approx(0.5 * np.log(25 / 9), rel=1e-12)
    assert kl_divergence([[1.0, 1.0]], [[0.9, 0.1]]) == pytest.approx(0.5 * np.log(25 / 9), rel=1e-12)


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


def test_audio_classifier_probs_kl_and_fd(tmp_path):
    tiny_audio_classifier(tmp_path / "ast")
    clf = AudioClassifier(str(tmp_path / "ast"))
    assert not clf.multi_label and clf.sample_rate == 16000 and clf.window == 63 * 160 + 400
    clips = [tone(f) for f in (220, 440, 880, 1760)]
    p = clf.probs(clips[0], 16000)
    assert p.shape == (5,) and np.isfinite(p).all() and p.sum() == pytest.approx(1.0, abs=1e-6)
    # 1 s at 16 kHz: a 0.655 s window and a 0.345 s tail window, each mean-pooled to one embedding
    emb = clf(clips[0], 16000)
    assert emb.shape == (2, 32) and np.isfinite(emb).all()
    assert clf(clips[0][:1000], 16000).shape == (1, 32)  # shorter than a window: one padded window
    assert clf(clips[0][:10480 + 1600], 16000).shape == (1, 32)  # a 0.1 s tail is dropped

    assert music_kl(clips, clips, 16000, clf) == 0.0
    rng = np.random.default_rng(0)
    noise = [rng.normal(scale=0.5, size=16000).astype(np.float32) for _ in clips]
    assert music_kl(noise, clips, 16000, clf) > 1e-4
    assert music_fd(clips, clips, 16000, clf) == pytest.approx(0.0, abs=1e-6)
    assert music_fd(noise, clips, 16000, clf) > 1e-3
    with pytest.raises(ValueError, match="pairs clips"):
        music_kl(clips[:2], clips, 16000, clf)

    # audio at another rate is resampled to the extractor's 16 kHz first
    low = [tone(f, rate=8000) for f in (220, 440)]
    resampled = clf(low[0], 8000)
    assert resampled.shape == (2, 32)
    same, other = np.linalg.norm(resampled - emb), np.linalg.norm(clf(clips[1], 16000) - emb)
    assert same < other / 2  # the 8 kHz 220 Hz tone lands near the 16 kHz one, far from 440 Hz
    assert music_kl(low, low, 8000, clf) == 0.0


def test_classifier_metrics_equal_kl_and_fd_from_one_pass_per_clip(tmp_path):
    tiny_audio_classifier(tmp_path / "ast")
    clf = AudioClassifier(str(tmp_path / "ast"))
    rng = np.random.default_rng(0)
    clips = [tone(f) for f in (220, 440, 880)]
    noise = [rng.normal(scale=0.5, size=16000).astype(np.float32) for _ in clips]
    separate = {"kl": music_kl(noise, clips, 16000, clf), "fd_classifier": music_fd(noise, clips, 16000, clf)}
    calls = []
    clf.model.register_forward_hook(lambda *_: calls.append(1))
    together = classifier_metrics(noise, clips, 16000, clf)
    assert together == pytest.approx(separate, rel=1e-12) and together["kl"] > 0
    assert len(calls) == 2 * 2 * len(clips)  # each clip's two windows, once: the metrics share the pass
    with pytest.raises(ValueError, match="pairs clips"):
        classifier_metrics(noise[:2], clips, 16000, clf)


def test_audio_classifier_multi_label(tmp_path):
    tiny_audio_classifier(tmp_path / "ast", problem_type="multi_label_classification")
    clf = AudioClassifier(str(tmp_path / "ast"))
    assert clf.multi_label
    p = clf.probs(tone(440), 16000)
    assert p.shape == (5,) and ((p > 0) & (p < 1)).all() and not np.isclose(p.sum(), 1.0)
    assert not AudioClassifier(str(tmp_path / "ast"), multi_label=False).multi_label
