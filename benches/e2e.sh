#!/usr/bin/env bash
# End-to-end echo benchmark: evloop's echo example (callbacks) and echo_async
# (tasks) against a hand-written mio loop, tokio (current-thread, a task per
# connection) and calloop, all fed by examples/loadgen.rs. Regenerates docs/bench/e2e.md and docs/bench/e2e.svg.
#
#   benches/e2e.sh            full run, 9 interleaved runs (about 25 minutes)
#   QUICK=1 benches/e2e.sh    smoke run: 1 run, short windows (about 2 minutes)
#
# Knobs (environment): RUNS, DURATION and WARMUP (seconds per measurement),
# SERVERS (subset of "evloop echo_lines echo_async mio tokio tokio_lines calloop"), SCENARIOS (subset of the
# names below), PERF=0 to skip counting system calls, OUT (default docs/bench).
# The server runs on core 0 and the load generator on core 1 (taskset).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-0}" == 1 ]]; then
    RUNS=${RUNS:-1} DURATION=${DURATION:-1} WARMUP=${WARMUP:-0.3}
else
    RUNS=${RUNS:-9} DURATION=${DURATION:-4} WARMUP=${WARMUP:-1}
fi
SERVERS=${SERVERS:-"evloop echo_lines echo_async mio tokio tokio_lines calloop"}
SCENARIOS=${SCENARIOS:-"pingpong c50_d1 c50_d16 c10_16k_d4 c1000_d1 c10000_d1"}
OUT=${OUT:-docs/bench}
PERF=${PERF:-1}

# name -> "connections size depth"
declare -A SHAPE=(
    [pingpong]="1 64 1"
    [c50_d1]="50 64 1"
    [c50_d16]="50 64 16"
    [c10_16k_d4]="10 16384 4"
    [c1000_d1]="1000 64 1"
    [c10000_d1]="10000 64 1"
)
declare -A BIN=(
    [evloop]=echo
    [mio]=bench_mio_echo
    [tokio]=bench_tokio_echo
    [calloop]=bench_calloop_echo
    [echo_async]=echo_async
    [echo_lines]=echo
    [tokio_lines]=bench_tokio_echo
)
# Arguments after the listen address.
declare -A SERVER_FLAGS=(
    [tokio_lines]=--lines
    [echo_lines]=--lines
)
# echo_async echoes lines, as eventlet's server does: its load ends every
# message with the message's only newline (same sizes, same checks).
declare -A LOAD_FLAGS=(
    [echo_async]=--lines
    [echo_lines]=--lines
    [tokio_lines]=--lines
)

cargo build --release --quiet --example loadgen --example e2e_report \
    $(for s in $SERVERS; do echo --example "${BIN[$s]}"; done | sort -u)
EX=target/release/examples

ulimit -n "$(ulimit -Hn)"
PERF_FLAG=""
if [[ "$PERF" == 1 ]]; then
    if perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
        PERF_FLAG=--perf
    else
        echo "e2e: perf cannot count raw_syscalls:sys_enter here; system calls are not counted" >&2
        echo "     (apt-get install -y linux-perf; run as root)" >&2
    fi
fi

mkdir -p target/e2e "$OUT"
RESULTS=target/e2e/results.txt
: >"$RESULTS"
SERVER_PID=""
trap '[[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null; true' EXIT

# Below the ephemeral range (32768+), so no client socket holds our port.
port=$((20000 + RANDOM % 8000))
read -r -a SERVER_LIST <<<"$SERVERS"
NSERVERS=${#SERVER_LIST[@]}
for run in $(seq 1 "$RUNS"); do
    for sc in $SCENARIOS; do
        read -r conns size depth <<<"${SHAPE[$sc]}"
        # Each run starts with the next server: this machine drifts between
        # throughput states within seconds, and no server should always
        # take the same place in the sequence.
        for k in $(seq 0 $((NSERVERS - 1))); do
            srv=${SERVER_LIST[$(((k + run - 1) % NSERVERS))]}
            port=$((port + 1))
            addr=127.0.0.1:$port
            RUST_LOG=warn taskset -c 0 "$EX/${BIN[$srv]}" "$addr" ${SERVER_FLAGS[$srv]:-} 2>>target/e2e/servers.log &
            SERVER_PID=$!
            echo "e2e: run $run/$RUNS  $sc  $srv" >&2
            taskset -c 1 "$EX/loadgen" --addr "$addr" --conns "$conns" --size "$size" --depth "$depth" \
                --duration "$DURATION" --warmup "$WARMUP" --pid "$SERVER_PID" $PERF_FLAG ${LOAD_FLAGS[$srv]:-} \
                --label "server=$srv" --label "scenario=$sc" --label "run=$run" >>"$RESULTS"
            kill -TERM "$SERVER_PID"
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=""
        done
    done
done

SETTINGS="runs=$RUNS duration=${DURATION}s warmup=${WARMUP}s syscall-counting=$([[ -n "$PERF_FLAG" ]] && echo perf || echo off)"
"$EX/e2e_report" "$RESULTS" "$OUT/e2e.md" "$OUT/e2e.svg" "$SETTINGS"
echo "e2e: wrote $OUT/e2e.md and $OUT/e2e.svg" >&2
