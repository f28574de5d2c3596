#!/usr/bin/env bash
# TCP proxy benchmark: evloop's proxy example against haproxy and nginx's
# stream module, each forwarding examples/loadgen.rs's echo load to one
# upstream echo server (examples/bench_mio_echo.rs). Regenerates
# docs/bench/proxy.md and docs/bench/proxy.svg.
#
#   benches/proxy.sh           full run, 3 interleaved runs (about 8 minutes
#                              on an idle machine)
#   QUICK=1 benches/proxy.sh   smoke run: 1 run, 1 s windows
#
# Each measurement is two passes of the load generator against one fresh
# proxy: the first, uninstrumented, gives CPU time, throughput and memory;
# the second counts the proxy's system calls with perf. perf's counting
# costs the proxy time at every system call and context switch (measured
# here: +30-80% CPU per message with one connection), and that cost grows
# with the very thing being compared, so it stays out of the CPU figures.
#
# Knobs (environment): RUNS, DURATION and WARMUP (seconds per measurement),
# PERF_DURATION (seconds of the counting pass, default 1), PROXIES (subset
# of "evloop haproxy nginx"), SCENARIOS (subset of the names below), PERF=0
# to skip counting system calls, OUT (default docs/bench),
# CARGO_TARGET_DIR (where the binaries are built, as for cargo). For shared
# machines: QUIET_WAIT (seconds each measurement may wait for the machine to
# go idle first; 120, 0 with QUICK=1), RETRIES and MAX_WAIT_PCT (a
# measurement in which the proxy waited for its core more than MAX_WAIT_PCT
# % of the time is taken again, up to RETRIES times; 2 and 2, no retries
# with QUICK=1).
#
# Pinning (the machine this was written for has two cores): the proxy alone
# on core 0, the load generator and the upstream echo server together on
# core 1. Every figure is the proxy's (loadgen --pid), so nothing else may
# share its core; the echo server is cheap (a plain mio loop) and costs the
# same whichever proxy feeds it, so sharing core 1 with the load generator
# caps the offered load alike for all proxies.
#
# Needs: apt-get install -y haproxy libnginx-mod-stream nginx-light linux-perf
# A peer that is not installed is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-0}" == 1 ]]; then
    RUNS=${RUNS:-1} DURATION=${DURATION:-1} WARMUP=${WARMUP:-0.3} QUIET_WAIT=${QUIET_WAIT:-0} RETRIES=${RETRIES:-0}
else
    RUNS=${RUNS:-3} DURATION=${DURATION:-3} WARMUP=${WARMUP:-0.5} QUIET_WAIT=${QUIET_WAIT:-120} RETRIES=${RETRIES:-2}
fi
MAX_WAIT_PCT=${MAX_WAIT_PCT:-2}
PROXIES=${PROXIES:-"evloop haproxy nginx"}
SCENARIOS=${SCENARIOS:-"c1 c50_d1 c50_d16 c10_16k_d4 c1000_d1"}
OUT=${OUT:-docs/bench}
PERF=${PERF:-1}
PERF_DURATION=${PERF_DURATION:-1}
TARGET=${CARGO_TARGET_DIR:-target}
EX=$TARGET/release/examples
INSTALL="apt-get install -y haproxy libnginx-mod-stream nginx-light linux-perf"

# name -> "connections size depth" (the shapes of benches/e2e.sh)
declare -A SHAPE=(
    [c1]="1 64 1"
    [c50_d1]="50 64 1"
    [c50_d16]="50 64 16"
    [c10_16k_d4]="10 16384 4"
    [c1000_d1]="1000 64 1"
)
for sc in $SCENARIOS; do
    [[ -n "${SHAPE[$sc]-}" ]] || { echo "proxy: unknown scenario '$sc' (known: ${!SHAPE[*]})" >&2; exit 2; }
done

note() { echo "proxy: $*" >&2; }

