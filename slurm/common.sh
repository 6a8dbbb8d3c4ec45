# shellcheck shell=bash
# Shared launch logic of the stage scripts (slurm/motion_only.sh, joint.sh, caption.sh).
# Sourced by them after they set STAGE; not run on its own. Everything it does:
#
#   1. finds the repository (MUMO_REPO) and the Python environment, cd's to the repository root
#      (relative paths in the variables below are relative to it);
#   2. checks the stage exists (train.py's own check) before starting any process on the nodes;
#   3. starts one `srun` task per node, each running `torchrun` for that node's processes:
#        --nnodes $SLURM_NNODES --node_rank $SLURM_NODEID --nproc_per_node P
#        --master_addr <first node> --master_port <10000 + job id % 20000>
#      P = the node's GPUs (SLURM_GPUS_ON_NODE / SLURM_GPUS_PER_NODE / CUDA_VISIBLE_DEVICES), or
#      CPU_PROCS_PER_NODE (default 2) with OMP_NUM_THREADS=1 when the job has no GPU;
#   4. traps USR1 and TERM (`#SBATCH --signal=B:USR1@120`, `scancel --signal=USR1 --batch JOBID`),
#      forwards USR1 once to srun -> torchrun -> every rank, which save a checkpoint at the next step
#      and exit (mumo_ds/training/preemption.py); torchrun waits SHUTDOWN_TIMEOUT s for them;
#   5. when the run was preempted (RUN_DIR/preempted.json, or exit 42, or any exit after a signal:
#      one that came before the ranks' handlers killed them, losing nothing) requeues the job with
#      `scontrol requeue` (it resumes from the checkpoint), at most MAX_RESTARTS times; a run that
#      failed for any other reason is not requeued and the job fails with its exit code.
#
# Environment (all optional; sbatch passes the submitting shell's environment to the job):
#   DATA_DIR            shard folder (manifest.json + shards); default: train.py's (data/sample)
#   RUNS_ROOT           parent of the per-stage run folders (default runs); stage N starts from
#                       RUNS_ROOT/stage{N-1}/export unless TRAIN_ARGS has --init-from
#   RUN_DIR             this stage's run folder (default RUNS_ROOT/stageN): checkpoints, export, logs
#   DS_CONFIG           DeepSpeed JSON config (default: the stage's own, see mumo_ds/training/stages.py)
#   TRAIN_ARGS          extra train.py options, split on spaces (arguments after the script name
#                       on the sbatch command line are passed on too, and may contain spaces)
#   MAX_RESTARTS        requeues allowed after preemption (default 3; counted by SLURM_RESTART_COUNT)
#   NPROC_PER_NODE      processes per node, overriding the GPU count
#   CPU_PROCS_PER_NODE  processes per node when the job has no GPU (default 2)
#   SHUTDOWN_TIMEOUT    seconds torchrun waits for the ranks to checkpoint after a signal (default 100)
#   VENV                virtualenv to activate (default: the current one, else MUMO_REPO/.venv)
#   PYTHON              Python interpreter (default python)
#   MUMO_MASTER_ADDR    rendezvous host (default: the first node of the job)
#   MUMO_MASTER_PORT    rendezvous port (default: 10000 + SLURM_JOB_ID % 20000)

MUMO_PREEMPTED_EXIT_CODE=42  # mumo_ds.training.preemption.PREEMPTED_EXIT_CODE

mumo_log() { echo "[mumo-slurm $(date -u +%H:%M:%S)] $*"; }
mumo_die() {  # mumo_die CODE MESSAGE...
    local code="$1"
    shift
    echo "[mumo-slurm $(date -u +%H:%M:%S)] ERROR: $*" >&2
    exit "$code"
}

