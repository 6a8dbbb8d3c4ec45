"""Music tokenizer: audio -> int16 codes [num_codebooks, T] at the codec's frame rate, and back.

    tok = MusicTokenizer("encodec_32khz", "checkpoints/encodec_32khz")   # local folder (hub id online)
    codes = tok.encode_file("song.flac")          # int16 [4, T], T = ceil(seconds * 50)
    tok.write_wav("check.wav", tok.decode(codes)) # float32 [T * 640] at 32 kHz

Backends are registered by name in ``BACKENDS`` and the name is what the manifest
records (``tok.info``: name, sample_rate, frame_rate, num_codebooks, codebook_size):

- ``encodec_32khz``: ``transformers.EncodecModel`` (the MusicGen codec: 32 kHz mono,
  4 x 2048 codes, 50 frames/s, hop 640 samples).
- ``encodec_24khz``: the ``encodec`` package's 24 kHz model at 3 kbps (4 x 1024, 75 frames/s);
  optional, ``pip install "mumo-ds[encodec]"``; imported only when used.

Long tracks are cut into chunks of ``chunk_seconds`` whose boundaries fall on multiples
of the hop, each encoded with ``context_seconds`` of real audio on both sides that is
then dropped, so chunk codes line up exactly with the unchunked codes::

    audio  |----------------------------- N samples (right-padded to a multiple of hop) ----|
    chunk     [ctx| chunk 0 |ctx]
    chunk              [ctx| chunk 1 |ctx]            window = chunk + context, clipped to the track
    codes  [ chunk 0 codes | chunk 1 codes | ... ]    == encode(whole track)

Equality needs the context to cover the encoder's effective receptive field (its
convolutions plus the LSTM's memory): with the tiny test codec 10 frames suffice
(0 frames gives ~2 % different codes at the seams); the default 1 s is a margin, not a
measurement on the real weights. Windows of equal length from all tracks of a call are
stacked into batches of ``batch_size``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .audio_io import AudioError, check_audible, load_mono, write_wav
from .codes import check_codes


@dataclasses.dataclass(frozen=True)
class CodecInfo:
    """What the manifest records about a codec."""

    name: str
    sample_rate: int
    frame_rate: int
    num_codebooks: int
    codebook_size: int

    @property
    def hop(self) -> int:
        """Audio samples per code frame (640 for 32 kHz / 50 Hz)."""
        return self.sample_rate // self.frame_rate


class CodecBackend:
    """One codec model: ``encode`` [B, 1, N] float -> [B, K, N / hop] int, ``decode`` the reverse."""

    info: CodecInfo

    def encode(self, wav):  # torch [B, 1, N] -> LongTensor [B, K, N // hop]
        raise NotImplementedError

    def decode(self, codes):  # LongTensor [B, K, T] -> torch [B, 1, T * hop]
        raise NotImplementedError


class TransformersEncodec(CodecBackend):
    """``transformers.EncodecModel`` from a local folder (or a hub id when online)."""

    def __init__(self, model: str | os.PathLike, *, name: str = "encodec_32khz", device: str = "cpu"):
        import torch
        from transformers import AutoConfig, EncodecModel

        self.torch = torch
        self.device = torch.device(device)
        hint = "pass the folder of a save_pretrained EnCodec (e.g. a local copy of facebook/encodec_32khz)"
        try:  # the model type first: another model's folder can fail inside EncodecModel in any way (AttributeError)
            config = AutoConfig.from_pretrained(str(model))
            if config.model_type == "encodec":
                self.model = EncodecModel.from_pretrained(str(model), config=config).to(self.device).eval()
        except (OSError, ValueError) as exn:
            raise OSError(f"{model}: cannot load a transformers EncodecModel ({exn}); {hint}") from exn
        if config.model_type != "encodec":
            raise ValueError(f"{model}: holds a {config.model_type!r} model, not an EnCodec; {hint}")
        cfg = self.model.config
        if cfg.audio_channels != 1:
            raise ValueError(f"{model}: config.audio_channels={cfg.audio_channels}; the music tokenizer needs a mono codec")
        if cfg.chunk_length_s is not None or cfg.normalize:
            raise ValueError(
                f"{model}: config has chunk_length_s={cfg.chunk_length_s}, normalize={cfg.normalize}; this backend "
                "expects an unchunked, unnormalised codec such as encodec_32khz (it does its own chunking)"
            )
        self.bandwidth = max(cfg.target_bandwidths)
        num_codebooks = self.model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth)
        self.info = CodecInfo(name, int(cfg.sampling_rate), int(round(cfg.frame_rate)), num_codebooks, int(cfg.codebook_size))

    def encode(self, wav):
        out = self.model.encode(wav.to(self.device), bandwidth=self.bandwidth)
        return out.audio_codes[0]  # [chunks=1, B, K, T] -> [B, K, T]

    def decode(self, codes):
        return self.model.decode(codes[None].to(self.device), [None])[0]  # [B, 1, T * hop]


class EncodecPackage(CodecBackend):
    """The ``encodec`` package's 24 kHz model at 3 kbps (optional extra ``mumo-ds[encodec]``)."""

    def __init__(self, model: str | os.PathLike | None = None, *, name: str = "encodec_24khz", device: str = "cpu"):
        try:
            import encodec
        except ImportError as exn:
            raise ImportError(
                f"codec backend {name!r} needs the optional encodec package: pip install \"mumo-ds[encodec]\" "
                f"(encodec==0.1.1, which needs a torchaudio matching your torch); or use backend 'encodec_32khz' "
                f"(transformers, no extra install) ({exn})"
            ) from exn
        import torch

        self.torch = torch
        self.model = encodec.EncodecModel.encodec_model_24khz().to(device).eval()
        self.model.set_target_bandwidth(3.0)
        self.device = torch.device(device)
        self.info = CodecInfo(name, 24000, 75, 4, 1024)

    def encode(self, wav):
        frames = self.model.encode(wav.to(self.device))  # list of (codes [B, K, t], scale)
        return self.torch.cat([codes for codes, _ in frames], dim=-1)

    def decode(self, codes):
        return self.model.decode([(codes.to(self.device), None)])


