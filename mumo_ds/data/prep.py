"""At-scale shard building: input records -> tokenized samples -> deterministic, resumable shards.

    records (JSONL, in order) --plan--> shard s holds a fixed list of record indices
        --task k of N: its shards, records tokenized by a process pool (imap keeps order)-->
        {split}-%06d.tar (written as .partial, renamed when complete) + a receipt per shard
        --merge: every receipt of the plan--> manifest.json + rejects.jsonl

Plan: task k of N handles records i with ``i % N == k``; its j-th shard holds its
records ``j*S .. j*S+S-1`` (S = samples per shard) and gets the global index
``offset_k + j``, where ``offset_k`` is the number of shards of tasks 0..k-1 (computable
by every task from the record count alone). So the shard a record lands in depends only
on (record index, S, N), never on worker timing, and the shard names are contiguous.
With N = 1 shard s holds records ``s*S .. s*S+S-1``. A rejected record leaves its shard
one sample short; a shard whose records are all rejected is not written (its receipt
records 0 samples) and is left out of the manifest.

Resume: each completed shard has a receipt ``.prep/{split}-%06d.json`` holding a
fingerprint of its inputs (the records, the size and mtime of their files, the codec and
motion tokenizer settings, the size and mtime of their weight files) and the shard's
sha256. A re-run skips a shard whose receipt fingerprint matches and whose tar still has
that sha256; anything else is rebuilt.

Rejects: every record that failed is listed (index, id, file, reason, message) in its
shard's receipt and, after the merge, in ``rejects.jsonl`` beside the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .format import (
    MANIFEST_NAME, Manifest, ManifestError, ShardInfo, SplitInfo, check_split, kind_of, shard_name, split_shards,
    write_json_atomic,
)
from .pairing import Record, make_sample, read_records, reject_entry
from .prep_motion import InputError
from .validate import CodesError
from .writer import PARTIAL_SUFFIX, encode_sample, file_sha256, write_shard

log = logging.getLogger(__name__)

PREP_DIR = ".prep"
REJECTS_NAME = "rejects.jsonl"
NO_CODEC = {"name": "none"}


class MergeError(RuntimeError):
    """The merge cannot write a manifest: shards of the plan are missing or stale."""


# -- plan ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PlannedShard:
    """Shard ``index`` is written by ``task`` and holds these record indices (in order)."""

    index: int
    task: int
    records: tuple[int, ...]


def plan_shards(num_records: int, samples_per_shard: int, num_tasks: int = 1) -> list[PlannedShard]:
    """Every shard of the split in index order (see the module docstring for the rule).

    ``plan_shards(7, 2, 2)``: task 0 has records 0 2 4 6 -> shards 0:(0,2) 1:(4,6);
    task 1 has 1 3 5 -> shards 2:(1,3) 3:(5,).
    """
    if samples_per_shard < 1 or num_tasks < 1:
        raise ValueError(f"samples_per_shard={samples_per_shard} and num_tasks={num_tasks} must be >= 1")
    plan, index = [], 0
    for task in range(num_tasks):
        mine = list(range(task, num_records, num_tasks))
        for j in range(0, len(mine), samples_per_shard):
            plan.append(PlannedShard(index, task, tuple(mine[j : j + samples_per_shard])))
            index += 1
    return plan


# -- settings and fingerprints ---------------------------------------------------------------
@dataclasses.dataclass
class PrepSettings:
    """Everything besides the records that decides the shards' bytes."""

    split: str
    samples_per_shard: int
    num_tasks: int = 1
    frame_rate: int = 50
    num_codebooks: int = 4
    codebook_size: int = 2048
    min_frames: int = 1
    codec: dict = dataclasses.field(default_factory=lambda: dict(NO_CODEC))
    codec_settings: dict = dataclasses.field(default_factory=dict)  # model path, chunking
    motion_tokenizer: dict = dataclasses.field(default_factory=dict)
    motion_stats: str | None = None  # sha256 of mean/std

    def __post_init__(self) -> None:
        check_split(self.split)
        for option, info in (("--codec", self.codec), ("--motion-tokenizer", self.motion_tokenizer)):
            rate = info.get("frame_rate")
            if rate is not None and rate != self.frame_rate:
                raise ValueError(
                    f"{option} {info.get('name')!r} makes {rate} frames/s, the shards' timeline is {self.frame_rate} "
                    f"(--frame-rate): both streams share one frame rate; choose a tokenizer at {self.frame_rate} "
                    "frames/s or set --frame-rate to match every tokenizer"
                )


