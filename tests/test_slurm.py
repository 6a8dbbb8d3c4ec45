"""The Slurm scripts (slurm/) on a real Slurm: the 1 -> 2 -> 3 pipeline, a 2-node run preempted and requeued, failures.

A session fixture starts slurmctld + munged + two slurmd with tests/slurm/start_cluster.sh (installing
the Debian packages when missing, as root) on free ports: the machine's own node and one emulated node
(a second slurmd on this machine), so `sbatch --nodes=2` really starts one srun task per node, each a
torchrun with its own --node_rank. tests/slurm/stop_cluster.sh stops them. Where a cluster cannot start
(not root, no apt-get) these tests are skipped with the script's reason.
Jobs run the real scripts on CPU (`--gpus-per-node=0 --cpus-per-task=2`; 2 ranks in all, one thread
each) on the bundled sample shards. A failing test prints the jobs' output files.
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


def job_output(logs: Path, tail: int | None = 8000) -> str:
    """The jobs' output files (each cut to its last `tail` characters, for failure messages)."""
    parts = []
    for path in sorted(logs.glob("*.out")):
        text = path.read_text(errors="replace")
        parts.append(f"---- {path.name}\n{text[-tail:] if tail else text}")
    return "\n".join(parts) or f"(no job output files in {logs})"


class Output(str):
    """A job's whole output; shows only its end when an assertion prints it."""

    def __repr__(self) -> str:
        return "\n" + self[-8000:]


@pytest.fixture(scope="session")
def slurm() -> Cluster:
    if not shutil.which("bash"):
        pytest.skip("no bash")
    state = Path(tempfile.mkdtemp(prefix="mumo-slurm-"))
    env = {**os.environ, "SLURM_LOCAL_CTLD_PORT": str(_free_port()), "SLURM_LOCAL_SLURMD_PORT": str(_free_port()),
           "SLURM_LOCAL_NODES": "2"}
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
    """slurm/pipeline.sh on CPU with STAGES=1,2,3: stage 1 -> 2 -> 3 (afterok), all to completion."""
    tmp = tmp_path_factory.mktemp("slurm_pipeline")
    runs, logs = tmp / "runs", tmp / "logs"
    logs.mkdir()
    proc = slurm.run(
        "slurm/pipeline.sh", "--sbatch", " ".join([*CPU_SBATCH, f"--output={logs}/%x-%j.out"]), "--", *TRAIN,
        env={"RUNS_ROOT": str(runs), "DATA_DIR": str(shards), "STAGES": "1,2,3", "STAGE3_ARGS": "--max-steps 2"},
    )
    jobs = dict(re.findall(r"^stage (\d): job (\d+)", proc.stdout, re.M))
    assert sorted(jobs) == ["1", "2", "3"], proc.stdout + proc.stderr
    info = slurm.wait([jobs["1"], jobs["2"], jobs["3"]], logs, timeout=300)
    return {"runs": runs, "logs": logs, "jobs": jobs, "info": info, "stdout": proc.stdout}


@pytest.mark.distributed
def test_pipeline_runs_stage_1_then_2_then_3_each_from_the_previous_export(pipeline):
    jobs, info, logs, runs = pipeline["jobs"], pipeline["info"], pipeline["logs"], pipeline["runs"]
    out = Output(job_output(logs, tail=None))
    assert all(info[jobs[s]]["JobState"] == "COMPLETED" for s in "123"), f"{_states(info)}\n{out[-8000:]}"
    for prev, stage in (("1", "2"), ("2", "3")):
        assert info[jobs[stage]]["StartTime"] >= info[jobs[prev]]["EndTime"], _states(info)  # afterok
    for stage, steps in ((1, STEPS), (2, STEPS), (3, 2)):
        assert (runs / f"stage{stage}" / "export" / "config.json").is_file(), out[-8000:]
        assert sorted(metrics(runs / f"stage{stage}")) == list(range(1, steps + 1)), out[-8000:]
    for stage in (2, 3):  # each started from the previous stage's export
        log = next(logs.glob(f"*-{jobs[str(stage)]}.out")).read_text()
        assert f"start {runs}/stage{stage - 1}/export" in log, log[-8000:]
        assert "1 node(s) [" in log and "x 2 process(es) (cpu)" in log, log[-8000:]
        assert "--node_rank $SLURM_NODEID --nnodes 1 --nproc_per_node 2" in log, log[-8000:]
    assert json.loads((runs / "stage3" / "export" / "config.json").read_text())["captioning"] is True