# Processes per node: NPROC_PER_NODE, else the GPUs Slurm gave this node, else CPU_PROCS_PER_NODE.
# Sets MUMO_NPROC and MUMO_DEVICE (gpu|cpu).
mumo_procs_per_node() {
    local gpus=""
    if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
        gpus="$SLURM_GPUS_ON_NODE"
    elif [[ -n "${SLURM_GPUS_PER_NODE:-}" ]]; then
        gpus="${SLURM_GPUS_PER_NODE##*:}"  # "8", "a100:8" or "gpu:a100:8"
    elif [[ -n "${CUDA_VISIBLE_DEVICES:-}" && "${CUDA_VISIBLE_DEVICES}" != NoDevFiles ]]; then
        gpus="$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)"
    fi
    [[ "$gpus" =~ ^[0-9]+$ ]] || gpus=0
    if ((gpus > 0)); then
        MUMO_DEVICE=gpu
        MUMO_NPROC="${NPROC_PER_NODE:-$gpus}"
    else
        MUMO_DEVICE=cpu
        MUMO_NPROC="${NPROC_PER_NODE:-${CPU_PROCS_PER_NODE:-2}}"
        export OMP_NUM_THREADS=1  # one thread per rank, or ranks on one node fight over cores
        export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
    fi
    [[ "$MUMO_NPROC" =~ ^[1-9][0-9]*$ ]] ||
        mumo_die 2 "processes per node must be a positive integer, got '$MUMO_NPROC' (NPROC_PER_NODE / CPU_PROCS_PER_NODE)"
}

# Rendezvous: the first node of the job, a port derived from the job id (the same after a requeue).
mumo_rendezvous() {
    MUMO_MASTER_ADDR="${MUMO_MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)}"
    [[ -n "$MUMO_MASTER_ADDR" ]] || mumo_die 2 "could not read the first node of '$SLURM_JOB_NODELIST' (scontrol show hostnames); set MUMO_MASTER_ADDR"
    if ! getent hosts "$MUMO_MASTER_ADDR" >/dev/null 2>&1; then
        if ((SLURM_NNODES == 1)); then
            mumo_log "node name $MUMO_MASTER_ADDR does not resolve; one node, so rendezvous on 127.0.0.1"
            MUMO_MASTER_ADDR=127.0.0.1
        else
            mumo_die 2 "node name $MUMO_MASTER_ADDR does not resolve, so the other nodes cannot reach it; set MUMO_MASTER_ADDR to its address"
        fi
    fi
    MUMO_MASTER_PORT="${MUMO_MASTER_PORT:-$((10000 + SLURM_JOB_ID % 20000))}"
}

# The Python environment and train.py's own stage check, in one interpreter start:
# VENV if set, else the active environment when it has torch and mumo_ds, else MUMO_REPO/.venv.
mumo_python_env() {
    PYTHON="${PYTHON:-python}"
    if [[ -n "${VENV:-}" ]]; then
        [[ -f "$VENV/bin/activate" ]] || mumo_die 2 "VENV=$VENV has no bin/activate; point VENV at the virtualenv with mumo_ds installed"
        # shellcheck disable=SC1091
        source "$VENV/bin/activate"
    fi
    local rc=0 out
    out="$(mumo_check_stage)" || rc=$?
    if ((rc == 3)) && [[ -z "${VENV:-}" && -f "$MUMO_REPO/.venv/bin/activate" ]]; then
        # shellcheck disable=SC1091
        source "$MUMO_REPO/.venv/bin/activate"
        rc=0
        out="$(mumo_check_stage)" || rc=$?
    fi
    if ((rc == 3)); then
        mumo_die 2 "$PYTHON ($(command -v "$PYTHON" || echo 'not found')) cannot import the training stack ($out):" \
            "activate the environment before sbatch, or set VENV=/path/to/venv (pip install -e . in it)"
    elif ((rc == 4)); then
        echo "$out" >&2
        mumo_die 2 "stage $STAGE is not defined yet: train.py refuses --stage $STAGE (message above); nothing was started"
    elif ((rc != 0)); then
        mumo_die 2 "checking stage $STAGE with $PYTHON failed: $out"
    fi
}

