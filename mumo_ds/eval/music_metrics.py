"""Music metrics: Fréchet distance between audio-embedding sets, and KL between label distributions.

The embedding model is pluggable: any callable ``embed(audio [N] float, sample_rate) -> [frames, D]``.
The built-in default, :class:`EncodecEmbedder`, uses the EnCodec encoder's continuous latents
(before quantisation) and works offline from a local codec folder. A PANNs/VGGish-style model
loaded from a local folder can be wrapped the same way for FAD-comparable numbers.
As for FAD, the frame embeddings of all clips of a set are pooled before fitting the Gaussian.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .frechet import frechet_distance

Embedder = Callable[[np.ndarray, int], np.ndarray]


class EncodecEmbedder:
    """Frame embeddings [frames, D] from a ``transformers.EncodecModel`` folder's encoder."""

    def __init__(self, codec_dir: str):
        import torch
        from transformers import EncodecModel

        self.torch = torch
        self.model = EncodecModel.from_pretrained(codec_dir).eval()
        self.sample_rate = int(self.model.config.sampling_rate)

    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        if sample_rate != self.sample_rate:
            from scipy.signal import resample_poly

            audio = resample_poly(audio, self.sample_rate, sample_rate)
        wav = self.torch.as_tensor(np.asarray(audio, dtype=np.float32))[None, None]  # [1, 1, N]
        with self.torch.inference_mode():
            latents = self.model.encoder(wav)  # [1, D, frames]
        return latents[0].T.float().numpy()


def music_fd(generated: list[np.ndarray], reference: list[np.ndarray], sample_rate: int, embed: Embedder) -> float:
    """Fréchet distance between the pooled frame embeddings of two sets of waveforms."""
    gen = np.concatenate([embed(a, sample_rate) for a in generated])
    ref = np.concatenate([embed(a, sample_rate) for a in reference])
    return frechet_distance(gen, ref)


def kl_divergence(reference_probs: np.ndarray, generated_probs: np.ndarray, eps: float = 1e-8) -> float:
    """Mean over paired items of KL(reference || generated) between label distributions [N, C].

    Rows are the classifier's label probabilities for the reference clip and the clip generated
    from the same condition (as in the MusicGen / AudioCraft evaluation)."""
    p = np.clip(np.asarray(reference_probs, dtype=np.float64), eps, None)
    q = np.clip(np.asarray(generated_probs, dtype=np.float64), eps, None)
    if p.shape != q.shape:
        raise ValueError(f"label distributions differ in shape: {p.shape} vs {q.shape}")
    p /= p.sum(-1, keepdims=True)
    q /= q.sum(-1, keepdims=True)
    return float((p * np.log(p / q)).sum(-1).mean())