@pytest.mark.distributed
def test_two_nodes_usr1_checkpoint_requeue_resume_match_the_one_node_run(slurm, shards, pipeline, tmp_path):
    """joint.sh on 2 nodes x 1 rank, USR1 after step 3: checkpoint, requeue, resume, and the losses of the
    pipeline's uninterrupted 1 node x 2 ranks stage 2 (same ranks, same samples), bit for bit."""
    logs, run = tmp_path / "logs", tmp_path / "stage2_preempted"
    logs.mkdir()
    # same start (the pipeline's stage-1 export) and options as the pipeline's stage 2; a pause after
    # step 3 gives a window for the signal (it wakes early when the signal arrives). The emulated
    # node's name does not resolve, so the rendezvous is given as 127.0.0.1.
    env = {"RUNS_ROOT": str(pipeline["runs"]), "RUN_DIR": str(run), "DATA_DIR": str(shards),
           "MUMO_FAULT": "pause_after_step:3:90", "CPU_PROCS_PER_NODE": "1", "MUMO_MASTER_ADDR": "127.0.0.1"}
    job = slurm.run("sbatch", "--parsable", "--nodes=2", *CPU_SBATCH, f"--output={logs}/%x-%j.out", "slurm/joint.sh",
                    *TRAIN, env=env).stdout.strip().split(";")[0]
    end = time.monotonic() + 180
    while not ((run / "logs" / "metrics.jsonl").is_file() and 3 in metrics(run)):
        state = slurm.job(job).get("JobState")
        if state in TERMINAL or time.monotonic() > end:
            slurm.run("scancel", job, check=False)
            pytest.fail(f"job {job} ({state}) never logged step 3\n{job_output(logs)}")
        time.sleep(0.5)
    slurm.run("scancel", "--signal=USR1", "--batch", job)
    info = slurm.wait([job], logs)[job]
    out = Output(job_output(logs, tail=None))
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{_states({job: info})}\n{out[-8000:]}"
    assert "2 node(s) [" in out and "x 1 process(es) (cpu)" in out and "--nnodes 2 --nproc_per_node 1" in out, out[-8000:]
    assert "got SIGUSR1: forwarding SIGUSR1" in out and "training was preempted" in out, out[-8000:]
    assert f"requeueing job {job} (restart 1 of at most 3)" in out, out[-8000:]
    assert "resumed from step 3" in out and "stage 2 finished" in out, out[-8000:]
    assert not (run / "preempted.json").exists()
    assert (run / "export" / "config.json").is_file(), out[-8000:]
    got, want = metrics(run), metrics(pipeline["runs"] / "stage2")
    assert sorted(got) == list(range(1, STEPS + 1)), out[-8000:]
    assert [got[s]["loss"] for s in got] == [want[s]["loss"] for s in want], (got, want)  # bit-exact (fp32)