# Exit 3: the environment lacks torch, DeepSpeed, transformers, webdataset or mumo_ds; exit 4: train.py's stage table
# has no such stage (its own message).
mumo_check_stage() {
    "$PYTHON" - "$STAGE" 2>&1 <<'PY'
import sys
try:  # what the ranks import, not just torch: mumo_ds also imports from the repository root without any install
    import deepspeed  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import webdataset  # noqa: F401
    from mumo_ds.training.stages import get_stage
except Exception as e:
    print(f"{type(e).__name__}: {e}")
    sys.exit(3)
try:
    get_stage(int(sys.argv[1]))
except ValueError as e:
    print(e)
    sys.exit(4)
PY
}

mumo_on_signal() {  # trap handler: ask the ranks to checkpoint and exit (once)
    MUMO_SIGNAL="${MUMO_SIGNAL:-$1}"
    if [[ -n "${MUMO_LAUNCH_PID:-}" && -z "${MUMO_FORWARDED:-}" ]]; then
        MUMO_FORWARDED=1
        mumo_log "got SIG$1: forwarding SIGUSR1 to the training processes (checkpoint at the next step, then exit)"
        kill -USR1 "$MUMO_LAUNCH_PID" 2>/dev/null || true
    else
        mumo_log "got SIG$1 (already forwarded, or nothing running)"
    fi
}

# Requeue after a preemption, or fail when the restarts are spent.
mumo_requeue() {
    local restarts="${SLURM_RESTART_COUNT:-0}" max="${MAX_RESTARTS:-3}"
    if ((restarts >= max)); then
        mumo_die "$MUMO_PREEMPTED_EXIT_CODE" "preempted after $restarts requeue(s) (MAX_RESTARTS=$max): not requeued again." \
            "The checkpoint is kept; submit the same command again to continue from it (or raise MAX_RESTARTS)."
    fi
    mumo_log "requeueing job $SLURM_JOB_ID (restart $((restarts + 1)) of at most $max); the next run resumes from the checkpoint"
    trap '' USR1 TERM  # the requeue itself signals this script
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        mumo_die "$MUMO_PREEMPTED_EXIT_CODE" "scontrol requeue $SLURM_JOB_ID failed (requeue disabled on this cluster, or the job is being cancelled)." \
            "The checkpoint is kept; submit the same command again to continue from it."
    fi
    exit 0
}