BACKENDS: dict[str, Callable[..., CodecBackend]] = {
    "encodec_32khz": TransformersEncodec,
    "encodec_24khz": EncodecPackage,
}


def load_backend(name: str, model: str | os.PathLike | None, device: str = "cpu") -> CodecBackend:
    """Build the backend registered as ``name``; unknown names list the known ones."""
    if name not in BACKENDS:
        raise ValueError(f"codec backend {name!r} is unknown; choose one of {sorted(BACKENDS)}")
    if name == "encodec_32khz" and not model:
        raise ValueError("codec backend 'encodec_32khz' needs a model folder (--codec-model path/to/encodec_32khz)")
    return BACKENDS[name](model, name=name, device=device)


def chunk_windows(num_frames: int, chunk_frames: int, context_frames: int) -> list[tuple[int, int, int, int]]:
    """Per chunk (window_start, window_end, keep_start, keep_end) in frames; keep is window-relative.

    ``chunk_windows(250, 100, 10) == [(0, 110, 0, 100), (90, 210, 10, 110), (190, 250, 10, 60)]``
    """
    windows = []
    for start in range(0, num_frames, chunk_frames):
        end = min(num_frames, start + chunk_frames)
        w0, w1 = max(0, start - context_frames), min(num_frames, end + context_frames)
        windows.append((w0, w1, start - w0, end - w0))
    return windows


