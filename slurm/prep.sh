#!/bin/bash
# Tokenize a JSONL of music/motion records into shards on Slurm: an array of tokenizer
# tasks, then one merge job that writes manifest.json and rejects.jsonl.
#
# Usage (on a login node; paths are relative to the repository root; PYTHON defaults to .venv/bin/python):
#   slurm/prep.sh --tasks 32 [--sbatch "--partition=gpu --time=08:00:00"] -- \
#       --input data/raw/train.jsonl --out data/shards --split train \
#       --codec-model checkpoints/encodec_32khz --motion-model checkpoints/motion_vqvae \
#       --motion-mean data/raw/Mean.npy --motion-std data/raw/Std.npy --samples-per-shard 256 --workers 4
#
# Everything after "--" goes to `python -m data_prep.build_shards`. This submits
#   1. an array job of --tasks tasks: task K runs build_shards --task-id K --num-tasks N --no-merge,
#      i.e. it tokenizes records i with i % N == K into its own, precomputed range of shard
#      indices (mumo_ds.data.prep.plan_shards), resuming shards that are already complete;
#   2. a merge job (--dependency=afterok on the array) running build_shards --merge.
# The #SBATCH lines below are defaults; --sbatch "..." options are passed to both sbatch
# calls and override them (sbatch command-line options win over #SBATCH lines).
# Re-submitting the same command after a failure redoes only the incomplete shards.
# Merge by hand:       PREP_MODE=merge slurm/prep.sh -- --out data/shards --split train
# Run one task here:   PREP_MODE=task SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_COUNT=4 slurm/prep.sh -- ...
# Checked on a local single-node Slurm 22.05 (tests/slurm/start_cluster.sh): 3 tasks + merge, then a
# re-submission after deleting one shard rebuilt only that shard.
#
#SBATCH --job-name=mumo-prep
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --output=logs/prep-%A_%a.out

set -euo pipefail

TASKS=1
SBATCH_OPTS=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tasks) TASKS="$2"; shift 2 ;;
        --sbatch) SBATCH_OPTS="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^#SBATCH/{/^#SBATCH/d;p}' "$0"; exit 0 ;;
        --) shift; break ;;
        *) echo "slurm/prep.sh: unknown option $1 (put build_shards options after --)" >&2; exit 2 ;;
    esac
done
PREP_ARGS=("$@")
MODE="${PREP_MODE:-submit}"
# Inside a job this script is Slurm's spool copy, so the repository comes from MUMO_REPO (exported
# at submission) or the submit directory; relative paths in PREP_ARGS are relative to it.
if [[ "$MODE" == submit ]]; then
    MUMO_REPO="${MUMO_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
else
    MUMO_REPO="${MUMO_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}"
fi
export MUMO_REPO
cd "$MUMO_REPO"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi

case "$MODE" in
    submit)
        if ! [[ "$TASKS" =~ ^[1-9][0-9]*$ ]]; then
            echo "slurm/prep.sh: --tasks must be a positive integer, got '$TASKS'" >&2; exit 2
        fi
        mkdir -p logs
        # shellcheck disable=SC2086 # SBATCH_OPTS is a list of options
        ARRAY_ID=$(sbatch --parsable --export=ALL,PREP_MODE=task --array=0-$((TASKS - 1)) \
            $SBATCH_OPTS "$0" -- "${PREP_ARGS[@]}")
        # shellcheck disable=SC2086
        MERGE_ID=$(sbatch --parsable --export=ALL,PREP_MODE=merge --dependency=afterok:"${ARRAY_ID%%;*}" \
            --job-name=mumo-prep-merge --array=0 $SBATCH_OPTS "$0" -- "${PREP_ARGS[@]}")
        echo "submitted tokenizer array ${ARRAY_ID} (${TASKS} tasks) and merge job ${MERGE_ID}"
        ;;
    task)
        : "${SLURM_ARRAY_TASK_ID:?task mode needs SLURM_ARRAY_TASK_ID (submit with slurm/prep.sh --tasks N)}"
        : "${SLURM_ARRAY_TASK_COUNT:?task mode needs SLURM_ARRAY_TASK_COUNT}"
        export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
        exec "$PYTHON" -m data_prep.build_shards "${PREP_ARGS[@]}" \
            --task-id "$SLURM_ARRAY_TASK_ID" --num-tasks "$SLURM_ARRAY_TASK_COUNT" --no-merge
        ;;
    merge)
        exec "$PYTHON" -m data_prep.build_shards "${PREP_ARGS[@]}" --merge
        ;;
    *)
        echo "slurm/prep.sh: PREP_MODE must be submit, task or merge, got '$MODE'" >&2; exit 2 ;;
esac