# Which proxies can run here. NOTES collects why any was left out; the report
# prints them, so a table missing a column says why.
NOTES=()
RUNNABLE=()
mkdir -p "$TARGET"
NGINX_MODULE=""
for p in $PROXIES; do
    case $p in
    evloop)
        # examples/proxy.rs is being written alongside this script: until it
        # builds, measure the peers alone.
        if cargo build --release --quiet --example proxy 2>"$TARGET/proxy-build.log"; then
            RUNNABLE+=(evloop)
        else
            NOTES+=("evloop skipped: examples/proxy.rs did not build (see $TARGET/proxy-build.log)")
        fi
        ;;
    haproxy)
        if command -v haproxy >/dev/null; then
            RUNNABLE+=(haproxy)
        else
            NOTES+=("haproxy skipped: not installed ($INSTALL)")
        fi
        ;;
    nginx)
        # Debian builds the stream module as a loadable module; where nginx
        # has it built in (--with-stream without =dynamic), load nothing.
        if ! command -v nginx >/dev/null; then
            NOTES+=("nginx skipped: not installed ($INSTALL)")
        elif NGINX_MODULE=$(dpkg -L libnginx-mod-stream 2>/dev/null | awk '/\/ngx_stream_module\.so$/ && !n++') &&
            [[ -n "$NGINX_MODULE" ]]; then
            RUNNABLE+=(nginx)
        elif nginx -V 2>&1 | grep -Eq -- '--with-stream( |$)'; then
            RUNNABLE+=(nginx)
        else
            NOTES+=("nginx skipped: no stream module (apt-get install -y libnginx-mod-stream)")
        fi
        ;;
    *)
        echo "proxy: unknown proxy '$p' (known: evloop haproxy nginx)" >&2
        exit 2
        ;;
    esac