def _file_stamp(path: str | None) -> list | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_size, st.st_mtime_ns]


def _model_stamp(path: str | None) -> list | None:
    """Size/mtime of every file of a model folder (or of one file): retrained weights at the same path count as
    new. A hub id, or a path that does not exist, stamps as itself."""
    if not path or not os.path.isdir(path):
        return _file_stamp(path)
    return [_file_stamp(str(p)) for p in sorted(Path(path).rglob("*")) if p.is_file()]


def shard_fingerprint(settings: PrepSettings, entries: list[tuple[Record | None, dict | None]]) -> str:
    """sha256 over the settings, the tokenizers' weights (size/mtime), the shard's records and the size/mtime of
    their files."""
    recs = []
    for rec, rej in entries:
        if rec is None:
            recs.append({"reject": rej})
        else:
            recs.append({"record": dataclasses.asdict(rec), "files": [_file_stamp(p) for p in rec.files()]})
    models = [_model_stamp(settings.codec_settings.get("model")), _model_stamp(settings.motion_tokenizer.get("path"))]
    blob = json.dumps({"settings": dataclasses.asdict(settings), "models": models, "records": recs}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# -- workers -----------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(state: dict, threads: int | None) -> None:
    """Process-pool initializer: keep the tokenizers (models load on first use, torch with ``threads``)."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read when torch is first imported here
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    _WORKER.clear()
    _WORKER.update(state)


def _tokenize(rec: Record) -> dict:
    """One record -> {"index", "sample": {...}} or {"index", "reject": {...}} (never raises)."""
    w = _WORKER
    try:
        sample = make_sample(
            rec, w["music_tok"], w["motion_tok"], w["mean"], w["std"], frame_rate=w["frame_rate"], min_frames=w["min_frames"]
        )
        return {"index": rec.index, "sample": sample}
    except InputError as exn:
        return {"index": rec.index, "reject": reject_entry(rec.index, rec.id, exn, line=rec.line)}
    except Exception as exn:  # noqa: BLE001 - a tokenizer bug must not stop the run; it is listed with its traceback
        log.warning("record %s (%s): unexpected error\n%s", rec.index, rec.id, traceback.format_exc())
        entry = reject_entry(rec.index, rec.id, exn, line=rec.line)
        entry.update(reason="error", message=f"{type(exn).__name__}: {exn}", file=(rec.files() or [None])[0])
        return {"index": rec.index, "reject": entry}


# -- one task ------------------------------------------------------------------------------
@dataclasses.dataclass
class TaskReport:
    """What one task did: shards written / skipped as complete, samples, rejects."""

    written: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    samples: int = 0
    rejects: int = 0


def receipt_path(out_dir: Path, split: str, index: int) -> Path:
    return out_dir / PREP_DIR / f"{shard_name(split, index)[:-4]}.json"


def _receipt_ok(out_dir: Path, receipt: dict | None, fingerprint: str) -> bool:
    if not receipt or receipt.get("fingerprint") != fingerprint:
        return False
    if receipt["num_samples"] == 0:
        return True
    tar = out_dir / receipt["name"]
    return tar.is_file() and file_sha256(tar) == receipt["sha256"]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_task(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: PrepSettings,
    *,
    music_tok=None,
    motion_tok=None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    task_id: int = 0,
    workers: int = 1,
    progress: bool = False,
) -> TaskReport:
    """Build (or resume) task ``task_id``'s shards of ``settings.split`` into ``out_dir``.

    ``workers`` > 1 tokenizes records in that many spawned processes (each with 1 torch
    thread); results are consumed in record order, so the shards are the same bytes
    for any number of workers.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if not 0 <= task_id < settings.num_tasks:
        raise ValueError(f"task_id={task_id}: must be in 0..{settings.num_tasks - 1}")
    (out_dir / PREP_DIR).mkdir(parents=True, exist_ok=True)
    input_path = Path(input_path).resolve()  # as merge reads it back from the plan: rejects name it alike in both
    entries = read_records(input_path)
    for modality, tok, option in (("music", music_tok, "--codec-model"), ("motion", motion_tok, "--motion-model")):
        if tok is None and any(rec is not None and getattr(rec, modality) for rec, _ in entries):
            raise ValueError(f"{input_path}: records have {modality} but no {modality} tokenizer is configured; pass {option}")
    has_motion = any(rec is not None and rec.motion for rec, _ in entries)
    if has_motion and motion_tok is not None and (mean is None or std is None) and getattr(motion_tok, "mean", None) is None:
        raise ValueError(f"{input_path}: records have motion but no Mean/Std to normalise it; pass --motion-mean and --motion-std")
    plan = plan_shards(len(entries), settings.samples_per_shard, settings.num_tasks)
    write_json_atomic(out_dir / PREP_DIR / f"{settings.split}-plan.json", {
        "input": str(input_path), "num_records": len(entries), "num_shards": len(plan), "settings": dataclasses.asdict(settings),
    })
    report = TaskReport()
    todo: list[tuple[PlannedShard, str]] = []
    for shard in (s for s in plan if s.task == task_id):
        fp = shard_fingerprint(settings, [entries[i] for i in shard.records])
        name = shard_name(settings.split, shard.index)
        (out_dir / (name + PARTIAL_SUFFIX)).unlink(missing_ok=True)  # left by a killed run
        if _receipt_ok(out_dir, _read_json(receipt_path(out_dir, settings.split, shard.index)), fp):
            report.skipped.append(name)
        else:
            todo.append((shard, fp))
    records = [entries[i][0] for shard, _ in todo for i in shard.records if entries[i][0] is not None]
    state = {
        "music_tok": music_tok, "motion_tok": motion_tok, "mean": mean, "std": std,
        "frame_rate": settings.frame_rate, "min_frames": settings.min_frames,
    }
    bar = tqdm(total=len(records), desc=f"{settings.split} task {task_id}", unit="rec", disable=not progress)
    with _results(records, state, workers) as results:
        for shard, fp in todo:
            samples, rejects, counts = [], [], {}
            for i in shard.records:
                rec, rej = entries[i]
                result = {"reject": rej} if rec is None else next(results)
                if rec is not None:
                    bar.update(1)
                if "sample" in result:
                    encoded, rej = _encode(result["sample"], settings, rec)
                    if encoded is not None:
                        samples.append(encoded)
                        kind = kind_of("music.npy" in encoded, "motion.npy" in encoded)
                        counts[kind] = counts.get(kind, 0) + 1
                        continue
                    result = {"reject": rej}
                rejects.append(result["reject"] | {"split": settings.split, "shard": shard.index})
            _finish_shard(out_dir, settings.split, shard, fp, samples, rejects, counts, report)
    bar.close()
    return report


def _encode(sample: dict, settings: PrepSettings, rec: Record) -> tuple[dict | None, dict | None]:
    """Format-check a tokenized sample into tar members, or turn a format error into a reject."""
    try:
        encoded = encode_sample(
            sample["key"], sample.get("music"), sample.get("motion"), sample["meta"],
            frame_rate=settings.frame_rate, num_codebooks=settings.num_codebooks, codebook_size=settings.codebook_size,
        )
        return encoded, None
    except (CodesError, ValueError) as exn:
        entry = reject_entry(rec.index, rec.id, exn, line=rec.line)
        entry["file"] = (rec.files() or [None])[0]
        return None, entry


def _finish_shard(out_dir, split, shard, fp, samples, rejects, counts, report) -> None:
    """Write the shard (atomic) and then its receipt; a shard with no samples gets only the receipt."""
    name = shard_name(split, shard.index)
    if samples:
        info = write_shard(out_dir / name, samples)
    else:
        (out_dir / name).unlink(missing_ok=True)
        info = ShardInfo(name, 0, "")
    for rej in rejects:
        log.warning("rejected record %s (%s): %s", rej["index"], rej["id"], rej["message"])
    write_json_atomic(receipt_path(out_dir, split, shard.index), {
        "name": name, "index": shard.index, "task": shard.task, "fingerprint": fp,
        "num_samples": info.num_samples, "sha256": info.sha256, "counts": counts, "rejects": rejects,
    })
    report.written.append(name)
    report.samples += info.num_samples
    report.rejects += len(rejects)


class _results:
    """Context manager yielding an iterator of ``_tokenize`` results in record order.

    A worker that dies (e.g. killed for memory) raises BrokenProcessPool instead of hanging;
    the shards finished before it stay complete, so a re-run resumes after them.
    """

    def __init__(self, records: list[Record], state: dict, workers: int):
        self.records, self.state, self.workers, self.pool = records, state, workers, None

    def __enter__(self) -> Iterator[dict]:
        if self.workers <= 1 or len(self.records) <= 1:
            _init_worker(self.state, None)
            return map(_tokenize, self.records)
        self.pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),  # never fork a process holding torch threads
            initializer=_init_worker, initargs=(self.state, 1),
        )
        return self.pool.map(_tokenize, self.records, chunksize=1)

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        _WORKER.clear()


