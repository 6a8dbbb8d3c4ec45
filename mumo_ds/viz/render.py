"""Stick-figure animations of 22-joint motion: GIF always, MP4 (with music muxed in) through ffmpeg.

    render_motion([generated, reference], "dance.gif", fps=50, titles=["generated", "reference"])
    render_motion([generated, reference], "dance.mp4", fps=50, audio="music.wav")

ffmpeg is the system one on PATH, else the static binary of ``imageio-ffmpeg`` (the ``viz`` and
``test`` extras install it); with neither, an .mp4 request writes a .gif next to it instead.

Several clips are drawn side by side (a grid of one row), all with the same scale, seen from
the front (X right, Y up), following the root so the dancer stays in frame.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CHAINS = [[0, 2, 5, 8, 11], [0, 1, 4, 7, 10], [0, 3, 6, 9, 12, 15], [9, 14, 17, 19, 21], [9, 13, 16, 18, 20]]
COLOURS = [(200, 60, 60), (60, 60, 200), (40, 40, 40), (220, 120, 40), (40, 140, 220)]


def _frames(clips: list[np.ndarray], size: int, titles: list[str] | None) -> list[Image.Image]:
    clips = [np.asarray(c, dtype=np.float64) for c in clips]
    length = min(len(c) for c in clips)
    extent = max(np.abs(c[:, :, :2] - c[:, :1, :2] * np.array([1, 0])).max() for c in clips) + 0.1
    scale = size / (2 * extent)
    images = []
    for t in range(length):
        image = Image.new("RGB", (size * len(clips), size), "white")
        draw = ImageDraw.Draw(image)
        for i, clip in enumerate(clips):
            pose = clip[t]
            x = (pose[:, 0] - pose[0, 0]) * scale + size * (i + 0.5)  # follow the root horizontally
            y = size - (pose[:, 1] * scale + 0.05 * size)
            for chain, colour in zip(CHAINS, COLOURS):
                draw.line([(x[j], y[j]) for j in chain], fill=colour, width=3)
            if titles:
                draw.text((size * i + 5, 5), titles[i], fill="black")
        images.append(image)
    return images


def render_motion(
    clips: list[np.ndarray] | np.ndarray,
    path: str | Path,
    fps: float,
    titles: list[str] | None = None,
    audio: str | Path | None = None,
    size: int = 256,
) -> Path:
    """Animate joint clips [T, 22, 3] side by side to ``path`` (.gif, or .mp4 through ffmpeg).

    For .mp4, ``audio`` (a WAV file) is muxed in and the video stops with the shorter of the two;
    the file is written under a temporary name and renamed, so a failing ffmpeg (RuntimeError with
    its stderr) leaves any earlier file at ``path`` as it was. Without any ffmpeg (see
    :func:`find_ffmpeg`), .mp4 falls back to .gif next to it.
    """
    if isinstance(clips, np.ndarray) and clips.ndim == 3:
        clips = [clips]
    clips, path = list(clips), Path(path)
    kind = path.suffix.lower()
    if kind not in (".gif", ".mp4"):
        raise ValueError(f"{path}: render_motion writes .gif or .mp4, not {path.suffix or 'a file without a suffix'}")
    bad = [i for i, c in enumerate(clips) if np.asarray(c).ndim != 3 or len(c) == 0]
    if not clips or bad:
        raise ValueError(f"{path}: clip(s) {bad} of {len(clips)} are empty or not [T, joints, 3]; give each a frame at least"
                         if clips else f"{path}: no clips to render")
    if titles is not None and len(titles) != len(clips):
        raise ValueError(f"{path}: {len(titles)} title(s) for {len(clips)} clip(s); give one title per clip")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = _frames(clips, size, titles)
    if kind == ".mp4":
        ffmpeg = find_ffmpeg()
        if ffmpeg:
            return _write_mp4(frames, path, fps, audio, ffmpeg)
        path = path.with_suffix(".gif")
        print(f"note: no ffmpeg on PATH and imageio-ffmpeg is not installed (pip install imageio-ffmpeg); "
              f"writing {path} instead of an MP4")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


def find_ffmpeg() -> str | None:
    """The ffmpeg on PATH, else imageio-ffmpeg's bundled binary, else None."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        return ffmpeg
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def _write_mp4(frames: list[Image.Image], path: Path, fps: float, audio, ffmpeg: str) -> Path:
    tmp_out = path.with_name(f".{path.stem}.tmp{os.getpid()}.mp4")  # same folder: os.replace is atomic
    with tempfile.TemporaryDirectory() as tmp:
        for i, frame in enumerate(frames):
            frame.save(Path(tmp) / f"{i:06d}.png")
        cmd = [ffmpeg, "-y", "-loglevel", "error", "-framerate", str(fps), "-i", str(Path(tmp) / "%06d.png")]
        if audio:
            cmd += ["-i", str(audio), "-shortest"]
        cmd += ["-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", str(tmp_out)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"ffmpeg failed writing {path} (exit {done.returncode}): {done.stderr.strip()}")
            os.replace(tmp_out, path)
        finally:
            tmp_out.unlink(missing_ok=True)
    return path