done
for n in "${NOTES[@]}"; do note "$n"; done
if [[ ${#RUNNABLE[@]} == 0 ]]; then
    note "no proxy to measure; install the peers with: $INSTALL"
    exit 1
fi

cargo build --release --quiet --example loadgen --example bench_mio_echo --example proxy_report
# The commit built, taken now: the tree may move while the run goes on.
# "+ uncommitted changes" when the library's or the proxy example's sources
# differ from it (the benchmark's own files do not count).
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n "$(git status --porcelain -- src examples/proxy.rs Cargo.toml 2>/dev/null)" ]]; then
    COMMIT="$COMMIT + uncommitted changes"
fi

ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# 1,000 pairs are 2,000 sockets in the proxy, plus its listener and slack.
if ((NOFILE < 2200)); then
    note "the open-file limit is $NOFILE; c1000_d1 needs about 2,200 (raise the hard limit)"
fi
# haproxy refuses to start unless 2 x maxconn (plus a few) file descriptors
# fit the limit; 4,096 is four times what the largest scenario needs.
HAPROXY_MAXCONN=$((NOFILE >= 8300 ? 4096 : (NOFILE - 100) / 2))
PERF_FLAG=""
if [[ "$PERF" == 1 ]]; then
    if perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
        PERF_FLAG=--perf
    else
        note "perf cannot count raw_syscalls:sys_enter here; system calls are not counted"
        note "  ($INSTALL; run as root)"
    fi
fi

# Everything a run starts, stopped on any exit; configurations and logs in a
# temporary directory.
WORK=$(mktemp -d)
ECHO_PID=""
PROXY_PID=""
cleanup() {
    [[ -n "$PROXY_PID" ]] && kill -KILL "$PROXY_PID" 2>/dev/null
    [[ -n "$ECHO_PID" ]] && kill -KILL "$ECHO_PID" 2>/dev/null
    rm -rf "$WORK"
    true
}
trap cleanup EXIT

RESULTS_DIR=$TARGET/proxy-bench
mkdir -p "$RESULTS_DIR" "$OUT"
RESULTS=$RESULTS_DIR/results.txt
: >"$RESULTS"

# A busy machine (a build next door) inflates every per-message cost, by
# several times on the proxy's core (measured: 2-4x at c50_d1 while cargo
# builds). busy_pct: the share of all cores in use over $1 seconds, from
# /proc/stat.
busy_pct() {
    local a b
    read -r -a a < <(head -n 1 /proc/stat)
    sleep "$1"
    read -r -a b < <(head -n 1 /proc/stat)
    # user nice system idle iowait irq softirq steal
    local total=0 idle=$((b[4] + b[5] - a[4] - a[5])) i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $((total > 0 ? 100 * (total - idle) / total : 0))
}
BUSY=$(busy_pct 0.5)
if ((BUSY > 10)); then
    note "the machine is ${BUSY}% busy before the run: the figures will be inflated and noisy"
fi

# Before each measurement (nothing of ours running): wait, up to QUIET_WAIT
# seconds, until the machine is idle (at most 10% busy over a second). Sets
# BUSY_NOW to the last reading, which goes into the results.
WAITED=0
wait_quiet() {
    local start=$SECONDS
    BUSY_NOW=$(busy_pct 0.5)
    while ((BUSY_NOW > 10 && SECONDS - start < QUIET_WAIT)); do
        BUSY_NOW=$(busy_pct 1)
    done
    WAITED=$((WAITED + SECONDS - start))
    if ((BUSY_NOW > 10)); then
        note "measuring on a busy machine (${BUSY_NOW}% in use)"
    fi
}

# The proxy's run-queue wait (field 2 of /proc/PID/schedstat, ns): how long
# it was runnable but another task had its core. Over the load generator's
# run, as a share of the wall time, it says whether anything competed with
# the proxy for core 0.
runq_ns() { awk '{ print $2 }' "/proc/$1/schedstat"; }

# Whether something listens on 127.0.0.1:$1 (or any address) over TCP,
# without connecting: a connection would make a proxy open one upstream.
listening() {
    local hex
    printf -v hex '%04X' "$1"
    grep -q "^ *[0-9]*: [0-9A-F]*:$hex 00000000:0000 0A " /proc/net/tcp
}

wait_listening() {
    local port=$1 pid=$2 what=$3
    for _ in $(seq 100); do
        listening "$port" && return 0
        kill -0 "$pid" 2>/dev/null || { note "$what exited at start (see $RESULTS_DIR/proxies.log)"; exit 1; }
        sleep 0.05
    done
    note "$what does not listen on port $port after 5 s"
    exit 1
}

# SIGTERM, then SIGKILL if it is still there after 5 s.
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

haproxy_config() {
    local listen=$1 upstream=$2
    # One thread; no logging (no `log` line anywhere); client and server
    # timeouts far beyond a run; maxconn well above the 1,000 pairs.
    cat <<EOF
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
defaults
    mode tcp
    timeout connect 10s
    timeout client 1h
    timeout server 1h
frontend bench
    bind $listen
    default_backend upstream
backend upstream
    server echo $upstream
EOF
}

nginx_config() {
    local listen=$1 upstream=$2
    # master_process off: the one process is the worker, so the PID we
    # measure is the one that forwards. worker_connections counts both
    # sockets of a pair.
    [[ -n "$NGINX_MODULE" ]] && echo "load_module $NGINX_MODULE;"
    cat <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events {
    worker_connections 8192;
}
stream {
    server {
        listen $listen;
        proxy_pass $upstream;
        proxy_connect_timeout 10s;
        proxy_timeout 1h;
    }
}
EOF
}

# Start proxy $1 on core 0, listening on $2, forwarding to $3; sets PROXY_PID.
start_proxy() {
    local proxy=$1 listen=$2 upstream=$3 log=$RESULTS_DIR/proxies.log
    case $proxy in
    evloop)
        RUST_LOG=warn taskset -c 0 "$EX/proxy" "$listen" "$upstream" 2>>"$log" &
        ;;
    haproxy)
        haproxy_config "$listen" "$upstream" >"$WORK/haproxy.cfg"
        # -db: foreground, no master process: the PID is the one proxy process.
        taskset -c 0 haproxy -db -f "$WORK/haproxy.cfg" >>"$log" 2>&1 &
        ;;
    nginx)
        nginx_config "$listen" "$upstream" >"$WORK/nginx.conf"
        # -e: nginx opens its error log before reading the configuration.
        taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log" >>"$log" 2>&1 &
        ;;
    esac
    PROXY_PID=$!
}