# -- merge ---------------------------------------------------------------------------------
def merge(out_dir: str | os.PathLike, split: str) -> Manifest:
    """Check every planned shard of ``split`` is complete, then write manifest.json and rejects.jsonl.

    Other splits already in the manifest (and their rejects) are kept. Tar files of this
    split that are not in the plan (left from an earlier, larger run) are deleted.
    Raises MergeError naming the missing shards and the tasks that should have written them.
    """
    out_dir = Path(out_dir)
    check_split(split)
    plan_file = out_dir / PREP_DIR / f"{split}-plan.json"
    plan_obj = _read_json(plan_file)
    if plan_obj is None:
        raise MergeError(f"{plan_file}: no plan for split {split!r}; run build_shards for this split first")
    settings = PrepSettings(**plan_obj["settings"])
    entries = read_records(plan_obj["input"])
    plan = plan_shards(len(entries), settings.samples_per_shard, settings.num_tasks)
    info = SplitInfo()
    rejects, missing = [], []
    for shard in plan:
        receipt = _read_json(receipt_path(out_dir, split, shard.index))
        fp = shard_fingerprint(settings, [entries[i] for i in shard.records])
        tar = out_dir / shard_name(split, shard.index)
        if receipt is None or receipt.get("fingerprint") != fp or (receipt["num_samples"] and not tar.is_file()):
            missing.append(f"{shard_name(split, shard.index)} (task {shard.task})")
            continue
        rejects += receipt["rejects"]
        if receipt["num_samples"]:
            info.shards.append(ShardInfo(receipt["name"], receipt["num_samples"], receipt["sha256"]))
            info.num_samples += receipt["num_samples"]
            for kind, n in receipt["counts"].items():
                info.counts[kind] += n
    if missing:
        raise MergeError(
            f"{out_dir}: split {split!r}: {len(missing)} of {len(plan)} shards are missing or stale: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; re-run those array tasks "
            f"(build_shards --task-id K --num-tasks {settings.num_tasks}), then --merge again"
        )
    planned = {s.name for s in info.shards}
    for stale in split_shards(out_dir, split):
        if stale.name not in planned:
            stale.unlink()
    manifest = Manifest(
        codec=settings.codec, motion_tokenizer=settings.motion_tokenizer, frame_rate=settings.frame_rate,
        num_codebooks=settings.num_codebooks, codebook_size=settings.codebook_size,
    )
    manifest_path = out_dir / MANIFEST_NAME
    others = {}
    if manifest_path.exists():
        old = Manifest.load(manifest_path)
        others = {k: v for k, v in old.splits.items() if k != split}
        for field in ("codec", "motion_tokenizer", "frame_rate", "num_codebooks", "codebook_size"):
            if others and getattr(old, field) != getattr(manifest, field):
                raise ManifestError(
                    f"{manifest_path}: splits {sorted(others)} have {field}={getattr(old, field)!r}, split {split!r} "
                    f"has {field}={getattr(manifest, field)!r}; build it into another directory or rebuild the others"
                )
    manifest.splits = dict(sorted((others | {split: info}).items()))
    manifest.save(manifest_path)
    _write_rejects(out_dir / REJECTS_NAME, split, rejects)
    return manifest


def _write_rejects(path: Path, split: str, rejects: list[dict]) -> None:
    """Replace this split's lines in rejects.jsonl (others kept), atomically."""
    kept = []
    if path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line).get("split") != split]
    lines = kept + [json.dumps(r, sort_keys=True) for r in sorted(rejects, key=lambda r: r["index"])]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
