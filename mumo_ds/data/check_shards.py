"""Check a shard directory against its manifest, sample by sample; returns a list of problems.

For every split and every shard listed in ``manifest.json``: the file exists, its
sha256 matches, it is a readable tar, and its samples match the listed count. Every
sample needs a ``json`` whose captions fit its streams (the writer's rule) and ``music.npy`` / ``motion.npy``
that decode without pickle as int16 [num_codebooks, T > 0] with values in
0..codebook_size-1, the same T when paired; the per-kind counts must match. Leftover
``*.partial`` files and ``.tar`` files the manifest does not list are reported too.
"""

from __future__ import annotations

import collections
import io
import json
import tarfile
from pathlib import Path

import numpy as np

from .format import KINDS, MANIFEST_NAME, Manifest, ManifestError, kind_of
from .validate import check_captions
from .writer import PARTIAL_SUFFIX, file_sha256


def check_dir(data_dir: str | Path) -> list[str]:
    """All problems found in ``data_dir`` (an empty list means the data is sound)."""
    data_dir = Path(data_dir)
    try:
        manifest = Manifest.load(data_dir / MANIFEST_NAME)
    except ManifestError as exn:
        return [str(exn)]
    problems: list[str] = []
    listed = set()
    for split, info in manifest.splits.items():
        counts: collections.Counter = collections.Counter()
        total = 0
        for shard in info.shards:
            listed.add(shard.name)
            n, kinds = _check_shard(data_dir / shard.name, shard.sha256, manifest, problems)
            if n is None:
                continue
            if n != shard.num_samples:
                problems.append(f"{data_dir / shard.name}: {n} samples, the manifest says {shard.num_samples}")
            counts += kinds
            total += n
        if total != info.num_samples and all((data_dir / s.name).is_file() for s in info.shards):
            problems.append(f"{data_dir}: split {split!r} has {total} samples, the manifest says {info.num_samples}")
        listed_counts = {k: info.counts.get(k, 0) for k in KINDS}
        if all((data_dir / s.name).is_file() for s in info.shards) and listed_counts != {k: counts.get(k, 0) for k in KINDS}:
            problems.append(f"{data_dir}: split {split!r} counts {dict(counts)}, the manifest says {listed_counts}")
    for path in sorted(data_dir.glob("*.tar")):
        if path.name not in listed:
            problems.append(f"{path}: not listed in {MANIFEST_NAME}; delete it or rebuild the manifest")
    for path in sorted(data_dir.glob(f"*{PARTIAL_SUFFIX}")):
        problems.append(f"{path}: partial shard left by an interrupted run; delete it or re-run build_shards")
    return problems


def _check_shard(path: Path, sha256: str, manifest: Manifest, problems: list[str]) -> tuple[int | None, collections.Counter]:
    """Check one shard; returns (number of samples, counts per kind), or (None, {}) if unreadable."""
    if not path.is_file():
        problems.append(f"{path}: listed in the manifest but missing; re-run build_shards (it resumes)")
        return None, collections.Counter()
    digest = file_sha256(path)
    if digest != sha256:
        problems.append(f"{path}: sha256 {digest[:12]}... does not match the manifest's {sha256[:12]}...; the shard changed or is corrupt: rebuild it")
    members: dict[str, dict[str, bytes]] = collections.OrderedDict()
    try:
        with tarfile.open(path, "r") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, _, ext = m.name.partition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as exn:
        problems.append(f"{path}: unreadable tar ({exn}); rebuild the shard")
        return None, collections.Counter()
    kinds: collections.Counter = collections.Counter()
    for key, sample in members.items():
        where = f"{path}: sample {key!r}"
        streams = {}
        for m in ("music", "motion"):
            if f"{m}.npy" in sample:
                arr = _check_npy(where, f"{m}.npy", sample[f"{m}.npy"], manifest, problems)
                if arr is not None:
                    streams[m] = arr
        unknown = set(sample) - {"json", "music.npy", "motion.npy"}
        if unknown:
            problems.append(f"{where}: unexpected members {sorted(unknown)}")
        if "music.npy" not in sample and "motion.npy" not in sample:
            problems.append(f"{where}: neither music.npy nor motion.npy")
            continue
        if "music" in streams and "motion" in streams and streams["music"].shape[1] != streams["motion"].shape[1]:
            problems.append(f"{where}: paired lengths differ (music T={streams['music'].shape[1]}, motion T={streams['motion'].shape[1]})")
        try:
            meta = json.loads(sample.get("json", b"").decode("utf-8"))
        except (ValueError, TypeError, AttributeError) as exn:
            problems.append(f"{where}: json missing or unreadable ({exn!r})")
        else:
            present = [m for m in ("music", "motion") if f"{m}.npy" in sample]
            try:
                check_captions(key, meta.get("captions", {}) if isinstance(meta, dict) else None, present)
            except ValueError as exn:
                problems.append(f"{path}: {exn}")
        kinds[kind_of("music.npy" in sample, "motion.npy" in sample)] += 1
    return len(members), kinds


def _check_npy(where: str, field: str, data: bytes, manifest: Manifest, problems: list[str]) -> np.ndarray | None:
    try:
        arr = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError, SyntaxError) as exn:
        problems.append(f"{where}, {field}: not a decodable .npy ({exn})")
        return None
    bad = []
    if arr.dtype != np.int16:
        bad.append(f"dtype {arr.dtype} (expected int16)")
    if arr.ndim != 2 or arr.shape[0] != manifest.num_codebooks or arr.shape[1] == 0:
        bad.append(f"shape {list(arr.shape)} (expected [{manifest.num_codebooks}, T > 0])")
    elif arr.dtype.kind in "iu" and (arr.min() < 0 or arr.max() >= manifest.codebook_size):
        bad.append(f"values {arr.min()}..{arr.max()} (expected 0..{manifest.codebook_size - 1})")
    if bad:
        problems.append(f"{where}, {field}: {'; '.join(bad)}")
        return None
    return arr
