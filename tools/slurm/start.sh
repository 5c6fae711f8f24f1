#!/usr/bin/env bash
# tools/slurm/start.sh: bring up a single-node Slurm cluster on this machine,
# for utils/slurm.pl and test/test_slurm.py.  No systemd needed.
#
#   bash tools/slurm/start.sh        (as root)
#
# - installs slurmctld, slurmd, slurm-client and munge with apt-get when they
#   are missing;
# - writes its slurm.conf, state, logs and pid files under $SPEECHDUMP_SLURM_DIR
#   (default /var/lib/speechdump-slurm), outside the source tree, and links
#   /etc/slurm/slurm.conf to that slurm.conf when /etc/slurm/slurm.conf does
#   not exist yet, so that sbatch/squeue/sinfo find the cluster (otherwise
#   export SLURM_CONF=$SPEECHDUMP_SLURM_DIR/slurm.conf);
# - starts munged (unless a working one is running already), slurmctld and
#   slurmd, and waits until the node takes jobs.
# Idempotent: when the cluster is up already it returns at once.
# tools/slurm/stop.sh stops what this script started.
#
# Exits 0 without doing anything, printing why, when it cannot run here (not
# root, no apt-get to install with, an /etc/slurm/slurm.conf of another
# cluster); exits 1 when the daemons do not come up.
set -u
export LC_ALL=C

D=${SPEECHDUMP_SLURM_DIR:-/var/lib/speechdump-slurm}
CONF=$D/slurm.conf
ETC_CONF=/etc/slurm/slurm.conf
PKGS="slurmctld slurmd slurm-client munge"
PARTITION=local

say() { echo "slurm/start.sh: $*"; }
cannot_run() { say "$*"; say "not starting a local Slurm cluster (test/test_slurm.py will skip)"; exit 0; }

if [ "$(id -u)" != 0 ]; then
    cannot_run "must run as root (to install packages and run slurmd), this is uid $(id -u)"
fi

# A pid file names one of our daemons when that process is alive and has
# the expected name.
alive() {  # alive PIDFILE NAME
    local pid
    [ -s "$1" ] || return 1
    pid=$(head -n1 "$1" 2>/dev/null | tr -dc 0-9)
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

munge_works() { command -v munge >/dev/null && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

node_name() { hostname -s 2>/dev/null || hostname; }

# "idle", "mixed", "allocated", ... or nothing when slurmctld does not answer.
node_state() { SLURM_CONF=$CONF timeout 10 sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n1; }

usable_state() {
    case $1 in
        idle|mixed|allocated|completing|idle+*|mixed+*|allocated+*|completing+*) return 0 ;;
        *) return 1 ;;
    esac
}

# ----------------------------------------------------------------- install
export PATH=$PATH:/usr/sbin:/sbin
missing=
for b in slurmctld slurmd sbatch squeue sinfo munged munge; do
    command -v "$b" >/dev/null 2>&1 || missing="$missing $b"
done
if [ -n "$missing" ]; then
    command -v apt-get >/dev/null || cannot_run "missing:$missing, and no apt-get to install $PKGS"
    say "installing $PKGS (missing:$missing)"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # $PKGS is a list of package names: split into words on purpose
    if ! apt-get install -y --no-install-recommends $PKGS >/tmp/speechdump-slurm-apt.log 2>&1; then
        apt-get update >>/tmp/speechdump-slurm-apt.log 2>&1
        apt-get install -y --no-install-recommends $PKGS >>/tmp/speechdump-slurm-apt.log 2>&1 ||
            { tail -n 5 /tmp/speechdump-slurm-apt.log; cannot_run "apt-get install $PKGS failed (log: /tmp/speechdump-slurm-apt.log)"; }
    fi
fi

if [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
    if [ "$(readlink "$ETC_CONF")" != "$CONF" ]; then
        cannot_run "$ETC_CONF exists and is not ours (another cluster is configured on this machine)"
    fi
fi

mkdir -p "$D"
exec 9>"$D/start.lock"
flock -w 300 9 || { say "timed out waiting for another start.sh ($D/start.lock)"; exit 1; }

NODE=$(node_name)

# -------------------------------------------------------------- slurm.conf
# The node's CPUs/memory as slurmd sees them.  CR_CPU: CPUs are the only
# consumable, so array tasks share the node (with memory consumable and no
# DefMemPerCPU every task would take the whole node).  EnforcePartLimits=ALL
# rejects at submission a job the node can never run (more CPUs than there
# are) instead of leaving it pending forever.
hw=$(slurmd -C 2>/dev/null | head -n1)
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<" $hw"; }
cpus=$(field CPUs); boards=$(field Boards); sockets=$(field SocketsPerBoard)
cores=$(field CoresPerSocket); threads=$(field ThreadsPerCore); mem=$(field RealMemory)
if [ -z "$cpus" ] || [ -z "$mem" ]; then
    say "cannot read the node's CPUs/memory from 'slurmd -C': $hw"; exit 1
fi
node_hw="CPUs=$cpus RealMemory=$mem"
[ -n "$boards" ] && [ -n "$sockets" ] && [ -n "$cores" ] && [ -n "$threads" ] &&
    node_hw="$node_hw Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads"

# GPUs: one gres per /dev/nvidiaN; slurmd then sets CUDA_VISIBLE_DEVICES for
# jobs asking for --gres=gpu:N.
ngpu=0
if command -v nvidia-smi >/dev/null 2>&1; then
    ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU [0-9]')
fi
gpu_files=
for ((i = 0; i < ngpu; i++)); do
    [ -e "/dev/nvidia$i" ] || { ngpu=$i; break; }
