#!/usr/bin/env bash
# tools/slurm/stop.sh: stop the single-node Slurm cluster that
# tools/slurm/start.sh started: cancels its jobs, then stops slurmd,
# slurmctld and munged -- each only when start.sh started it (by the pid
# files under $SPEECHDUMP_SLURM_DIR, default /var/lib/speechdump-slurm).
# Configuration and state stay there for the next start.sh.
set -u
export LC_ALL=C
export PATH=$PATH:/usr/sbin:/sbin

D=${SPEECHDUMP_SLURM_DIR:-/var/lib/speechdump-slurm}
CONF=$D/slurm.conf

say() { echo "slurm/stop.sh: $*"; }

if [ "$(id -u)" != 0 ]; then
    say "must run as root, this is uid $(id -u); nothing stopped"
    exit 0
fi
if [ ! -d "$D" ]; then
    say "no local cluster state in $D; nothing to stop"
    exit 0
fi

pid_of() {  # pid_of PIDFILE NAME: the pid when that process is alive with that name
    local pid
    [ -s "$1" ] || return 1
    pid=$(head -n1 "$1" 2>/dev/null | tr -dc 0-9)
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

stop_daemon() {  # stop_daemon PIDFILE NAME
    local pid
    if pid=$(pid_of "$1" "$2"); then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || break
            sleep 0.1
        done
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; then
            kill -KILL "$pid" 2>/dev/null
            sleep 0.2
        fi
        say "stopped $2 (pid $pid)"
    fi
    rm -f "$1"
}

# Cancel the cluster's jobs first, so that no job steps outlive slurmd.
if pid_of "$D/slurmctld.pid" slurmctld >/dev/null; then
    jobs=$(SLURM_CONF=$CONF timeout 10 squeue -h -o %A 2>/dev/null | sort -u)
    if [ -n "$jobs" ]; then
        say "cancelling jobs: ${jobs//$'\n'/ }"
        # shellcheck disable=SC2086  # $jobs holds one job id a line: one argument each
        SLURM_CONF=$CONF timeout 10 scancel $jobs 2>/dev/null
        for _ in $(seq 100); do
            [ -z "$(SLURM_CONF=$CONF timeout 10 squeue -h -o %A 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
fi

stop_daemon "$D/slurmd.pid" slurmd
stop_daemon "$D/slurmctld.pid" slurmctld
# munged only when start.sh started it (it copies munged's pid here).
stop_daemon "$D/munged.pid" munged
exit 0
