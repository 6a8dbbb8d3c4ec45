#!/bin/bash
# Submit the training chain: stage 1 (slurm/motion_only.sh) -> stage 2 (slurm/joint.sh)
# [-> stage 3 (slurm/caption.sh)]. Each job waits for the previous one to COMPLETE
# (--dependency=afterok: a job that requeues itself after preemption counts once it finally
# completes) and starts from its export (train.py's default --init-from RUNS_ROOT/stage{N-1}/export).
# A stage that fails cancels the rest (--kill-on-invalid-dep=yes) instead of leaving them pending.
#
# Usage (from the repository root, with the training environment active):
#   slurm/pipeline.sh [--stages 1,2] [--after JOBID] [--sbatch "SBATCH OPTIONS"] [-- TRAIN.PY OPTIONS]
#
#   slurm/pipeline.sh                                         # stages 1 and 2 with the scripts' #SBATCH defaults
#   DATA_DIR=data/shards RUNS_ROOT=runs/exp1 slurm/pipeline.sh --sbatch "--nodes=2 --partition=gpu" -- --save-every 500
#   STAGE1_ARGS="--max-steps 5000" STAGE2_ARGS="--max-steps 20000" slurm/pipeline.sh
#   STAGES=1,2,3 slurm/pipeline.sh                            # also stage 3 (captioning), from stage 2's export
#   slurm/pipeline.sh --after 1234                            # start after job 1234 (e.g. slurm/prep.sh's merge job)
#   slurm/pipeline.sh --sbatch "--gpus-per-node=0 --cpus-per-task=2" -- --crop-frames 48   # CPU-only cluster
#
# Options:
#   --stages LIST   stages to chain, ascending (default: $STAGES, else 1,2). Stage 3 (captioning) is
#                   optional, off by default: STAGES=1,2,3 (or --stages 1,2,3) adds slurm/caption.sh.
#                   A stage train.py does not define is refused (its own check) and nothing is submitted.
#   --after JOBID   the first job also waits for JOBID (afterok).
#   --sbatch OPTS   sbatch options for every job (they override the scripts' #SBATCH lines).
#   -- ARGS         train.py options for every stage; STAGE1_ARGS, STAGE2_ARGS, STAGE3_ARGS (split on
#                   spaces) add options to one stage (they come last, so they win). --init-from and
#                   --preset belong to the first stage's STAGE<N>_ARGS only; the stages must follow each
#                   other (1,2 / 2,3 / 1,2,3), each starting from the export before it.
# The environment (DATA_DIR, RUNS_ROOT, DS_CONFIG, TRAIN_ARGS, MAX_RESTARTS, ...; see slurm/common.sh)
# goes to every job. Job output: logs/<job name>-<job id>.out (appended across requeues).
# Prints one line per job, "stage N: job JOBID (slurm/SCRIPT)".

set -euo pipefail

usage() { sed -n '2,/^$/p' "$0" | sed -n 's/^# \{0,1\}//p'; }
die() { echo "slurm/pipeline.sh: $*" >&2; exit 2; }

STAGE_LIST="${STAGES:-1,2}"
AFTER=""
SBATCH_OPTS=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --stages) STAGE_LIST="${2:?--stages needs a list, e.g. 1,2}"; shift 2 ;;
        --after) AFTER="${2:?--after needs a job id}"; shift 2 ;;
        --sbatch) SBATCH_OPTS="${2?--sbatch needs options in one string}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) die "unknown option '$1' (train.py options go after --; see --help)" ;;
    esac
done
COMMON_ARGS=("$@")
for arg in "$@" ${TRAIN_ARGS:-} ${STAGE1_ARGS:-} ${STAGE2_ARGS:-} ${STAGE3_ARGS:-}; do
    case "$arg" in
        --runs-root|--runs-root=*|--output-dir|--output-dir=*)
            die "$arg in the train.py options: set RUNS_ROOT instead (stage N writes RUNS_ROOT/stageN and starts from RUNS_ROOT/stage{N-1}/export)" ;;
    esac
done