done
gres_line=
if [ "$ngpu" -gt 0 ]; then
    gres_line="GresTypes=gpu"
    node_hw="$node_hw Gres=gpu:$ngpu"
    gpu_files="/dev/nvidia[0-$((ngpu - 1))]"
    [ "$ngpu" = 1 ] && gpu_files=/dev/nvidia0
fi

new_conf=$(cat <<EOF
# Written by speechdump tools/slurm/start.sh; rewritten on every start.
ClusterName=speechdump
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$D/ctld
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# Schedule submitted and freed-up work at once (default: up to 3 s later).
SchedulerParameters=batch_sched_delay=0
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Without cgroups (task/none) memory is not enforced; --mem only has to fit
# the node.  No accounting, so sacct has nothing: finished jobs are queried
# with scontrol while the controller keeps them (MinJobAge).
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
# Finished jobs stay queryable (scontrol show job) for an hour, so that
# slurm.pl can tell why a task ended without an exit status.
MinJobAge=3600
KillWait=10
InactiveLimit=0
Waittime=0
$gres_line
NodeName=$NODE NodeAddr=127.0.0.1 $node_hw State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
new_gres=
[ "$ngpu" -gt 0 ] && new_gres="NodeName=$NODE Name=gpu File=$gpu_files"

conf_changed=0
[ "$new_conf" = "$(cat "$CONF" 2>/dev/null)" ] || conf_changed=1
[ "$new_gres" = "$(cat "$D/gres.conf" 2>/dev/null)" ] || conf_changed=1

# ------------------------------------------------------------ fast path
if [ $conf_changed = 0 ] && alive "$D/slurmctld.pid" slurmctld && alive "$D/slurmd.pid" slurmd &&
    munge_works && usable_state "$(node_state "$NODE")"; then
    say "local Slurm cluster is up (node $NODE, partition $PARTITION, SLURM_CONF=$CONF)"
    exit 0
fi

# --------------------------------------------------------------- munge
if ! munge_works; then
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key >/dev/null
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
        fi
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    # A stale socket/pid file from a killed munged blocks a new one.
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
    # munged refuses to run as root with a key owned by munge: run it as munge.
    if ! runuser -u munge -- munged >>"$D/munged.start.log" 2>&1 9>&-; then
        say "munged did not start:"; tail -n 5 "$D/munged.start.log"; exit 1
    fi
    for _ in $(seq 50); do munge_works && break; sleep 0.1; done
    munge_works || { say "munged started but munge/unmunge do not work"; exit 1; }
    cp /run/munge/munged.pid "$D/munged.pid"    # ours to stop
fi

# ---------------------------------------------------------- slurm daemons
mkdir -p "$D/ctld" "$D/spool" "$D/log"
chown slurm:slurm "$D/ctld" "$D/log"
if [ $conf_changed = 1 ]; then
    # New hardware/config: restart our daemons so that they read it.
    for d in slurmd slurmctld; do
        if alive "$D/$d.pid" $d; then
            say "configuration changed: restarting $d"
            kill "$(cat "$D/$d.pid")"
            for _ in $(seq 100); do alive "$D/$d.pid" $d || break; sleep 0.1; done
        fi
    done
    printf '%s\n' "$new_conf" >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
    if [ -n "$new_gres" ]; then printf '%s\n' "$new_gres" >"$D/gres.conf"; else rm -f "$D/gres.conf"; fi
fi
chmod 0644 "$CONF"
if [ ! -e "$ETC_CONF" ]; then
    mkdir -p /etc/slurm
    ln -sfn "$CONF" "$ETC_CONF"
fi

if ! alive "$D/slurmctld.pid" slurmctld; then
    rm -f "$D/slurmctld.pid"
    # -i: start even when saved state is unreadable (e.g. left by another
    # Slurm version); the jobs in it are then lost.
    if ! slurmctld -i -f "$CONF" >>"$D/log/slurmctld.start.log" 2>&1 9>&-; then
        say "slurmctld did not start:"; tail -n 20 "$D/log/slurmctld.log" "$D/log/slurmctld.start.log" 2>/dev/null; exit 1
    fi
fi
if ! alive "$D/slurmd.pid" slurmd; then
    rm -f "$D/slurmd.pid"
    if ! slurmd -f "$CONF" >>"$D/log/slurmd.start.log" 2>&1 9>&-; then
        say "slurmd did not start:"; tail -n 20 "$D/log/slurmd.log" "$D/log/slurmd.start.log" 2>/dev/null; exit 1
    fi
fi

# Wait for the node to register and take jobs.
state=
resumed=0
for i in $(seq 600); do
    state=$(node_state "$NODE")
    usable_state "$state" && break
    case $state in
        down*|drain*|fail*|inval*)
            # Left down/drained by an earlier run: return it to service.
            if [ "$resumed" = 0 ] && [ "$i" -gt 20 ]; then
                SLURM_CONF=$CONF scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1
                resumed=1
            fi ;;
    esac
    alive "$D/slurmctld.pid" slurmctld || { sleep 0.5; alive "$D/slurmctld.pid" slurmctld; } ||
        { say "slurmctld exited:"; tail -n 20 "$D/log/slurmctld.log"; exit 1; }
    sleep 0.2
done
if ! usable_state "$state"; then
    say "node $NODE did not come up (state '${state:-no answer}'); logs in $D/log:"
    tail -n 10 "$D/log/slurmctld.log" "$D/log/slurmd.log" 2>/dev/null
    exit 1
fi
say "local Slurm cluster started (node $NODE: $cpus CPUs, ${mem} MB, $ngpu GPUs; partition $PARTITION; SLURM_CONF=$CONF)"
exit 0
