#!/usr/bin/env bash
# Start a throwaway single-node Slurm cluster for tests/test_slurm.py: munged, slurmctld
# and slurmd on this machine, with their key, configuration, state, spool, logs and pid
# files in one temporary directory, on free loopback ports. Nothing under /etc is
# touched, so a system Slurm or munge (if any) is left alone.
#
#   export SLURM_CONF=$(.ci/slurm.sh start)   # prints the slurm.conf path; sinfo etc. use it
#   .ci/slurm.sh stop "$(dirname "$SLURM_CONF")"
#
# The set-up is cgroup-free (proctrack/linuxproc, task/none, no accounting) so that it
# works in a container or a sandboxed kernel where Slurm cannot manage cgroups. It needs
# root: slurmd starts each job as the user who submitted it (root's jobs as root, which
# Slurm allows). Progress and locations go to stderr; stdout carries only the
# slurm.conf path.
set -euo pipefail

# How long to wait for the node to report idle. slurmd registers within a second or two
# on an idle machine; CI machines can be loaded, so be generous.
READY_TIMEOUT=${STET_SLURM_TIMEOUT:-90}

say() { echo "slurm.sh: $*" >&2; }

install_slurm() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    say "Slurm or munge not found; installing the distribution's packages"
    if [ "$(id -u)" -ne 0 ]; then
        say "need root to install them"
        exit 1
    fi
    if ! command -v apt-get >/dev/null; then
        say "no apt-get here: install Slurm (slurmctld, slurmd, the client commands) and munge by hand"
        exit 1
    fi
    # Keep the packages' own services from starting (with their /etc configuration)
    # while installing, where there is an init system to start them. Our daemons are
    # started below, from our own files.
    local policy=/usr/sbin/policy-rc.d added=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added=1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >&2 || {
        [ -z "$added" ] || rm -f "$policy"
        say "apt-get install slurmctld slurmd slurm-client munge failed"
        exit 1
    }
    [ -z "$added" ] || rm -f "$policy"
}

free_port() {
    python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}

# Wait until a pid file exists and names a live process; $2 is the log to show if not.
wait_pidfile() {
    local file=$1 log=$2
    for _ in $(seq 1 100); do
        if [ -s "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    say "no live process in $file; the end of $log:"
    tail -n 30 "$log" >&2 || true
    return 1
}

# SIGTERM the processes named in the given pid files, wait up to 10 s for them to
# exit, then SIGKILL whatever is left.
stop_pids() {
    local file pid alive pids=()
    for file in "$@"; do
        if [ -s "$file" ]; then
            pids+=("$(cat "$file")")
        fi
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 100); do
        alive=""
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then
                alive=1
            fi
        done
        [ -n "$alive" ] || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
    done
}

stop_dir() {
    local dir=$1
    [ -d "$dir" ] || return 0
    # Cancel the jobs still queued or running (this throwaway cluster has only the
    # tests' jobs) and give their steps a moment to end, so no job process outlives
    # the cluster or keeps files open in $dir.
    if [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
        export SLURM_CONF="$dir/slurm.conf"
        for _ in $(seq 1 30); do
            jobs=$(squeue --noheader --format=%A 2>/dev/null || true)
            [ -n "$jobs" ] || break
            # shellcheck disable=SC2086  # one argument per job id
            scancel --full --quiet $jobs 2>/dev/null || true
            sleep 0.5
        done
    fi
    # The Slurm daemons first (each takes a second or two to save its state and go),
    # then munged, which they use until they are gone.
    stop_pids "$dir/slurmd.pid" "$dir/slurmctld.pid"
    stop_pids "$dir/munged.pid"
    rm -rf "$dir"
}

# The EXIT trap of a start: if the cluster did not come up, say so last (.ci/run shows
# our "slurm.sh:" lines in its banner) and stop whatever did start.
failed_start() {
    [ -z "$started" ] || return 0
    say "FAILED to start a Slurm cluster (exit status $1); details above"
    stop_dir "$dir"
}

case "${1:-}" in
start)
    if [ "$(id -u)" -ne 0 ]; then
        say "needs root: slurmd starts jobs as the users who submit them"
        exit 1
    fi
    install_slurm
    dir=$(mktemp -d /tmp/stet-slurm.XXXXXX)
    # If anything below fails or we are interrupted, leave nothing running behind.
    started=""
    trap 'failed_start $?' EXIT
    trap 'exit 1' INT TERM
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
    # munged wants its socket's directory searchable by everyone (any user may ask for
    # a credential) and its key readable by its own user only.
    chmod 755 "$dir" "$dir/munge"

    # munge authenticates every message between the Slurm commands and daemons. A key of
    # our own and a socket of our own, so a system munged (if any) is never used.
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" \
        --seed-file="$dir/munge/munged.seed" --force
    wait_pidfile "$dir/munged.pid" "$dir/munged.log"

    host=$(hostname -s)
    cpus=$(nproc)
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    conf="$dir/slurm.conf"
    cat >"$conf" <<EOF
# A one-node test cluster written by .ci/slurm.sh; see the comments there.
ClusterName=stet-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: track a job's processes through /proc, bind no tasks, gather no usage.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# No mail server here: job mail (never asked for by the tests) goes nowhere.
MailProg=/bin/true
# Hand out single CPUs, so that several 1-CPU tasks of an array run on the node at once.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# A test node that was down (a killed slurmd) comes back as soon as it registers.
ReturnToService=2
# Start array tasks promptly and forget finished jobs soon.
SchedulerParameters=sched_interval=2
MinJobAge=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$conf"
    slurmctld -f "$conf"
    wait_pidfile "$dir/slurmctld.pid" "$dir/slurmctld.log"
    slurmd -f "$conf"
    wait_pidfile "$dir/slurmd.pid" "$dir/slurmd.log"

    deadline=$((SECONDS + READY_TIMEOUT))
    state=""
    until [ "$state" = idle ]; do
        if [ $SECONDS -ge $deadline ]; then
            say "node $host is not idle after ${READY_TIMEOUT}s (state: ${state:-no answer})"
            say "the end of $dir/slurmctld.log:"
            tail -n 20 "$dir/slurmctld.log" >&2 || true
            say "the end of $dir/slurmd.log:"
            tail -n 20 "$dir/slurmd.log" >&2 || true
            exit 1
        fi
        sleep 0.5
        state=$(sinfo --noheader --node="$host" --format=%T 2>/dev/null || true)
    done
    started=1
    say "node $host is idle: $cpus CPUs, partition 'test'"
    say "configuration: $conf (export SLURM_CONF=$conf for sbatch, sinfo, squeue)"
    say "logs: $dir/slurmctld.log $dir/slurmd.log $dir/munged.log"
    say "stop with: $0 stop $dir"
    echo "$conf"
    ;;
stop)
    dir=${2:-}
    if [ -z "$dir" ] && [ -n "${SLURM_CONF:-}" ]; then
        dir=$(dirname "$SLURM_CONF")
    fi
    case "$dir" in
    /tmp/stet-slurm.*) stop_dir "$dir" ;;
    *)
        echo "usage: $0 stop DIR (a directory made by '$0 start')" >&2
        exit 2
        ;;
    esac
    ;;
*)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
