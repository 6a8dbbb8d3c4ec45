"""Music metrics: Fréchet distance between audio-embedding sets, and KL between label distributions.

The embedding model is pluggable: any callable ``embed(audio [N] float, sample_rate) -> [frames, D]``.
The built-in default, :class:`EncodecEmbedder`, uses the EnCodec encoder's continuous latents
(before quantisation) and works offline from a local codec folder. :class:`AudioClassifier` wraps
any local ``transformers`` audio-classification folder (e.g. an AST fine-tuned on AudioSet): it
gives label probabilities for the KL (:func:`music_kl`) and is an embedder for :func:`music_fd`;
:func:`classifier_metrics` computes both from one pass of the classifier over each clip.
As for FAD, the frame embeddings of all clips of a set are pooled before fitting the Gaussian.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..tokenizers.audio_io import resample
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
        wav = self.torch.as_tensor(resample(np.asarray(audio), sample_rate, self.sample_rate))[None, None]  # [1, 1, N]
        with self.torch.inference_mode():
            latents = self.model.encoder(wav)  # [1, D, frames]
        return latents[0].T.float().numpy()


class AudioClassifier:
    """Label probabilities and embeddings from a local ``AutoModelForAudioClassification`` folder.

        clf = AudioClassifier("models/ast-finetuned-audioset-10-10-0.4593")  # a folder saved offline
        clf.probs(audio, 32000)      # [C]
        clf(audio, 32000)            # [windows, D]: an embedder for music_fd

    The folder holds the model and its feature extractor (``save_pretrained`` of both). Audio is
    resampled to the extractor's ``sampling_rate`` with a polyphase filter, then cut into windows
    the model sees whole, each through its own forward pass: for AST, whose extractor pads or
    truncates every input to ``max_length`` frames of 25 ms every 10 ms, windows of exactly that
    span (about 10.25 s for the AudioSet checkpoints); for other extractors, ``window_seconds``
    (default: the whole clip in one window). As in AudioCraft, a trailing window shorter than
    0.15 s is dropped unless it is the only one.

    - ``probs``: the mean over windows of each window's label probabilities. ``multi_label`` picks
      the activation: sigmoid per label if true, softmax over labels if false; by default it is
      true exactly when ``config.problem_type == "multi_label_classification"``. A config that
      leaves ``problem_type`` unset (as converted AudioSet checkpoints usually do) gets the softmax,
      which is what AudioCraft's PaSST KL applies to its AudioSet logits. :func:`kl_divergence` renormalises every row to sum
      to 1, so sigmoid outputs are compared as the distribution they are proportional to.
    - ``__call__``: one embedding per window, the last hidden layer's output mean-pooled over its
      tokens (patches for AST, frames for wav2vec2-style models) -> ``[windows, D]``.
    """

    def __init__(self, model_dir: str, multi_label: bool | None = None, window_seconds: float | None = None,
                 device: str = "cpu"):
        import torch
        from transformers import ASTFeatureExtractor, AutoFeatureExtractor, AutoModelForAudioClassification

        self.torch = torch
        self.device = device
        self.model = AutoModelForAudioClassification.from_pretrained(model_dir).to(device).eval()
        self.extractor = AutoFeatureExtractor.from_pretrained(model_dir)
        self.sample_rate = int(self.extractor.sampling_rate)
        if multi_label is None:
            multi_label = self.model.config.problem_type == "multi_label_classification"
        self.multi_label = multi_label
        if window_seconds is not None:
            self.window = round(window_seconds * self.sample_rate)
        elif isinstance(self.extractor, ASTFeatureExtractor):  # Kaldi fbank: 25 ms frames, 10 ms hop
            hop, length = self.sample_rate // 100, self.sample_rate * 25 // 1000
            self.window = (self.extractor.max_length - 1) * hop + length
        else:
            self.window = None
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    def _windows(self, audio: np.ndarray, sample_rate: int) -> list[np.ndarray]:
        audio = resample(np.asarray(audio), sample_rate, self.sample_rate)
        if self.window is None or len(audio) <= self.window:
            return [audio]
        windows = [audio[i : i + self.window] for i in range(0, len(audio), self.window)]
        if len(windows[-1]) < 0.15 * self.sample_rate:
            windows.pop()
        return windows

    def _forward(self, audio: np.ndarray, sample_rate: int):
        logits, hidden = [], []
        # one window at a time: no batch padding enters the pooling (the extractor still pads a window shorter than
        # the classifier's input, alike for generated and reference clips)
        for window in self._windows(audio, sample_rate):
            inputs = self.extractor(window, sampling_rate=self.sample_rate, return_tensors="pt")
            with self.torch.inference_mode():
                out = self.model(**inputs.to(self.device), output_hidden_states=True)
            logits.append(out.logits[0].float())  # [C]
            hidden.append(out.hidden_states[-1][0].float().mean(0))  # [tokens, D] -> [D]
        return self.torch.stack(logits), self.torch.stack(hidden)  # [W, C], [W, D]

    def analyse(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """One pass of the model over a waveform [N]: (:meth:`probs`, embeddings as :meth:`__call__` gives them)."""
        logits, hidden = self._forward(audio, sample_rate)
        p = logits.sigmoid() if self.multi_label else logits.softmax(-1)  # [W, C]
        return p.mean(0).cpu().double().numpy(), hidden.cpu().numpy()

    def probs(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Label probabilities [C] of one waveform [N] (mean over windows)."""
        return self.analyse(audio, sample_rate)[0]

    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Embeddings [windows, D] of one waveform [N]: last hidden layer, mean over tokens."""
        return self.analyse(audio, sample_rate)[1]


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


def _check_pairs(generated: list[np.ndarray], reference: list[np.ndarray]) -> None:
    if len(generated) != len(reference):
        raise ValueError(f"the KL pairs clips: {len(generated)} generated vs {len(reference)} reference")


def music_kl(generated: list[np.ndarray], reference: list[np.ndarray], sample_rate: int,
             classifier: AudioClassifier) -> float:
    """Mean KL(reference || generated) of the classifier's label distributions over paired clips."""
    _check_pairs(generated, reference)
    gen = np.stack([classifier.probs(a, sample_rate) for a in generated])  # [N, C]
    ref = np.stack([classifier.probs(a, sample_rate) for a in reference])
    return kl_divergence(ref, gen)


def classifier_metrics(generated: list[np.ndarray], reference: list[np.ndarray], sample_rate: int,
                       classifier: AudioClassifier) -> dict[str, float]:
    """``kl`` (:func:`music_kl`) and ``fd_classifier`` (:func:`music_fd` with the classifier's embeddings)
    from one pass of the classifier over each clip, instead of one per metric."""
    _check_pairs(generated, reference)
    gen = [classifier.analyse(a, sample_rate) for a in generated]
    ref = [classifier.analyse(a, sample_rate) for a in reference]
    return {
        "kl": kl_divergence(np.stack([p for p, _ in ref]), np.stack([p for p, _ in gen])),
        "fd_classifier": frechet_distance(np.concatenate([e for _, e in gen]), np.concatenate([e for _, e in ref])),
    }