@pytest.mark.distributed
def test_a_failed_stage_is_not_requeued_and_cancels_the_rest_of_the_chain(slurm, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {"RUNS_ROOT": str(tmp_path / "runs"), "DATA_DIR": str(tmp_path / "no_such_data")}
    proc = slurm.run("slurm/pipeline.sh", "--sbatch", " ".join([*CPU_SBATCH, f"--output={logs}/%x-%j.out"]),
                     "--", "--max-steps", "2", env=env)
    jobs = dict(re.findall(r"^stage (\d): job (\d+)", proc.stdout, re.M))
    info = slurm.wait([jobs["1"], jobs["2"]], logs, timeout=180)
    out = Output(job_output(logs, tail=None))
    assert info[jobs["1"]]["JobState"] == "FAILED" and info[jobs["1"]]["Restarts"] == "0", f"{_states(info)}\n{out[-8000:]}"
    assert "a real error, so the job is not requeued" in out and "requeueing" not in out, out[-8000:]
    assert info[jobs["2"]]["JobState"] == "CANCELLED", _states(info)  # --kill-on-invalid-dep=yes: not pending forever


@pytest.mark.distributed
def test_pipeline_refuses_bad_requests_before_submitting(slurm, tmp_path):
    before = slurm.run("squeue", "-h", "-o", "%i").stdout.split()
    for args, env, message in [
        (["--stages", "2,1"], {}, "stages must be ascending"),
        (["--stages", "4"], {}, "unknown stage '4'"),
        (["--stages", "1,3"], {}, "stages must follow each other: in '1,3', stage 3 would start from RUNS_ROOT/stage2"),
        (["--", "--init-from", "runs/init"], {}, "--init-from for every stage (or a later one): only the first stage"),
        ([], {"STAGE2_ARGS": "--preset small"}, "--preset for every stage (or a later one)"),
        (["--", "--output-dir", "x"], {}, "--output-dir in the train.py options: set RUNS_ROOT instead"),
        ([], {"RUN_DIR": str(tmp_path)}, "every stage needs its own run folder"),
    ]:
        proc = slurm.run("slurm/pipeline.sh", *args, check=False, env={"RUNS_ROOT": str(tmp_path / "runs"), **env})
        assert proc.returncode == 2 and message in proc.stderr and not proc.stdout, (args, proc.stdout, proc.stderr)
    assert slurm.run("squeue", "-h", "-o", "%i").stdout.split() == before


def test_the_environment_check_imports_what_the_ranks_import(tmp_path):
    """A Python with torch but no DeepSpeed passed the check (mumo_ds imports from the repository root without an
    install, and the stage table needs torch alone), then every rank crashed; no cluster needed."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("class nn:\n    Module = object\n")  # enough for the stage table
    base = sys._base_executable  # the Python this venv was made from: no DeepSpeed in it
    script = f"MUMO_REPO={REPO}; source {REPO}/slurm/common.sh; STAGE=1; PYTHON={base}; cd {REPO}; mumo_check_stage"
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "No module named 'deepspeed'" in proc.stdout, proc.stdout + proc.stderr


def test_an_undefined_stage_stops_the_job_before_launching_with_train_py_s_message(tmp_path):
    """common.sh's check (what caption.sh ran into before stage 3 existed); no cluster needed."""
    script = (f"set -euo pipefail; MUMO_REPO={REPO}; source {REPO}/slurm/common.sh; STAGE=9; cd {REPO}; "
              "mumo_python_env; echo UNREACHED")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "UNREACHED" not in proc.stdout, proc.stdout + proc.stderr
    assert "--stage 9: no such stage" in proc.stderr, proc.stderr  # train.py's own message
    assert "stage 9 is not defined yet" in proc.stderr and "nothing was started" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"SLURM_GPUS_ON_NODE": "4"}, "4 gpu unset"),
        ({"SLURM_GPUS_PER_NODE": "a100:8"}, "8 gpu unset"),
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, "2 gpu unset"),
        ({"SLURM_GPUS_PER_NODE": "0"}, "2 cpu 1"),
        ({"CPU_PROCS_PER_NODE": "3"}, "3 cpu 1"),
        ({"SLURM_GPUS_ON_NODE": "8", "NPROC_PER_NODE": "1"}, "1 gpu unset"),
    ],
)
def test_processes_per_node_follow_the_gpus_else_the_cpu_setting(env, expected):
    """common.sh's choice of --nproc_per_node (no cluster needed)."""
    script = (f"set -euo pipefail; source {REPO}/slurm/common.sh; mumo_procs_per_node; "
              'echo "$MUMO_NPROC $MUMO_DEVICE ${OMP_NUM_THREADS:-unset}"')
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLURM_", "CUDA_VISIBLE")) and k not in ("NPROC_PER_NODE", "CPU_PROCS_PER_NODE", "OMP_NUM_THREADS")}
    proc = subprocess.run(["bash", "-c", script], env={**clean, **env}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.split("\n")[0] == expected, (proc.stdout, proc.stderr)


def test_the_rendezvous_port_comes_from_the_job_id():
    script = f"set -euo pipefail; source {REPO}/slurm/common.sh; mumo_rendezvous; echo $MUMO_MASTER_ADDR $MUMO_MASTER_PORT"
    env = {**os.environ, "SLURM_JOB_ID": "123456", "SLURM_NNODES": "2", "MUMO_MASTER_ADDR": "127.0.0.1"}
    env.pop("MUMO_MASTER_PORT", None)
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert proc.stdout.split() == ["127.0.0.1", str(10000 + 123456 % 20000)], proc.stdout + proc.stderr
