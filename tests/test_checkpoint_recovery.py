"""Recovery on 2 CPU ranks: kill -9 between checkpoints, a crash inside a save, and a preemption signal.

Every interrupted run is restarted with the same command line (no --resume: resuming is the default)
and must reproduce the uninterrupted run's losses bit for bit (fp32). One uninterrupted run serves all
tests. Faults come from MUMO_FAULT (mumo_ds/training/faults.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mumo_ds.training import checkpoint
from mumo_ds.training.faults import FAULT_EXIT_CODE
from mumo_ds.training.preemption import MARKER, PREEMPTED_EXIT_CODE
from tests.test_training import BIN, REPO, free_port, losses, sample_data  # noqa: F401  (fixture)

STEPS = 6
ARGS = ["--stage", "2", "--init-from", "scratch", "--ds-config", "ds_configs/zero2.json", "--max-steps", str(STEPS),
        "--crop-frames", "48", "--micro-batch-size", "2", "--lr", "3e-3", "--warmup-steps", "1",
        "--save-every", "2", "--keep-last", "1", "--keep-every", "4"]


def launch(data: Path, runs: Path, fault: str = "") -> tuple[subprocess.Popen, Path]:
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / f"launch{len(list(runs.glob('launch*.log')))}.log"
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
           "train.py", *ARGS, "--data", str(data), "--runs-root", str(runs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "MUMO_FAULT": fault}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def finish(proc: subprocess.Popen, log: Path, expect_rc: int = 0) -> str:
    try:
        rc = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    text = log.read_text()
    assert rc == expect_rc, f"exit {rc}, expected {expect_rc}:\n{text[-6000:]}"
    return text


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    path = run / "logs" / "metrics.jsonl"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.is_file() and any(json.loads(line)["step"] == step for line in path.read_text().splitlines() if line):
            return
        assert proc.poll() is None, f"run ended (rc {proc.returncode}) before logging step {step}"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError(f"step {step} not logged within {timeout} s")


def committed_steps(run: Path) -> list[int]:
    return [s for s, _ in checkpoint.committed(run / "checkpoints")]


@pytest.fixture(scope="module")
def uninterrupted(sample_data, tmp_path_factory) -> list[float]:  # noqa: F811
    runs = tmp_path_factory.mktemp("full")
    finish(*launch(sample_data, runs))
    run = runs / "stage2"
    assert committed_steps(run) == [4, 6]  # keep the newest 1 plus multiples of 4; step 2 was pruned
    assert (run / "checkpoints" / "latest").read_text() == "step00000006"
    assert not list((run / "checkpoints").glob("*.tmp"))
    result = losses(run)
    assert [json.loads(x)["step"] for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()] == list(range(1, 7))
    return result


def test_pruning_keeps_the_newest_and_every_nth():
    assert checkpoint.to_delete([2, 4, 6, 8, 10], keep_last=2, keep_every=4) == [2, 6]
    assert checkpoint.to_delete([2, 4, 6], keep_last=0, keep_every=0) == []
    assert checkpoint.to_delete([2, 4, 6], keep_last=1, keep_every=0) == [2, 4]


def test_rank_state_restores_every_rng_and_the_data_position(tmp_path):
    import random

    import numpy as np
    import torch

    class Loader:
        position = {"draws": 7}

        def state_dict(self):
            return dict(self.position)

        def load_state_dict(self, state):
            self.position = state

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    (tmp_path / "rank_state1.json").write_text(json.dumps(checkpoint.rank_state(Loader())))
    draws = lambda: (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: E731
    expected = draws()
    loader = Loader()
    loader.position = {}
    checkpoint.restore_rank_state(tmp_path, 1, loader)
    assert draws() == expected and loader.position == {"draws": 7}
    with pytest.raises(FileNotFoundError, match=r"rank_state0.json: missing, the checkpoint holds \['rank_state1.json'\]"):
        checkpoint.restore_rank_state(tmp_path, 0, loader)


def test_no_resume_refuses_a_run_folder_with_checkpoints(tmp_path):
    from mumo_ds.training.config import parse_config
    from mumo_ds.training.trainer import resume_point

    (tmp_path / "checkpoints" / "step00000002").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step00000004.tmp").mkdir()  # incomplete: never chosen
    cfg = parse_config(["--stage", "2", "--output-dir", str(tmp_path), "--no-resume"])
    assert resume_point(cfg) is None  # no meta.json: not committed, so nothing to protect
    (tmp_path / "checkpoints" / "step00000002" / "meta.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"checkpoints: holds checkpoints up to step 2; drop --no-resume"):
        resume_point(cfg)
    cfg.overwrite = True
    assert resume_point(cfg) is None
    cfg.resume = True
    assert resume_point(cfg) == (2, "step00000002")


def test_resume_refuses_a_checkpoint_of_a_run_with_other_settings(tmp_path):
    run = {"stage": 2, "zero_stage": 2, "world_size": 2, "micro_batch": 2, "grad_accum": 1}
    (tmp_path / "step00000002").mkdir()
    (tmp_path / "step00000002" / "meta.json").write_text(json.dumps({"step": 2, **run, "stage": 1, "zero_stage": 3}))
    with pytest.raises(checkpoint.ResumeError, match=r"step00000002: saved by a run with stage 1 \(now 2\), zero_stage 3 "
                       r"\(now 2\); resume it with the same settings, or start over with --no-resume --overwrite"):
        checkpoint.check_same_run(tmp_path, "step00000002", run)
    (tmp_path / "step00000002" / "meta.json").write_text(json.dumps({"step": 2, "stage": 2}))  # an older checkpoint
    checkpoint.check_same_run(tmp_path, "step00000002", run)


def test_resume_refuses_a_checkpoint_that_started_from_an_older_upstream_export(tmp_path):
    """Stage 1 re-run after stage 2 started: stage 2 must not quietly resume on top of the old stage-1 weights."""
    from mumo_ds.training.trainer import start_identity

    export = tmp_path / "stage1" / "export"
    export.mkdir(parents=True)
    (export / "mumo_training.json").write_text(json.dumps({"stage": 1, "step": 4, "exported_at": "2026-11-26T07:00:00Z"}))
    old = start_identity(str(export))
    assert old == "the stage 1 export of step 4 written 2026-11-26T07:00:00Z"
    assert start_identity("scratch") is None and start_identity(str(tmp_path)) is None  # nothing to compare
    (tmp_path / "step00000002").mkdir()
    (tmp_path / "step00000002" / "meta.json").write_text(json.dumps({"step": 2, "stage": 2, "start": old}))
    checkpoint.check_same_run(tmp_path, "step00000002", {"stage": 2, "start": old})
    (export / "mumo_training.json").write_text(json.dumps({"stage": 1, "step": 4, "exported_at": "2026-11-26T08:00:00Z"}))
    with pytest.raises(checkpoint.ResumeError, match=r"start the stage 1 export of step 4 written 2026-11-26T07:00:00Z "
                       r"\(now the stage 1 export of step 4 written 2026-11-26T08:00:00Z\)"):
        checkpoint.check_same_run(tmp_path, "step00000002", {"stage": 2, "start": start_identity(str(export))})


@pytest.mark.distributed
def test_kill_9_between_checkpoints_then_restart_reproduces_the_losses(sample_data, tmp_path, uninterrupted):  # noqa: F811
    proc, _ = launch(sample_data, tmp_path, fault="pause_after_step:3:120")
    run = tmp_path / "stage2"
    wait_for_step(run, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job: launcher and both ranks, no chance to clean up
    proc.wait()
    assert committed_steps(run) == [2]
    text = finish(*launch(sample_data, tmp_path))  # same command line: resumes by itself
    assert "resumed from step 2" in text
    assert losses(run) == uninterrupted  # steps 1-2 first run, 3-6 after the restart; step 3 re-logged once


@pytest.mark.distributed
def test_crash_inside_a_save_leaves_the_previous_checkpoint(sample_data, tmp_path, uninterrupted):  # noqa: F811
    proc, log = launch(sample_data, tmp_path, fault="exit_in_save:4")
    finish(proc, log, expect_rc=1)  # torchrun reports the failed rank as 1
    run = tmp_path / "stage2"
    ckpt = run / "checkpoints"
    assert f"exitcode  : {FAULT_EXIT_CODE}" in log.read_text()
    assert committed_steps(run) == [2] and (ckpt / "latest").read_text() == "step00000002"
    assert list((ckpt / "step00000004.tmp").glob("*optim_states.pt"))  # DeepSpeed had written its files
    text = finish(*launch(sample_data, tmp_path))
    assert "resumed from step 2" in text
    assert committed_steps(run) == [4, 6] and not list(ckpt.glob("*.tmp"))
    assert losses(run) == uninterrupted
    meta = checkpoint.read_meta(ckpt, "step00000006")  # what a resume compares
    assert {k: meta[k] for k in ("stage", "zero_stage", "world_size", "micro_batch", "grad_accum")} == {
        "stage": 2, "zero_stage": 2, "world_size": 2, "micro_batch": 2, "grad_accum": 1}


@pytest.mark.distributed
def test_sigusr1_on_one_rank_checkpoints_all_and_exits_for_requeue(sample_data, tmp_path, uninterrupted):  # noqa: F811
    proc, log = launch(sample_data, tmp_path, fault="pause_after_step:3:5")
    run = tmp_path / "stage2"
    wait_for_step(run, 3, proc)
    rank1 = [pid for pid in _children(proc.pid) if _env(pid).get("RANK") == "1"]
    assert len(rank1) == 1, rank1
    os.kill(rank1[0], signal.SIGUSR1)
    finish(proc, log, expect_rc=1)  # torchrun: 1; the ranks' own code is in its report (deepspeed passes it on)
    text = log.read_text()
    assert f"exitcode  : {PREEMPTED_EXIT_CODE}" in text and "preempted" in text
    marker = json.loads((run / MARKER).read_text())
    assert 3 <= marker["step"] < STEPS and marker["step"] in committed_steps(run), marker
    text = finish(*launch(sample_data, tmp_path))
    assert f"resumed from step {marker['step']}" in text and not (run / MARKER).exists()
    assert losses(run) == uninterrupted


@pytest.mark.distributed
def test_a_signal_during_start_up_exits_for_requeue(sample_data, tmp_path):  # noqa: F811
    proc, log = launch(sample_data, tmp_path, fault="signal_at_start")
    finish(proc, log, expect_rc=1)  # torchrun: 1, the ranks 42
    run = tmp_path / "stage2"
    assert f"exitcode  : {PREEMPTED_EXIT_CODE}" in log.read_text()
    assert json.loads((run / MARKER).read_text()) == {"step": 0, "checkpoint": None, "exit_code": PREEMPTED_EXIT_CODE}
    assert committed_steps(run) == []


def test_the_preemption_handlers_come_before_torch_is_imported():
    """train.py installs them first: importing torch and DeepSpeed takes seconds (more on a shared filesystem), and a
    scheduler's signal in that window would otherwise kill the ranks without a requeue marker."""
    code = "import sys; import mumo_ds.training.preemption; print(sorted({'torch', 'deepspeed'} & set(sys.modules)))"
    proc = subprocess.run([str(BIN / "python"), "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    text = (REPO / "train.py").read_text()
    assert text.index("Preemption()") < text.index("mumo_ds.training.trainer import")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