# One pass of the load generator (on core 1) against the running proxy:
#   load PASS DURATION [LOADGEN_FLAGS...]
# appends its result line, labelled pass=PASS, to RESULTS. loadgen bounds
# every phase itself (PATIENCE); `timeout` only turns a hang it did not
# foresee into a failure.
load() {
    local pass=$1 duration=$2 limit line
    shift 2
    limit=$(awk -v d="$duration" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 150 }')
    if ! line=$(timeout -k 5 "$limit" taskset -c 1 "$EX/loadgen" --addr "$addr" --conns "$conns" \
        --size "$size" --depth "$depth" --duration "$duration" --warmup "$WARMUP" \
        --pid "$PROXY_PID" "$@" \
        --label "proxy=$proxy" --label "scenario=$sc" --label "run=$run" --label "pass=$pass"); then
        note "the load generator failed against $proxy in $sc (its message is above; proxy logs: $RESULTS_DIR/proxies.log)"
        exit 1
    fi
    LINE=$line
}
# One measurement of $proxy in scenario $sc: a fresh echo server and proxy
# (so the proxy's RSS at start is its own and no run inherits another's
# sockets), the timed pass, the counting pass. Sets TIME_LINE, COUNT_LINE
# and RUNQ (the proxy's run-queue wait over the timed pass, % of its time).
measure() {
    local wait0 t0
    wait_quiet
    # Two ports nothing else listens on (another benchmark may run).
    port=$((port + 2))
    while listening "$port" || listening $((port + 1)); do port=$((port + 2)); done
    up=127.0.0.1:$port
    addr=127.0.0.1:$((port + 1))
    taskset -c 1 "$EX/bench_mio_echo" "$up" 2>>"$RESULTS_DIR/proxies.log" &
    ECHO_PID=$!
    wait_listening "${up##*:}" "$ECHO_PID" "the upstream echo server"
    start_proxy "$proxy" "$addr" "$up"
    wait_listening "${addr##*:}" "$PROXY_PID" "$proxy"
    wait0=$(runq_ns "$PROXY_PID")
    t0=$(date +%s%N)
    load time "$DURATION"
    TIME_LINE=$LINE
    RUNQ=$(awk -v w="$(($(runq_ns "$PROXY_PID") - wait0))" -v t="$(($(date +%s%N) - t0))" \
        'BEGIN { printf "%.1f", 100 * w / t }')
    COUNT_LINE=""
    if [[ -n "$PERF_FLAG" ]]; then
        load count "$PERF_DURATION" "$PERF_FLAG"
        COUNT_LINE=$LINE
    fi
    stop "$PROXY_PID"
    PROXY_PID=""
    stop "$ECHO_PID"
    ECHO_PID=""
}

# Below the ephemeral range (32768+), so no client socket holds our ports.
port=$((20000 + RANDOM % 8000))
NPROXIES=${#RUNNABLE[@]}
REDONE=0
: >"$RESULTS_DIR/proxies.log"
for run in $(seq 1 "$RUNS"); do
    for sc in $SCENARIOS; do
        read -r conns size depth <<<"${SHAPE[$sc]}"
        # Each run starts with the next proxy: this machine drifts between
        # throughput states within seconds, and no proxy should always take
        # the same place in the sequence.
        for k in $(seq 0 $((NPROXIES - 1))); do
            proxy=${RUNNABLE[$(((k + run - 1) % NPROXIES))]}
            # A measurement during which something else held the proxy's core
            # for more than MAX_WAIT_PCT of the time is taken again (up to
            # RETRIES times; the last one stands): such a run measures the
            # neighbour as much as the proxy.
            for attempt in $(seq 0 "$RETRIES"); do
                note "run $run/$RUNS  $sc  $proxy$( ((attempt)) && echo "  (again: $attempt)")"
                measure
                if awk -v r="$RUNQ" -v m="$MAX_WAIT_PCT" 'BEGIN { exit !(r <= m) }' || ((attempt == RETRIES)); then
                    break
                fi
                note "the proxy waited for its core ${RUNQ}% of the time; measuring again"
                REDONE=$((REDONE + 1))
            done
            echo "$TIME_LINE busy_before_pct=$BUSY_NOW proxy_runq_pct=$RUNQ attempts=$((attempt + 1))" >>"$RESULTS"
            if [[ -n "$COUNT_LINE" ]]; then
                echo "$COUNT_LINE" >>"$RESULTS"
            fi
        done
    done
done

SETTINGS="commit $COMMIT; runs=$RUNS duration=${DURATION}s warmup=${WARMUP}s"
SETTINGS+=" syscall-counting=$([[ -n "$PERF_FLAG" ]] && echo "perf, ${PERF_DURATION}s" || echo off)"
SETTINGS+="; machine ${BUSY}% busy at the start, ${WAITED} s spent waiting for it to go idle"
SETTINGS+=", $REDONE measurements taken again (proxy waited > ${MAX_WAIT_PCT}% for its core)"
for p in "${RUNNABLE[@]}"; do
    case $p in
    haproxy) SETTINGS+="; $(haproxy -v | awk 'NR == 1 { print $1, $2, $3 }')" ;;
    nginx) SETTINGS+="; $(nginx -v 2>&1 | sed 's/^nginx version: //')" ;;
    esac
done
"$EX/proxy_report" "$RESULTS" "$OUT/proxy.md" "$OUT/proxy.svg" "$SETTINGS" "${NOTES[@]}"
note "wrote $OUT/proxy.md and $OUT/proxy.svg (raw results: $RESULTS)"