MUMO_REPO="${MUMO_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cd "$MUMO_REPO"
command -v sbatch >/dev/null || die "sbatch not found: run this on a Slurm login node (or export SLURM_CONF for a local test cluster)"
[[ -z "${RUN_DIR:-}" ]] || die "RUN_DIR is set ($RUN_DIR) but every stage needs its own run folder: unset it and set RUNS_ROOT (stage N writes RUNS_ROOT/stageN)"
[[ -z "$AFTER" || "$AFTER" =~ ^[0-9]+(_[0-9]+)?$ ]] || die "--after needs a job id, got '$AFTER'"

declare -A SCRIPT=([1]=motion_only.sh [2]=joint.sh [3]=caption.sh)
IFS=', ' read -r -a LIST <<<"$STAGE_LIST"
((${#LIST[@]})) || die "--stages is empty"
prev=0
for s in "${LIST[@]}"; do
    [[ -n "${SCRIPT[$s]:-}" ]] || die "unknown stage '$s' in '$STAGE_LIST' (stages: 1 motion, 2 joint, 3 caption)"
    ((s > prev)) || die "stages must be ascending: '$STAGE_LIST'"
    ((prev == 0 || s == prev + 1)) || die "stages must follow each other: in '$STAGE_LIST', stage $s would start from" \
        "RUNS_ROOT/stage$((s - 1))/export, which this chain does not make (run stage $((s - 1)) too, or start the chain at $s)"
    prev=$s
done
# Where a stage starts is the chain's business: the first from train.py's default or STAGE<first>_ARGS, each later one
# from the export before it. --init-from or --preset given to every stage, or to a later one, would break that.
first="${LIST[0]}"
later_args=()
for s in "${LIST[@]:1}"; do
    var="STAGE${s}_ARGS"
    later_args+=(${!var:-})
done
for arg in "${COMMON_ARGS[@]}" ${TRAIN_ARGS:-} "${later_args[@]}"; do
    case "$arg" in
        --init-from|--init-from=*|--preset|--preset=*)
            die "$arg for every stage (or a later one): only the first stage chooses its start; put it in STAGE${first}_ARGS" \
                "(later stages start from the export before them)" ;;
    esac
done

# train.py's own stage check, so a chain never holds a stage that cannot run.
PYTHON="${PYTHON:-python}"
if "$PYTHON" -c "import torch, mumo_ds.training.stages" >/dev/null 2>&1; then
    for s in "${LIST[@]}"; do
        if ! err="$("$PYTHON" -c "from mumo_ds.training.stages import get_stage; get_stage($s)" 2>&1)"; then
            echo "$err" | tail -n 1 >&2
            die "stage $s is not defined yet: train.py refuses --stage $s (message above). Nothing was submitted; drop $s from --stages/STAGES."
        fi
    done
else
    echo "slurm/pipeline.sh: note: $PYTHON cannot import mumo_ds here, so the stages are checked in the jobs" >&2
fi

mkdir -p logs  # the scripts' #SBATCH --output=logs/...; Slurm does not create folders
read -r -a SB <<<"$SBATCH_OPTS"
dep="$AFTER"
for s in "${LIST[@]}"; do
    var="STAGE${s}_ARGS"
    read -r -a stage_args <<<"${!var:-}"
    opts=(--parsable "${SB[@]}")
    [[ -n "$dep" ]] && opts+=(--dependency="afterok:$dep" --kill-on-invalid-dep=yes)
    if ! out="$(sbatch "${opts[@]}" "$MUMO_REPO/slurm/${SCRIPT[$s]}" "${COMMON_ARGS[@]}" "${stage_args[@]}" 2>&1)"; then
        echo "$out" >&2
        die "sbatch of stage $s (slurm/${SCRIPT[$s]}) failed (message above)${dep:+; the jobs already submitted wait on it: scancel them}"
    fi
    dep="${out%%;*}"  # --parsable prints "jobid" or "jobid;cluster"
    echo "stage $s: job $dep (slurm/${SCRIPT[$s]})"
done
echo "slurm/pipeline.sh: follow with: squeue -j ${dep} ; output in logs/mumo-*-<jobid>.out" >&2
