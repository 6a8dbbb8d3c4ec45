#!/usr/bin/env bash
# Stop the test cluster started by tests/slurm/start_cluster.sh.
#
# Usage: tests/slurm/stop_cluster.sh [STATE_DIR]        # default STATE_DIR: /tmp/mumo-slurm
#
# Stops only the daemons recorded in STATE_DIR/pids (the slurmd daemons, slurmctld, and munged when start_cluster
# started it), by PID, after checking /proc/PID/comm names that daemon (a stale PID reused by another
# process is left alone). SIGTERM, wait up to 10 s, then SIGKILL. A stopped daemon that lingers as a
# zombie (this sandbox's PID 1 reaps late) counts as stopped. Jobs still running are cancelled first.
# munged is left running while another Slurm daemon on this machine (a second test cluster) needs it.
set -euo pipefail

DIR="${1:-${MUMO_SLURM_DIR:-/tmp/mumo-slurm}}"
PIDS="$DIR/pids"
say() { echo "stop_cluster: $*" >&2; }

if [[ ! -f "$PIDS" ]]; then
    say "nothing recorded in $PIDS: not started by start_cluster.sh, or already stopped"
    exit 0
fi

alive() {  # alive PID NAME: running (not a zombie) and still that daemon
    local pid="$1" name="$2" stat comm
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [[ "$comm" == "$name" ]] || return 1
    stat="$(ps -o stat= -p "$pid" 2>/dev/null | tr -d ' ')" || return 1
    [[ -n "$stat" && "$stat" != Z* ]]
}

if [[ -f "$DIR/slurm.conf" ]] && command -v scancel >/dev/null; then
    # cancel what is left and let it finish, or its slurmstepd outlives the daemons
    export SLURM_CONF="$DIR/slurm.conf"
    if [[ -n "$(squeue -h -o %i 2>/dev/null)" ]]; then
        scancel --full --quiet --user root 2>/dev/null || true
        for _ in $(seq 150); do [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break; sleep 0.2; done
        [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] || say "jobs still listed after 30 s: $(squeue -h -o '%i %T' | tr '\n' ' ')"
    fi
fi

stop() {  # stop NAME PID
    local name="$1" pid="$2"
    if ! alive "$pid" "$name"; then
        say "$name ($pid) is not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" "$name" || break; sleep 0.1; done
    if alive "$pid" "$name"; then
        say "$name ($pid) ignored SIGTERM for 10 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 20); do alive "$pid" "$name" || break; sleep 0.1; done
    fi
    alive "$pid" "$name" && { say "could not stop $name ($pid)"; return 1; }
    say "stopped $name ($pid)"
}

others_use_munge() {  # another Slurm daemon (not a zombie) still runs on this machine
    local comm_file pid
    for comm_file in /proc/[0-9]*/comm; do
        pid="${comm_file#/proc/}"
        pid="${pid%/comm}"
        case "$(cat "$comm_file" 2>/dev/null)" in
            slurmctld|slurmd) alive "$pid" "$(cat "$comm_file" 2>/dev/null)" && return 0 ;;
        esac
    done
    return 1
}

# slurmd(s) first (they report to slurmctld), munged last
status=0
for name in slurmd slurmctld munged; do
    for pid in $(awk -v n="$name" '$1 == n {print $2}' "$PIDS"); do
        if [[ "$name" == munged ]] && others_use_munge; then
            say "leaving munged ($pid) running: another Slurm cluster on this machine uses it"
            continue
        fi
        stop "$name" "$pid" || status=1
    done
done
((status == 0)) || exit 1
rm -f "$PIDS"
