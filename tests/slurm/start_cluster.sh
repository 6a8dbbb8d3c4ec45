#!/usr/bin/env bash
# Start a real single-node Slurm (slurmctld + slurmd + munged) for the tests, as root.
#
# Usage:
#   tests/slurm/start_cluster.sh [STATE_DIR]          # default STATE_DIR: /tmp/mumo-slurm
#   . STATE_DIR/env.sh                                  # exports SLURM_CONF for sbatch/squeue/scontrol
#   tests/slurm/stop_cluster.sh [STATE_DIR]
#
# Installs slurmctld, slurmd, slurm-client and munge with apt-get when they are missing, writes
# slurm.conf and cgroup.conf into STATE_DIR (settings and reasons: ../shared/notes/slurm_local.md),
# starts the daemons, waits until the node is idle and records the PIDs it started in STATE_DIR/pids
# (an already running munged is reused and left alone). Running it again while the cluster is up
# only prints the environment.
# Ports: SLURM_LOCAL_CTLD_PORT (default 6817) and SLURM_LOCAL_SLURMD_PORT (default 6818; node i
# uses it + i - 1); pick other ones to run a second cluster beside the first.
# SLURM_LOCAL_NODES=N (default 1) adds N-1 emulated nodes HOST-2..HOST-N: more slurmd daemons on this
# machine, each with the machine's hardware line, so multi-node jobs (sbatch -N 2) run for real.
# Their names do not resolve: jobs that span them rendezvous on 127.0.0.1 (MUMO_MASTER_ADDR).
#
# Exit codes: 0 up; 77 this machine cannot run it (not root, no apt-get, install failed): the tests
# skip with the printed reason; anything else: a real failure, the daemons' logs are printed.
set -euo pipefail

DIR="${1:-${MUMO_SLURM_DIR:-/tmp/mumo-slurm}}"
CTLD_PORT="${SLURM_LOCAL_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURM_LOCAL_SLURMD_PORT:-6818}"
WAIT_S="${SLURM_LOCAL_WAIT_S:-30}"
NODES="${SLURM_LOCAL_NODES:-1}"
[[ "$NODES" =~ ^[1-9][0-9]?$ ]] || { echo "start_cluster: SLURM_LOCAL_NODES must be 1..99, got '$NODES'" >&2; exit 2; }
SKIP=77

say() { echo "start_cluster: $*" >&2; }
skip() { say "cannot start a Slurm cluster here: $*"; exit "$SKIP"; }
fail() {
    say "FAILED: $*"
    for log in "$DIR"/slurmctld.log "$DIR"/slurmd-*.log; do
        [[ -f "$log" ]] && { echo "---- $log (last 30 lines)" >&2; tail -n 30 "$log" >&2; }
    done
    exit 1
}

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
CONF="$DIR/slurm.conf"

# Already up? (our recorded slurmctld answers)
if [[ -f "$DIR/pids" && -f "$CONF" ]] && SLURM_CONF="$CONF" scontrol ping 2>/dev/null | grep -q "is UP"; then
    echo "export SLURM_CONF=$CONF" > "$DIR/env.sh"
    say "already running ($CONF)"
    cat "$DIR/env.sh"
    exit 0
fi

[[ "$(id -u)" == 0 ]] || skip "needs root (it installs packages and runs slurmd as root); run the tests as root"

# 1. Packages
missing=()
for cmd in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || [[ -x "/usr/sbin/${cmd%%:*}" ]] || missing+=("${cmd##*:}")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || skip "packages missing (${missing[*]}) and no apt-get to install them"
    say "installing ${missing[*]} (apt-get, about 10 s)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge; } \
        >"$DIR/apt.log" 2>&1; then
        tail -n 20 "$DIR/apt.log" >&2
        skip "apt-get install slurmctld slurmd slurm-client munge failed (log above, full log $DIR/apt.log)"
    fi
fi
export PATH="/usr/sbin:/sbin:$PATH"

# 2. munge (shared by every cluster on this host; reuse a running one)
started_munged=""
if ! (munge -n | unmunge) >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    runuser -u munge -- /usr/sbin/munged --force || fail "munged did not start"
    for _ in $(seq 50); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.1; done
    (munge -n | unmunge) >/dev/null 2>&1 || fail "munge -n | unmunge fails after starting munged"
    started_munged="$(cat /run/munge/munged.pid)"
