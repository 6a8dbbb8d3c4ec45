#!/bin/bash
# Stage 3 (caption): train the captioning path (caption self-attention in every layer and the T5
# caption decoder; everything else frozen) starting from stage 2's export (RUNS_ROOT/stage2/export),
# then export RUNS_ROOT/stage3/export. slurm/pipeline.sh chains it after stage 2 with STAGES=1,2,3.
#
# Usage (from the repository root, with the training environment active):
#   mkdir -p logs
#   sbatch slurm/caption.sh [train.py options]
#   sbatch --nodes=4 --gpus-per-node=8 --time=48:00:00 --partition=gpu slurm/caption.sh --max-steps 20000
#   DATA_DIR=data/shards RUNS_ROOT=runs DS_CONFIG=ds_configs/zero2_bf16.json sbatch slurm/caption.sh
#   sbatch --gpus-per-node=0 --cpus-per-task=2 slurm/caption.sh --crop-frames 48   # CPU: 2 ranks per node
#
# The #SBATCH lines below are defaults; options on the sbatch command line win. Environment
# variables (DATA_DIR, RUNS_ROOT, RUN_DIR, DS_CONFIG, TRAIN_ARGS, MAX_RESTARTS, NPROC_PER_NODE,
# CPU_PROCS_PER_NODE, VENV, ...) are described in slurm/common.sh. On preemption (USR1 120 s before
# the time limit, or `scancel --signal=USR1 --batch JOBID`) the ranks checkpoint, the job requeues
# itself and resumes. The whole 1 -> 2 (-> 3) chain: slurm/pipeline.sh.
#
#SBATCH --job-name=mumo-caption
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
##SBATCH --partition=gpu

set -euo pipefail
STAGE=3
# Under sbatch this file runs from a copy in Slurm's spool folder: find the repository from the
# submitted path (MUMO_REPO overrides).
MUMO_SCRIPT="${BASH_SOURCE[0]}"
if [[ ! -f "$(dirname "$MUMO_SCRIPT")/common.sh" && -n "${SLURM_JOB_ID:-}" ]]; then
    MUMO_SCRIPT="$(scontrol show job "$SLURM_JOB_ID" | sed -n 's/^ *Command=\([^ ]*\).*/\1/p')"
fi
MUMO_REPO="${MUMO_REPO:-$(cd "$(dirname "$MUMO_SCRIPT")/.." && pwd)}"
[[ -f "$MUMO_REPO/slurm/common.sh" ]] || {
    echo "$MUMO_SCRIPT: cannot find slurm/common.sh under $MUMO_REPO; set MUMO_REPO=/path/to/the/repository" >&2
    exit 2
}
# shellcheck source=common.sh
source "$MUMO_REPO/slurm/common.sh"
mumo_run_stage "$@"
