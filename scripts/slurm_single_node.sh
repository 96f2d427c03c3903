#!/usr/bin/env bash
# Start (or stop) a real single-node SLURM on this host, for CI and tests.
#
# Usage (as root, Debian/Ubuntu):
#   scripts/slurm_single_node.sh [start]   install if missing, configure, start, wait for idle
#   scripts/slurm_single_node.sh restart   stop, then start
#   scripts/slurm_single_node.sh stop      stop slurmd, slurmctld and munged
#   scripts/slurm_single_node.sh status    show daemons and `sinfo`; exit 0 only if the node is up
#   scripts/slurm_single_node.sh check     submit a 3-task job array and check its outputs
#
# Environment:
#   SLURM_STATE_DIR      state, spool, logs, pid files, check outputs (default /tmp/umd-slurm)
#   SLURM_CONF           where slurm.conf is written (default /etc/slurm/slurm.conf, which the
#                        client commands read without any variable set)
#   SLURM_START_TIMEOUT  seconds to wait for the node to become idle (default 90)
#   SLURM_PARTITION      partition name (default debug)
#   SLURM_OVERSUBSCRIBE  N > 1: let up to N jobs share each CPU (partition OverSubscribe=FORCE:N);
#                        default unset: each task gets its own CPU, so 2 run at once on 2 CPUs
#   SLURM_MIN_JOB_AGE    seconds a finished job stays in squeue/scontrol (default 5, so that
#                        `sbatch --wait` polls every 2 s; with Slurm's 300 it waits 2, 8, 32 s)
#
# No systemd is needed: munged, slurmctld and slurmd are started directly as daemons.
# See docs/slurm.md, "A single-node SLURM for CI and tests".
set -euo pipefail

STATE_DIR=${SLURM_STATE_DIR:-/tmp/umd-slurm}
CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
TIMEOUT=${SLURM_START_TIMEOUT:-90}
PARTITION=${SLURM_PARTITION:-debug}
OVERSUBSCRIBE=${SLURM_OVERSUBSCRIBE:-}
MIN_JOB_AGE=${SLURM_MIN_JOB_AGE:-5}
HOST=$(hostname -s)
MARK="# written by scripts/slurm_single_node.sh"

MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
MUNGE_SOCKET=$MUNGE_RUN/munge.socket.2

say() { printf 'slurm_single_node: %s\n' "$*"; }
die() { printf 'slurm_single_node: ERROR: %s\n' "$*" >&2; exit 1; }

# --- helpers ---------------------------------------------------------------------------