class MusicTokenizer:
    """Audio <-> codes with a named codec backend; the model loads on first use (cheap to pickle).

    Args:
        backend: a name in ``BACKENDS``, e.g. "encodec_32khz".
        model: the backend's weights (local folder, or hub id when online).
        chunk_seconds: longest audio encoded in one forward (rounded to whole frames).
        context_seconds: audio added on each side of a chunk and dropped after encoding.
        batch_size: windows per forward.
        device: torch device string.
        progress: show a tqdm bar over batches.
        allow_silent: keep silent files (with a warning) instead of rejecting them.
    """

    def __init__(
        self,
        backend: str = "encodec_32khz",
        model: str | os.PathLike | None = None,
        *,
        chunk_seconds: float = 30.0,
        context_seconds: float = 1.0,
        batch_size: int = 8,
        device: str = "cpu",
        progress: bool = False,
        allow_silent: bool = False,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"codec backend {backend!r} is unknown; choose one of {sorted(BACKENDS)}")
        if chunk_seconds <= 0 or context_seconds < 0 or batch_size < 1:
            raise ValueError(f"chunk_seconds={chunk_seconds} must be > 0, context_seconds={context_seconds} >= 0, batch_size={batch_size} >= 1")
        self.backend_name = backend
        self.model_path = None if model is None else str(model)
        self.chunk_seconds = chunk_seconds
        self.context_seconds = context_seconds
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        self.allow_silent = allow_silent
        self._backend: CodecBackend | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_backend"} | {"_backend": None}

    @property
    def backend(self) -> CodecBackend:
        if self._backend is None:
            self._backend = load_backend(self.backend_name, self.model_path, self.device)
        return self._backend

    @property
    def info(self) -> dict:
        """Manifest ``codec`` entry: {name, sample_rate, frame_rate, num_codebooks, codebook_size}."""
        return dataclasses.asdict(self.backend.info)

    @property
    def name(self) -> str:
        return self.backend_name

    # -- encoding -----------------------------------------------------------------------
    def encode(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        """Mono float [N_i] at the codec's sample rate -> int16 [K, ceil(N_i / hop)] per track."""
        import torch
        from tqdm.auto import tqdm

        info = self.backend.info
        hop = info.hop
        chunk = max(1, round(self.chunk_seconds * info.frame_rate))
        context = round(self.context_seconds * info.frame_rate)
        padded, jobs = [], []  # jobs: (track, out_frame, window_start, window_end, keep_start, keep_end)
        for i, wav in enumerate(waveforms):
            wav = np.asarray(wav, dtype=np.float32)
            if wav.ndim != 1 or wav.size == 0:
                raise ValueError(f"track {i}: expected mono float audio [N > 0], got shape {wav.shape}; use audio_io.to_mono")
            frames = -(-wav.size // hop)
            padded.append(np.pad(wav, (0, frames * hop - wav.size)))  # [frames * hop]
            jobs += [(i, w0 + k0, w0, w1, k0, k1) for w0, w1, k0, k1 in chunk_windows(frames, chunk, context)]
        out = [np.zeros((info.num_codebooks, p.size // hop), np.int16) for p in padded]
        by_len: dict[int, list] = {}
        for job in jobs:
            by_len.setdefault(job[3] - job[2], []).append(job)
        batches = [g[j : j + self.batch_size] for g in by_len.values() for j in range(0, len(g), self.batch_size)]
        with torch.inference_mode():
            for batch in tqdm(batches, desc="encode music", unit="batch", disable=not self.progress):
                wav = torch.from_numpy(np.stack([padded[i][w0 * hop : w1 * hop] for i, _, w0, w1, _, _ in batch]))
                codes = self.backend.encode(wav[:, None]).cpu().numpy()  # [b, 1, L] -> [b, K, L / hop]
                for (i, at, _, _, k0, k1), c in zip(batch, codes):
                    out[i][:, at : at + k1 - k0] = c[:, k0:k1]
        return out

    def load(self, path: str | os.PathLike, offset_seconds: float = 0.0, max_seconds: float | None = None) -> np.ndarray:
        """Mono float32 [N] at the codec rate from ``offset_seconds`` for at most ``max_seconds``."""
        sr = self.backend.info.sample_rate
        wav = load_mono(path, sr, allow_silent=None)  # silence is judged on the cut below
        start = int(round(offset_seconds * sr))
        stop = None if max_seconds is None else start + int(round(max_seconds * sr))
        wav = wav[start:stop]
        if wav.size == 0:
            raise AudioError("too_short", path, f"no audio after offset {offset_seconds} s; fix offsets.music_seconds")
        check_audible(wav, path, allow_silent=self.allow_silent)
        return wav

    def encode_file(self, path: str | os.PathLike, offset_seconds: float = 0.0, max_seconds: float | None = None) -> np.ndarray:
        """One audio file (any rate, mono or multi-channel) -> int16 [K, T]."""
        return self.encode([self.load(path, offset_seconds, max_seconds)])[0]

    # -- decoding -----------------------------------------------------------------------
    def decode(self, codes: np.ndarray, source: str = "codes") -> np.ndarray:
        """int [K, T] -> float32 [T * hop] audio at the codec's sample rate; ``source`` names the codes in errors."""
        import torch

        info = self.backend.info
        codes = check_codes(codes, info.num_codebooks, info.codebook_size, source, "music")
        with torch.inference_mode():
            wav = self.backend.decode(torch.from_numpy(codes.astype(np.int64))[None])  # [1, 1, T * hop]
        return wav[0, 0].float().cpu().numpy()

    def write_wav(self, path: str | os.PathLike, wav: np.ndarray) -> Path:
        """Write decoded audio as a 16-bit WAV at the codec's sample rate."""
        return write_wav(path, wav, self.backend.info.sample_rate)