# mumo_run_stage [train.py options...]: the whole job.
mumo_run_stage() {
    : "${STAGE:?the stage script must set STAGE before sourcing slurm/common.sh}"
    if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then  # the script's header comment
        sed -n '2,/^#SBATCH/p' "$MUMO_SCRIPT" | sed -e '/^#SBATCH/d' -e 's/^# \{0,1\}//'
        echo "Environment variables: see the header of $MUMO_REPO/slurm/common.sh; train.py options: python train.py --help"
        exit 0
    fi
    [[ -n "${SLURM_JOB_ID:-}" ]] ||
        mumo_die 2 "not inside a Slurm job: submit with sbatch (e.g. mkdir -p logs && sbatch $MUMO_SCRIPT), or run it in an salloc allocation"
    MUMO_SIGNAL=""
    MUMO_FORWARDED=""
    MUMO_LAUNCH_PID=""
    trap 'mumo_on_signal USR1' USR1  # from the start: a signal's default action would kill the job unsaved
    trap 'mumo_on_signal TERM' TERM
    cd "$MUMO_REPO"
    mumo_python_env

    RUNS_ROOT="${RUNS_ROOT:-runs}"
    RUN_DIR="${RUN_DIR:-$RUNS_ROOT/stage$STAGE}"
    local marker="$RUN_DIR/preempted.json"
    if [[ -f "$marker" ]]; then  # from an earlier preempted run; the trainer resumes by itself
        mumo_log "earlier run was preempted: $(cat "$marker"); resuming"
        rm -f "$marker"
    fi

    mumo_procs_per_node
    mumo_rendezvous
    local -a extra=()
    read -r -a extra <<<"${TRAIN_ARGS:-}"
    local -a train=(train.py --stage "$STAGE" --runs-root "$RUNS_ROOT" --output-dir "$RUN_DIR")
    [[ -n "${DATA_DIR:-}" ]] && train+=(--data "$DATA_DIR")
    [[ -n "${DS_CONFIG:-}" ]] && train+=(--ds-config "$DS_CONFIG")
    train+=("${extra[@]}" "$@")
    local arg
    for arg in "${extra[@]}" "$@"; do
        case "$arg" in
            --runs-root|--runs-root=*|--output-dir|--output-dir=*)
                mumo_die 2 "$arg in the train.py options: set RUNS_ROOT / RUN_DIR instead (this script needs the run folder to see preemption markers)" ;;
        esac
    done
    local -a torchrun=(
        --nnodes "$SLURM_NNODES" --nproc_per_node "$MUMO_NPROC"
        --master_addr "$MUMO_MASTER_ADDR" --master_port "$MUMO_MASTER_PORT"
        --signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1
        --shutdown-timeout "${SHUTDOWN_TIMEOUT:-100}"
    )
    local -a srun_opts=(--nodes="$SLURM_NNODES" --ntasks="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1)
    [[ -n "${SLURM_CPUS_PER_TASK:-}" ]] && srun_opts+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
    export PYTHONUNBUFFERED=1

    mumo_log "job $SLURM_JOB_ID (${SLURM_JOB_NAME:-}) run $((${SLURM_RESTART_COUNT:-0} + 1)), stage $STAGE:" \
        "$SLURM_NNODES node(s) [$SLURM_JOB_NODELIST] x $MUMO_NPROC process(es) ($MUMO_DEVICE)," \
        "rendezvous $MUMO_MASTER_ADDR:$MUMO_MASTER_PORT, run folder $RUN_DIR"
    mumo_log "per node: $PYTHON -m torch.distributed.run --node_rank \$SLURM_NODEID ${torchrun[*]} ${train[*]}"

    if [[ -n "$MUMO_SIGNAL" ]]; then  # signalled before anything started: nothing to save
        mumo_requeue
    fi
    # In the background, so the traps run while it works (bash runs a trap only between commands).
    srun "${srun_opts[@]}" bash -c 'exec "$0" -m torch.distributed.run --node_rank "$SLURM_NODEID" "$@"' \
        "$PYTHON" "${torchrun[@]}" "${train[@]}" &
    MUMO_LAUNCH_PID=$!
    local rc
    while :; do
        rc=0
        wait "$MUMO_LAUNCH_PID" || rc=$?
        # > 128 with srun still there: wait was interrupted by a trapped signal; keep waiting
        if ((rc > 128)) && kill -0 "$MUMO_LAUNCH_PID" 2>/dev/null; then
            continue
        fi
        break
    done
    MUMO_LAUNCH_PID=""

    if [[ -f "$marker" || "$rc" == "$MUMO_PREEMPTED_EXIT_CODE" ]]; then
        mumo_log "training was preempted (exit $rc; torchrun's SignalException traceback above is expected):" \
            "$(cat "$marker" 2>/dev/null || echo 'no marker')"
        mumo_requeue
    fi
    if ((rc != 0)) && [[ -n "$MUMO_SIGNAL" ]]; then
        # the signal reached the ranks before their handler (Python start-up): they died without saving, and
        # nothing was lost since the newest checkpoint; the scheduler wants the job gone anyway
        mumo_log "training ended with exit $rc after SIG$MUMO_SIGNAL and no checkpoint-and-exit marker: signalled" \
            "before it could checkpoint, so it resumes from the newest checkpoint"
        mumo_requeue
    fi
    if ((rc != 0)); then
        mumo_die "$rc" "stage $STAGE failed with exit code $rc and no checkpoint-and-exit marker ($marker):" \
            "a real error, so the job is not requeued; the output above has the traceback."
    fi
    mumo_log "stage $STAGE finished: export in $RUN_DIR/export"
}