proc_alive() {  # proc_alive PID: true if PID is a live process (not a zombie)
    local stat
    [[ -n $1 ]] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # Field 3 is the state; Z/X: dead but not yet reaped (PID 1 in containers may never reap).
    stat=${stat##*) }
    [[ ${stat:0:1} != [ZX] ]]
}

pid_alive() {  # pid_alive PIDFILE: true if the file names a live process
    [[ -s $1 ]] && proc_alive "$(tr -dc '0-9' <"$1")"
}

conf_value() {  # conf_value FILE KEY: a KEY=value from an existing slurm.conf ("" if absent)
    [[ -r $1 ]] || return 0
    sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*\([^[:space:]#]*\).*/\1/Ip" "$1" | tail -n 1
}

stop_pidfiles() {  # stop_pidfiles NAME=PIDFILE...: SIGTERM all, wait up to 15 s, then SIGKILL
    local arg name file pid i alive
    local -a names=() pids=()
    for arg in "$@"; do
        name=${arg%%=*} file=${arg#*=}
        if pid_alive "$file"; then
            pid=$(tr -dc '0-9' <"$file")
            kill -TERM "$pid" 2>/dev/null || true
            names+=("$name") pids+=("$pid")
        fi
        rm -f "$file"
    done
    for ((i = 0; i < 150; i++)); do
        alive=0
        for pid in "${pids[@]}"; do proc_alive "$pid" && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if proc_alive "${pids[i]}"; then
            say "${names[i]} (pid ${pids[i]}) ignored SIGTERM for 15 s; sending SIGKILL"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
        say "stopped ${names[i]} (pid ${pids[i]})"
    done
}

wait_pidfile() {  # wait_pidfile NAME PIDFILE: a daemon forks, then writes its pid file
    local i
    for ((i = 0; i < 100; i++)); do
        pid_alive "$2" && return 0
        sleep 0.1
    done
    fail "$1 is not running 10 s after it was started (no live pid in $2)"
}

stop_slurm() {  # slurmd and slurmctld, by the pid files of the slurm.conf they run with
    local ctld slurmd
    ctld=$(conf_value "$CONF" SlurmctldPidFile) slurmd=$(conf_value "$CONF" SlurmdPidFile)
    stop_pidfiles "slurmd=${slurmd:-$STATE_DIR/run/slurmd.pid}" \
        "slurmctld=${ctld:-$STATE_DIR/run/slurmctld.pid}" \
        "slurmd=$STATE_DIR/run/slurmd.pid" "slurmctld=$STATE_DIR/run/slurmctld.pid"
}

show_logs() {
    local f
    for f in "$STATE_DIR"/log/munged.log "$STATE_DIR"/log/slurmctld.log "$STATE_DIR"/log/slurmd.log; do
        [[ -s $f ]] || continue
        printf '\n===== tail -n 25 %s =====\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
    if command -v sinfo >/dev/null; then
        printf '\n===== sinfo -N -l; sinfo -R =====\n' >&2
        timeout 10 sinfo -N -l >&2 2>&1 || true
        timeout 10 sinfo -R >&2 2>&1 || true
    fi
}

fail() { printf 'slurm_single_node: ERROR: %s\n' "$*" >&2; show_logs; exit 1; }

node_state() {  # the node's state as sinfo prints it (idle, mixed, down*, drained, ...), or ""
    timeout 10 sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n 1 || true
}

node_up() {
    case $(node_state) in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

# --- install ---------------------------------------------------------------------------

install_packages() {
    local missing=() p
    for p in slurmctld slurmd slurm-client munge; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    say "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        slurmctld slurmd slurm-client munge >/dev/null
}

# --- munge -----------------------------------------------------------------------------

start_munge() {
    # The key: Debian's postinst usually creates it; make one if not, owned by munge, 0400.
    if [[ ! -s $MUNGE_KEY ]]; then
        say "creating $MUNGE_KEY"
        install -d -o munge -g munge -m 0700 /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    # /run/munge is normally made by systemd-tmpfiles; without systemd it may be missing.
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    if pid_alive "$MUNGE_PID" && munge -n </dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    rm -f "$MUNGE_PID"
    touch "$STATE_DIR/log/munged.log"
    chown munge:munge "$STATE_DIR/log/munged.log"
    # As Debian's unit does: run munged as the munge user. As root it refuses ("Keyfile is
    # insecure: ... should be owned by UID 0") unless given --force.
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID" \
        --log-file="$STATE_DIR/log/munged.log" --socket="$MUNGE_SOCKET" ||
        fail "munged did not start"
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "munged started but munge -n | unmunge fails"
}

# --- slurm.conf ------------------------------------------------------------------------

node_line() {
    # `slurmd -C` prints the hardware slurmd will detect; drop UpTime. Fall back to nproc/free.
    local line
    line=$(slurmd -C 2>/dev/null | grep -m 1 '^NodeName=' || true)
    if [[ -n $line ]]; then
        line=$(sed -e 's/ *UpTime=[^ ]*//' -e "s/^NodeName=[^ ]*/NodeName=$HOST/" <<<"$line")
    else
        line="NodeName=$HOST CPUs=$(nproc) RealMemory=$(free -m | awk '/^Mem:/ {print $2}')"
    fi
    printf '%s State=UNKNOWN\n' "$line"
}

new_conf() {
    cat <<EOF
$MARK; edits are overwritten.
ClusterName=umd
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MailProg=/bin/true
InactiveLimit=0
KillWait=5
MinJobAge=$MIN_JOB_AGE
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$(node_line)
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP$(
    [[ -n $OVERSUBSCRIBE && $OVERSUBSCRIBE -gt 1 ]] && printf ' OverSubscribe=FORCE:%d' "$OVERSUBSCRIBE")
EOF
}

write_conf() {  # (re)write $CONF if it differs from new_conf
    local new
    new=$(new_conf)
    if [[ -f $CONF ]] && [[ "$(cat "$CONF")" == "$new" ]]; then
        return 0
    fi
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        cp -p "$CONF" "$CONF.orig.$(date +%s)"
        say "kept the previous $CONF as $CONF.orig.*"
    fi
    mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$new" >"$CONF"
    say "wrote $CONF"
}

# --- start / stop ----------------------------------------------------------------------

stop_all() {
    stop_slurm
    stop_pidfiles "munged=$MUNGE_PID"
}

start_all() {
    local t0 changed i state
    t0=$EPOCHREALTIME
    [[ $(id -u) -eq 0 ]] || die "run as root (installs packages, writes $CONF, starts daemons)"
    install_packages
    mkdir -p "$STATE_DIR"/{state,spool,run,log}
    start_munge

    # Stop whatever runs with the current slurm.conf before it is replaced (the state dir may
    # have changed, and with it the pid files).
    changed=$(cmp -s <(new_conf) "$CONF" || echo changed)
    [[ -n $changed ]] && stop_slurm
    write_conf
    if [[ -z $changed ]] && pid_alive "$STATE_DIR/run/slurmctld.pid" &&
        pid_alive "$STATE_DIR/run/slurmd.pid" && node_up; then
        say "already running; node $HOST is $(node_state)"
    else
        # Restart both daemons: a changed slurm.conf, or one daemon down, or a node not up.
        local ctld_pid=$STATE_DIR/run/slurmctld.pid
        stop_slurm
        slurmctld || fail "slurmctld did not start"
        wait_pidfile slurmctld "$ctld_pid"
        for ((i = 0; i < 100; i++)); do
            timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP' && break
            pid_alive "$ctld_pid" || fail "slurmctld exited"
            sleep 0.2
        done
        slurmd || fail "slurmd did not start"
        wait_pidfile slurmd "$STATE_DIR/run/slurmd.pid"
    fi

    while :; do
        state=$(node_state)
        case $state in
            idle | mixed | allocated | completing) break ;;
            drain* | fail* | inval*)
                fail "node $HOST is $state (reason: $(timeout 10 sinfo -h -R -o '%E' 2>/dev/null));" \
                    "a drain is kept in $STATE_DIR/state across restarts: if the cause is gone," \
                    "run: scontrol update nodename=$HOST state=resume" ;;
        esac
        pid_alive "$STATE_DIR/run/slurmctld.pid" || fail "slurmctld is not running"
        pid_alive "$STATE_DIR/run/slurmd.pid" || fail "slurmd is not running"
        if ((${EPOCHREALTIME%.*} - ${t0%.*} > TIMEOUT)); then
            fail "node $HOST not idle after ${TIMEOUT}s (state: '${state:-none}')"
        fi
        sleep 0.5
    done
    printf 'slurm_single_node: SLURM up on %s (node %s, %s) in %.1f s\n' \
        "$HOST" "$state" "$(grep -o 'CPUs=[0-9]*' "$CONF" | head -n 1)" \
        "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}')"
}

status_all() {
    local name file
    for name in munged slurmctld slurmd; do
        case $name in
            munged) file=$MUNGE_PID ;;
            *) file=$(conf_value "$CONF" "${name^}PidFile") ;;
        esac
        if pid_alive "${file:-/nonexistent}"; then
            say "$name running (pid $(tr -dc '0-9' <"$file"))"
        else
            say "$name not running"
        fi
    done
    if command -v sinfo >/dev/null; then timeout 10 sinfo || true; fi
    node_up
}

# --- check: a real 3-task job array ----------------------------------------------------

check() {
    local out=$STATE_DIR/check a line expected rc
    node_up || die "node $HOST is not up (state '$(node_state)'); run: $0 start"
    rm -rf "$out"
    mkdir -p "$out"
    # PATH inheritance: a marker directory put first on the submitter's PATH must reach the job.
    local marker=$out/bin
    mkdir -p "$marker"
    say "sbatch --array=1-3 --cpus-per-task=1 --wait (outputs in $out)"
    rc=0
    # shellcheck disable=SC2016  # expanded in the job, not here
    PATH=$marker:$PATH timeout 120 sbatch --array=1-3 --cpus-per-task=1 --wait --quiet \
        --job-name=umd-check --output="$out/out_%a.txt" \
        --wrap 'echo $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT $SLURM_ARRAY_TASK_MIN $SLURM_ARRAY_TASK_MAX
echo "user=$(id -un) path0=${PATH%%:*}"
echo "start=$(date +%s.%N)"; sleep 3; echo "end=$(date +%s.%N)"' || rc=$?
    ((rc == 0)) || fail "sbatch --wait exited $rc"
    for a in 1 2 3; do
        [[ -s $out/out_$a.txt ]] || fail "no output $out/out_$a.txt"
        line=$(head -n 1 "$out/out_$a.txt")
        expected="$a 3 1 3"
        [[ $line == "$expected" ]] || fail "out_$a.txt: '$line', expected '$expected'"
        grep -q "path0=$marker\$" "$out/out_$a.txt" || fail "out_$a.txt: PATH not inherited"
        say "out_$a.txt: $(tr '\n' ' ' <"$out/out_$a.txt")"
    done
    # How many tasks overlapped (the node has CPUs= from slurmd -C; each task asks for 1).
    local overlap
    overlap=$(cat "$out"/out_*.txt | awk -F= '
        /^start=/ {s[n]=$2} /^end=/ {e[n++]=$2}
        END {best=0; for (i=0;i<n;i++) {c=0; for (j=0;j<n;j++) if (s[j]<=s[i] && e[j]>s[i]) c++; if (c>best) best=c}; print best}')
    say "check passed: 3 array tasks, PATH inherited, at most $overlap ran at once"
}

case ${1:-start} in
    start) start_all ;;
    restart) stop_all; start_all ;;
    stop) stop_all ;;
    status) status_all ;;
    check) check ;;
    -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1' (start, restart, stop, status, check)" ;;
esac