fi

# 3. Configuration
HOST="$(hostname -s)"
HW="$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ *$//')"  # CPUs=.. Boards=.. RealMemory=..
[[ "$HW" == *CPUs=* ]] || fail "slurmd -C printed no hardware line: $(slurmd -C 2>&1 | head -n3)"
NAMES=("$HOST")
NODE_LINES="NodeName=${HOST} NodeAddr=127.0.0.1 Port=${SLURMD_PORT} ${HW} State=UNKNOWN"
for ((i = 2; i <= NODES; i++)); do
    NAMES+=("${HOST}-$i")
    NODE_LINES+=$'\n'"NodeName=${HOST}-$i NodeHostname=${HOST} NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + i - 1)) ${HW} State=UNKNOWN"
done
ALL="$(IFS=,; echo "${NAMES[*]}")"
mkdir -p "$DIR/state" "$DIR/spool"
rm -rf "${DIR:?}/state/"* "${DIR:?}/spool/"*
cat >"$CONF" <<CONF
# Written by tests/slurm/start_cluster.sh: a one-node test cluster (see ../shared/notes/slurm_local.md).
ClusterName=mumotest
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job is held cred_expire+1 s (default 121 s)
AuthInfo=cred_expire=5
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool/%n
SlurmctldPidFile=${DIR}/slurmctld.pid
SlurmdPidFile=${DIR}/slurmd-%n.pid
SlurmctldLogFile=${DIR}/slurmctld.log
SlurmdLogFile=${DIR}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# pgid: background children of a job die with it (linuxproc leaves orphans)
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
# finished jobs stay visible to scontrol show job (no slurmdbd, no sacct)
MinJobAge=3600
KillWait=30
MailProg=/bin/true
${NODE_LINES}
PartitionName=debug Nodes=${ALL} Default=YES MaxTime=INFINITE State=UP
CONF
# slurmd 22.05 always loads a cgroup plugin, even with proctrack/pgid + task/none
if grep -q "cgroup2 /sys/fs/cgroup " /proc/mounts; then
    printf 'CgroupPlugin=cgroup/v2\nIgnoreSystemd=yes\n' >"$DIR/cgroup.conf"  # unverified here (notes, pitfall 5)
else
    printf 'CgroupPlugin=cgroup/v1\n' >"$DIR/cgroup.conf"
fi
export SLURM_CONF="$CONF"

# 4. Daemons (-c: clean state, so "idle" means this slurmd registered)
rm -f "$DIR"/*.log "$DIR"/*.pid
slurmctld -c -f "$CONF" || fail "slurmctld did not start"
for _ in $(seq 50); do [[ -s "$DIR/slurmctld.pid" ]] && break; sleep 0.1; done
[[ -s "$DIR/slurmctld.pid" ]] || fail "slurmctld wrote no pid file"
: >"$DIR/pids"
[[ -n "$started_munged" ]] && echo "munged $started_munged" >>"$DIR/pids"
echo "slurmctld $(cat "$DIR/slurmctld.pid")" >>"$DIR/pids"
for name in "${NAMES[@]}"; do
    mkdir -p "$DIR/spool/$name"
    slurmd -c -f "$CONF" -N "$name" || fail "slurmd for node $name did not start"
    for _ in $(seq 50); do [[ -s "$DIR/slurmd-$name.pid" ]] && break; sleep 0.1; done
    [[ -s "$DIR/slurmd-$name.pid" ]] || fail "slurmd for node $name wrote no pid file"
    echo "slurmd $(cat "$DIR/slurmd-$name.pid")" >>"$DIR/pids"
done

end=$((SECONDS + WAIT_S))
state=""
while ((SECONDS < end)); do
    state="$(sinfo -h -N -n "$ALL" -o %T 2>/dev/null | sort -u | tr '\n' ' ' || true)"
    [[ "$state" == "idle " ]] && break
    sleep 0.2
done
[[ "$state" == "idle " ]] || fail "nodes $ALL are '${state:-unknown}', not all idle, after ${WAIT_S} s"
echo "export SLURM_CONF=$CONF" >"$DIR/env.sh"
say "up in ${SECONDS} s: node(s) $ALL idle; $(tr '\n' ' ' <"$DIR/pids")"
cat "$DIR/env.sh"
