#!/usr/bin/env bash
# Start a real one-node SLURM on this machine (munged + slurmctld + slurmd on localhost), so the tests
# marked `slurm` run `cmx sweep --executor slurm` for real. Follows ../shared/reference/slurm-notes.md.
#
#   .ci/start-slurm.sh          install (apt) if missing, configure, start, wait until the node is idle
#   .ci/start-slurm.sh --stop   stop only the daemons this script started (by the pids it recorded),
#                               after waiting up to 30 s for the queue to empty
#
# Idempotent: a second call finds the node idle and only prints the status line. It never overwrites a
# slurm.conf it did not write (a real cluster's config stays untouched). Needs root (apt, daemons).
# Prints one status line on stdout ("slurm: ..."); details of any failure go to stderr; exit 1 if SLURM
# cannot be brought up.
set -euo pipefail

PIDS=/run/cmx-slurm            # pid files of the daemons this script started
LOGS=/var/log/cmx-slurm
CONF=/etc/slurm/slurm.conf
MARK="# written by cmx .ci/start-slurm.sh"
HOST=$(hostname -s)

die() { echo "slurm: cannot start: $*" >&2; echo "slurm: unavailable ($*)"; exit 1; }
alive() { [[ -f "$PIDS/$1.pid" ]] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }
node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1 || true; }  # 'idle*' = not responding

if [[ "${1:-}" == "--stop" ]]; then
    # let finishing jobs end first: killing slurmd under a running step leaves orphaned slurmstepd/srun
    for _ in $(seq 60); do [[ -z "$(squeue -h 2>/dev/null)" ]] && break; sleep 0.5; done
    for d in slurmd slurmctld munged; do
        if alive "$d"; then
            pid=$(cat "$PIDS/$d.pid")
            kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done  # saves its state first
            echo "slurm: stopped $d (pid $pid)"
        fi
        rm -f "$PIDS/$d.pid"
    done
    exit 0
fi

# Already up (started by us earlier, or a real cluster): nothing to do.
if command -v sinfo >/dev/null && [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]; then
    echo "slurm: node $HOST $(node_state), $(sinfo -V 2>/dev/null), partition $(sinfo -h -o %P | head -n1) (already running)"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "needs root to install and start munge/slurm"
mkdir -p "$PIDS" "$LOGS"

# 1. packages
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm: installing slurm-wlm and munge with apt-get (about a minute)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q slurm-wlm munge; } >"$LOGS/apt.log" 2>&1 \
        || die "apt-get install slurm-wlm munge failed (see $LOGS/apt.log)"
fi

# 2. munge: key, directories, daemon
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
    chmod 400 /etc/munge/munge.key
    chmod 700 /etc/munge
    su -s /bin/sh munge -c /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null 2>&1 || die "munge -n | unmunge fails"
    [[ -f /run/munge/munged.pid ]] && cp /run/munge/munged.pid "$PIDS/munged.pid"
fi

# 3. slurm.conf (only ours is ever rewritten)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
CONF_TEXT="$MARK
ClusterName=cmx
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd
if [[ -f "$CONF" ]] && ! head -n1 "$CONF" | grep -qF "$MARK"; then
    die "$CONF exists and was not written by this script; not touching it"
fi
if [[ ! -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$CONF_TEXT" ]]; then
    printf '%s\n' "$CONF_TEXT" >"$CONF"
    for d in slurmd slurmctld; do alive "$d" && kill "$(cat "$PIDS/$d.pid")" && sleep 1; done
fi

# 4. daemons (they daemonize and write their pid files, so a later --stop can find them). -c: start from
#    a clean state; jobs recorded by an earlier session of this throwaway cluster have no processes left
#    and would otherwise hold the node until their time limit.
alive slurmctld || slurmctld -c || die "slurmctld did not start (see $LOGS/slurmctld.log)"
alive slurmd || slurmd -c || die "slurmd did not start (see $LOGS/slurmd.log)"

# 5. wait for the node to be idle (a node left down/drained by an earlier run is resumed)
for i in $(seq 60); do
    state=$(node_state)
    [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]] && break
    if [[ "$state" =~ ^(down|drain|drained|draining|fail) && $i -gt 3 ]]; then
        scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    fi
    sleep 1
done
[[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]] \
    || die "node $HOST is '$(node_state)' after 60 s (see $LOGS/slurmctld.log, $LOGS/slurmd.log)"
echo "slurm: node $HOST $(node_state), $(sinfo -V), partition debug, $CPUS CPUs, ${MEM_MB} MB (started)"
