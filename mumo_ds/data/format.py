"""The shard format: constants, the ``manifest.json`` schema and the compatibility check.

A data directory holds plain tar shards ``{split}-{index:06d}.tar`` and one
``manifest.json`` beside them::

    data/sample/
      manifest.json
      train-000000.tar   members: <key>.json, <key>.motion.npy, <key>.music.npy, ...
      val-000000.tar

Each sample has ``music.npy`` and/or ``motion.npy`` (int16, shape [num_codebooks, T],
values 0..codebook_size-1, both at ``frame_rate`` frames/s on one timeline; a paired
sample has the same T in both) and ``json``::

    {"captions": {"music": "...", "motion": "..."}, "source": "...",
     "duration": 4.0, "fps": 50, "offsets": {"music": 1.2, "motion": 1.2}}

``manifest.json``::

    {"format_version": 1,
     "codec": {"name", "sample_rate", "frame_rate", "num_codebooks", "codebook_size"},
     "motion_tokenizer": {"name", "frame_rate", "num_codebooks", "codebook_size"},
     "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048,
     "splits": {"train": {"num_samples": 64,
                          "counts": {"paired": 48, "music": 8, "motion": 8},
                          "shards": [{"name": "train-000000.tar", "num_samples": 8,
                                      "sha256": "..."}, ...]}}}
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MODALITIES = ("music", "motion")
KINDS = ("paired", "music", "motion")  # counts per kind in the manifest
MANIFEST_NAME = "manifest.json"
SAMPLE_DATA_COMMAND = "python -m data_prep.make_sample_shards --out <data_dir>"


class ManifestError(ValueError):
    """A manifest is missing, malformed, or does not match what the model expects."""


def check_split(split: str) -> str:
    """A split name is plain (no '-', '/' or '.'), so that one split's shard names never match another's."""
    if not split or not isinstance(split, str) or any(c in split for c in "-/."):
        raise ValueError(f"split {split!r}: use a plain name such as 'train' or 'val_hard' (no '-', '/' or '.')")
    return split


def shard_name(split: str, index: int) -> str:
    """``shard_name("train", 3) == "train-000003.tar"``."""
    return f"{split}-{index:06d}.tar"


SHARD_NAME_RE = re.compile(r"^(?P<split>[^-/.]+)-(?P<index>\d{6})\.tar$")


def split_shards(out_dir: str | os.PathLike, split: str) -> list[Path]:
    """The shard files of ``split`` in ``out_dir`` (``{split}-NNNNNN.tar`` exactly), sorted."""
    return sorted(
        p for p in Path(out_dir).glob(f"{split}-*.tar")
        if (m := SHARD_NAME_RE.match(p.name)) and m["split"] == split
    )


def kind_of(has_music: bool, has_motion: bool) -> str:
    """Manifest kind of a sample: "paired", "music" or "motion"."""
    if has_music and has_motion:
        return "paired"
    if has_music:
        return "music"
    if has_motion:
        return "motion"
    raise ValueError("a sample needs music or motion codes (got neither)")


@dataclasses.dataclass
class ShardInfo:
    """One shard file: its name inside the data directory, sample count and sha256."""

    name: str
    num_samples: int
    sha256: str


@dataclasses.dataclass
class SplitInfo:
    """One split: total samples, counts per kind and its shards in index order."""

    num_samples: int = 0
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: {k: 0 for k in KINDS})
    shards: list[ShardInfo] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Manifest:
    """Contents of ``manifest.json``; see the module docstring for the layout."""

    codec: dict[str, Any]
    motion_tokenizer: dict[str, Any]
    frame_rate: int = 50
    num_codebooks: int = 4
    codebook_size: int = 2048
    splits: dict[str, SplitInfo] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, keys in the documented order."""
        return {"format_version": self.format_version, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, obj: Any, source: str = "<manifest>") -> "Manifest":
        """Build from parsed JSON; raises ManifestError naming ``source`` and the field."""
        if not isinstance(obj, dict):
            raise ManifestError(f"{source}: expected a JSON object, got {type(obj).__name__}")
        version = _field(obj, "format_version", int, source)
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{source}: format_version is {version}, this code reads {FORMAT_VERSION}; "
                "rewrite the shards with this version's data_prep"
            )
        splits = {}
        for split, sobj in _field(obj, "splits", dict, source).items():
            where = f"splits.{split}"
            shards = [
                ShardInfo(
                    name=_field(s, "name", str, source, f"{where}.shards[{i}]"),
                    num_samples=_field(s, "num_samples", int, source, f"{where}.shards[{i}]"),
                    sha256=_field(s, "sha256", str, source, f"{where}.shards[{i}]"),
                )
                for i, s in enumerate(_field(sobj, "shards", list, source, where))
            ]
            splits[split] = SplitInfo(
                num_samples=_field(sobj, "num_samples", int, source, where),
                counts=dict(_field(sobj, "counts", dict, source, where)),
                shards=shards,
            )
        return cls(
            codec=_field(obj, "codec", dict, source),
            motion_tokenizer=_field(obj, "motion_tokenizer", dict, source),
            frame_rate=_field(obj, "frame_rate", int, source),
            num_codebooks=_field(obj, "num_codebooks", int, source),
            codebook_size=_field(obj, "codebook_size", int, source),
            splits=splits,
            format_version=version,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """Read ``path`` (a manifest.json file or the directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(
                f"{path}: manifest not found; the data directory must hold the shards and their "
                f"manifest.json, written by data_prep (sample data: {SAMPLE_DATA_COMMAND})"
            )
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exn:
            raise ManifestError(f"{path}: not valid JSON ({exn}); rewrite it with data_prep") from exn
        return cls.from_json(obj, source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a temp file in the same directory, then ``os.replace``."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        write_json_atomic(path, self.to_json())


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` so readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _field(obj: Any, name: str, typ: type, source: str, where: str = "") -> Any:
    """``obj[name]`` checked for presence and type; errors name the file and the field."""
    label = f"{where}.{name}" if where else name
    if not isinstance(obj, dict) or name not in obj:
        raise ManifestError(f"{source}: missing field {label!r}; rewrite the manifest with data_prep")
    value = obj[name]
    if (typ is int and isinstance(value, bool)) or not isinstance(value, typ):
        raise ManifestError(
            f"{source}: field {label!r} should be {typ.__name__}, got {value!r}; "
            "rewrite the manifest with data_prep"
        )
    return value


def check_compatible(
    manifest: Manifest,
    *,
    num_codebooks: int | None = None,
    codebook_size: int | None = None,
    frame_rate: int | None = None,
    music_codec: str | dict | None = None,
    motion_tokenizer: str | dict | None = None,
    source: str = "<path>",
) -> None:
    """Refuse data that does not match the model: raises ManifestError on the first mismatch.

    Arguments left as None are not compared. ``music_codec`` / ``motion_tokenizer``
    may be a name (compared with the manifest's ``codec["name"]`` /
    ``motion_tokenizer["name"]``) or a dict whose given keys are compared one by one.
    """
    checks: list[tuple[str, Any, Any]] = [
        ("num_codebooks", num_codebooks, manifest.num_codebooks),
        ("codebook_size", codebook_size, manifest.codebook_size),
        ("frame_rate", frame_rate, manifest.frame_rate),
    ]
    for prefix, expected, actual in (
        ("codec", music_codec, manifest.codec),
        ("motion_tokenizer", motion_tokenizer, manifest.motion_tokenizer),
    ):
        if isinstance(expected, str):
            expected = {"name": expected}
        for key, value in (expected or {}).items():
            checks.append((f"{prefix}.{key}", value, actual.get(key)))
    for field, expected, actual in checks:
        if expected is not None and expected != actual:
            raise ManifestError(
                f"{source}: {field} mismatch: the data has {field}={actual!r}, the model expects "
                f"{field}={expected!r}; re-tokenize the data with {field}={expected!r} "
                f"or use a model config with {field}={actual!r}"
            )
