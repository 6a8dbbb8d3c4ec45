"""The Slurm scripts (slurm/) on a real one-node Slurm: the 1 -> 2 pipeline, preemption + requeue, refusals.

A session fixture starts slurmctld + slurmd + munged with tests/slurm/start_cluster.sh (installing the
Debian packages when missing, as root) on free ports, and stops them with tests/slurm/stop_cluster.sh.
Where that cannot work (not root, no apt-get), these tests are skipped with the script's reason.
Jobs run the real scripts on CPU (`--gpus-per-node=0 --cpus-per-task=2`: 2 ranks, one thread each) on
the bundled sample shards. A failing test prints the jobs' output files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START = REPO / "tests" / "slurm" / "start_cluster.sh"
STOP = REPO / "tests" / "slurm" / "stop_cluster.sh"
SKIP_EXIT = 77  # start_cluster.sh: this machine cannot run a cluster
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
STEPS = 6
# the same options for the pipeline's stage 2 and the preempted joint.sh run, so their losses must agree
TRAIN = ["--max-steps", str(STEPS), "--crop-frames", "48", "--micro-batch-size", "2", "--lr", "3e-3", "--warmup-steps", "1"]
CPU_SBATCH = ["--gpus-per-node=0", "--cpus-per-task=2", "--time=10"]

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, state: Path, env: dict[str, str]):
        self.state, self.env = state, env

    def run(self, *cmd: str, check: bool = True, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=REPO, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def job(self, job_id: str) -> dict[str, str]:
        text = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait(self, job_ids: list[str], logs: Path, timeout: float = 240) -> dict[str, dict[str, str]]:
        """Wait until every job is in a final state; on timeout cancel them and fail with their output."""
        end = time.monotonic() + timeout
        while True:
            info = {j: self.job(j) for j in job_ids}
            if all(i.get("JobState") in TERMINAL for i in info.values()):
                return info
            if time.monotonic() > end:
                self.run("scancel", *job_ids, check=False)
                pytest.fail(f"jobs {job_ids} not done after {timeout} s: {_states(info)}\n{job_output(logs)}")
            time.sleep(1)


def _states(info: dict[str, dict[str, str]]) -> str:
    return ", ".join(f"{j}: {i.get('JobState')} exit {i.get('ExitCode')} restarts {i.get('Restarts')}" for j, i in info.items())


def job_output(logs: Path) -> str:
    parts = []
    for path in sorted(logs.glob("*.out")):
        parts.append(f"---- {path.name}\n{path.read_text(errors='replace')[-8000:]}")
    return "\n".join(parts) or f"(no job output files in {logs})"


@pytest.fixture(scope="session")
def slurm() -> Cluster:
    if not shutil.which("bash"):
        pytest.skip("no bash")
    state = Path(tempfile.mkdtemp(prefix="mumo-slurm-"))
    env = {**os.environ, "SLURM_LOCAL_CTLD_PORT": str(_free_port()), "SLURM_LOCAL_SLURMD_PORT": str(_free_port())}
    proc = subprocess.run(["bash", str(START), str(state)], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode == SKIP_EXIT:
        pytest.skip(f"no Slurm cluster: {proc.stderr.strip().splitlines()[-1]}")
    if proc.returncode != 0:
        subprocess.run(["bash", str(STOP), str(state)], capture_output=True, timeout=60)
        pytest.fail(f"tests/slurm/start_cluster.sh failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    env = {
        **os.environ,
        "SLURM_CONF": str(state / "slurm.conf"),
        "PATH": f"{Path(sys.executable).parent}:/usr/sbin:{os.environ.get('PATH', '')}",  # the jobs use this Python
        "MUMO_FAULT": "",
    }
    for var in ("RUN_DIR", "RUNS_ROOT", "DATA_DIR", "DS_CONFIG", "TRAIN_ARGS", "STAGES", "MAX_RESTARTS", "NPROC_PER_NODE"):
        env.pop(var, None)
    yield Cluster(state, env)
    stop = subprocess.run(["bash", str(STOP), str(state)], capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, f"tests/slurm/stop_cluster.sh failed:\n{stop.stdout}\n{stop.stderr}"
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("slurm_data") / "sample"
    subprocess.run([sys.executable, "-m", "data_prep.make_sample_shards", "--out", str(out)], cwd=REPO, check=True,
                   capture_output=True, timeout=300)
    return out


def metrics(run: Path) -> dict[int, dict]:
    """step -> logged metrics (a step logged twice, before and after a resume, keeps the last)."""
    rows = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r for r in rows}


@pytest.fixture(scope="module")
def pipeline(slurm, shards, tmp_path_factory):
    """slurm/pipeline.sh on CPU: stage 1 -> stage 2 (afterok), both to completion."""
    tmp = tmp_path_factory.mktemp("slurm_pipeline")
    runs, logs = tmp / "runs", tmp / "logs"
    logs.mkdir()
    proc = slurm.run(
        "slurm/pipeline.sh", "--sbatch", " ".join([*CPU_SBATCH, f"--output={logs}/%x-%j.out"]), "--", *TRAIN,
        env={"RUNS_ROOT": str(runs), "DATA_DIR": str(shards)},
    )
    jobs = dict(re.findall(r"^stage (\d): job (\d+)", proc.stdout, re.M))
    assert sorted(jobs) == ["1", "2"], proc.stdout + proc.stderr
    info = slurm.wait([jobs["1"], jobs["2"]], logs)
    return {"runs": runs, "logs": logs, "jobs": jobs, "info": info, "stdout": proc.stdout}


def test_pipeline_runs_stage1_then_stage2_from_its_export(pipeline):
    jobs, info, logs, runs = pipeline["jobs"], pipeline["info"], pipeline["logs"], pipeline["runs"]
    out = job_output(logs)
    assert info[jobs["1"]]["JobState"] == "COMPLETED" and info[jobs["2"]]["JobState"] == "COMPLETED", f"{_states(info)}\n{out}"
    assert info[jobs["2"]]["StartTime"] >= info[jobs["1"]]["EndTime"], _states(info)  # afterok: 2 waited for 1
    for stage in (1, 2):
        assert (runs / f"stage{stage}" / "export" / "config.json").is_file(), out
        assert sorted(metrics(runs / f"stage{stage}")) == list(range(1, STEPS + 1)), out
    stage2_log = next(logs.glob(f"*-{jobs['2']}.out")).read_text()
    assert f"start {runs}/stage1/export" in stage2_log, stage2_log[-4000:]  # started from stage 1's export
    assert "1 node(s) [" in stage2_log and "x 2 process(es) (cpu)" in stage2_log
    assert "--node_rank $SLURM_NODEID --nnodes 1 --nproc_per_node 2" in stage2_log


def test_usr1_checkpoints_requeues_resumes_and_matches_the_uninterrupted_run(slurm, shards, pipeline, tmp_path):
    logs, run = tmp_path / "logs", tmp_path / "stage2_preempted"
    logs.mkdir()
    # same start (the pipeline's stage-1 export) and options as the pipeline's stage 2; a pause after
    # step 3 gives a window for the signal (it wakes early when the signal arrives)
    env = {"RUNS_ROOT": str(pipeline["runs"]), "RUN_DIR": str(run), "DATA_DIR": str(shards),
           "MUMO_FAULT": "pause_after_step:3:90"}
    job = slurm.run("sbatch", "--parsable", *CPU_SBATCH, f"--output={logs}/%x-%j.out", "slurm/joint.sh", *TRAIN,
                    env=env).stdout.strip().split(";")[0]
    end = time.monotonic() + 180
    while not ((run / "logs" / "metrics.jsonl").is_file() and 3 in metrics(run)):
        state = slurm.job(job).get("JobState")
        if state in TERMINAL or time.monotonic() > end:
            slurm.run("scancel", job, check=False)
            pytest.fail(f"job {job} ({state}) never logged step 3\n{job_output(logs)}")
        time.sleep(0.5)
    slurm.run("scancel", "--signal=USR1", "--batch", job)
    info = slurm.wait([job], logs)[job]
    out = job_output(logs)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{_states({job: info})}\n{out}"
    assert "got SIGUSR1: forwarding SIGUSR1" in out and "training was preempted" in out, out
    assert f"requeueing job {job} (restart 1 of at most 3)" in out, out
    assert "resumed from step 3" in out and "stage 2 finished" in out, out
    assert not (run / "preempted.json").exists()
    assert (run / "export" / "config.json").is_file(), out
    got, want = metrics(run), metrics(pipeline["runs"] / "stage2")
    assert sorted(got) == list(range(1, STEPS + 1)), out
    assert [got[s]["loss"] for s in got] == [want[s]["loss"] for s in want], (got, want)  # bit-exact (fp32)


def test_a_real_failure_is_not_requeued(slurm, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {"RUNS_ROOT": str(tmp_path / "runs"), "DATA_DIR": str(tmp_path / "no_such_data")}
    job = slurm.run("sbatch", "--parsable", *CPU_SBATCH, f"--output={logs}/%x-%j.out", "slurm/motion_only.sh",
                    "--max-steps", "2", env=env).stdout.strip().split(";")[0]
    info = slurm.wait([job], logs, timeout=180)[job]
    out = job_output(logs)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", f"{_states({job: info})}\n{out}"
    assert "a real error, so the job is not requeued" in out and "requeueing" not in out, out


def _stage3_defined(slurm) -> bool:
    return slurm.run(sys.executable, "-c", "from mumo_ds.training.stages import STAGES; print(3 in STAGES)").stdout.strip() == "True"


def test_stage3_is_refused_clearly_until_it_exists(slurm, tmp_path):
    if _stage3_defined(slurm):
        pytest.skip("stage 3 is defined now: add it to the pipeline test (STAGES=1,2,3)")
    before = slurm.run("squeue", "-h", "-o", "%i").stdout.split()
    proc = slurm.run("slurm/pipeline.sh", "--stages", "1,2,3", check=False, env={"RUNS_ROOT": str(tmp_path / "runs")})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "stage 3 is not defined yet" in proc.stderr and "--stage 3: no such stage" in proc.stderr, proc.stderr
    assert "Nothing was submitted" in proc.stderr and not proc.stdout.strip()
    assert slurm.run("squeue", "-h", "-o", "%i").stdout.split() == before

    # caption.sh submitted on its own fails at once, with train.py's message, before starting torchrun
    logs = tmp_path / "logs"
    logs.mkdir()
    job = slurm.run("sbatch", "--parsable", *CPU_SBATCH, f"--output={logs}/%x-%j.out", "slurm/caption.sh",
                    env={"RUNS_ROOT": str(tmp_path / "runs")}).stdout.strip().split(";")[0]
    info = slurm.wait([job], logs, timeout=120)[job]
    out = job_output(logs)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", f"{_states({job: info})}\n{out}"
    assert "stage 3 is not defined yet" in out and "--stage 3: no such stage" in out, out
    assert "torch.distributed.run" not in out, out
