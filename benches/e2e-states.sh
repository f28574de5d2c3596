#!/usr/bin/env bash
# Why a server's messages/s in one scenario can halve from one run to the
# next. Runs the load generator RUNS times, each against a fresh server
# process sampled by `perf record -e cpu-clock` (kernel and user), and prints
# per run the messages/s and the server's CPU ns per message; then where the
# CPU went in the fastest run and in the slowest, one after the other.
#
#   benches/e2e-states.sh                            (evloop, 10 x 16 KiB x depth 4, 8 runs; ~1 minute)
#   SERVER=mio RUNS=12 benches/e2e-states.sh
#
# On this machine a scenario's msg/s moves by up to 2x between runs of the
# same server, and at 16 KiB more than anywhere: in one sitting the mio loop
# echoed 83,000-188,000 msg/s over 8 runs (server CPU 10.9 and 4.8 µs per
# message), and the same server process can change state between two loads.
# The slow runs' extra time is the kernel copying the echoed bytes into
# socket buffers (`_copy_from_iter`, up to ~4x as long per message in the
# slowest); the TCP state (`ss -tmi`: segments, window, MSS) and the pages
# allocated per message are the same in both. A median of a few runs of such
# a scenario compares the states the runs caught as much as the servers.
# Needs `perf` and root.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/sampled-run.sh
source benches/sampled-run.sh

SERVER=${SERVER:-evloop}
RUNS=${RUNS:-8}
CONNS=${CONNS:-10}
SIZE=${SIZE:-16384}
DEPTH=${DEPTH:-4}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-0.5}
TOP=${TOP:-8}
declare -A BIN=([evloop]=echo [mio]=bench_mio_echo [tokio]=bench_tokio_echo [calloop]=bench_calloop_echo)

DIR=target/e2e/states
sampled_setup e2e-states cpu-clock "$DIR" "${BIN[$SERVER]}"

port=$((20000 + RANDOM % 8000))
: >"$DIR/runs.txt"
for run in $(seq 1 "$RUNS"); do
    port=$((port + 1))
    addr=127.0.0.1:$port
    sampled_run "$EX/${BIN[$SERVER]}" "$addr" cpu-clock "$DIR/run$run.data" "$DIR/servers.log" \
        -- --size "$SIZE" --depth "$DEPTH"
    msgs=$(tr ' ' '\n' <<<"$LINE" | sed -n 's/^msgs_per_s=//p')
    cpu=$(tr ' ' '\n' <<<"$LINE" | sed -n 's/^cpu_ns_per_msg=//p')
    if [[ -z "$msgs" || -z "$cpu" ]]; then
        echo "e2e-states: run $run: no msgs_per_s or cpu_ns_per_msg in the load generator's result: $LINE" >&2
        exit 1
    fi
    echo "$run $msgs $cpu" >>"$DIR/runs.txt"
done

echo "## $SERVER: $CONNS connections x $SIZE B x depth $DEPTH, $RUNS runs"
echo
echo "| run | msg/s | server CPU ns / message |"
echo "|--:|--:|--:|"
awk '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$DIR/runs.txt"
echo
fast=$(sort -k2,2nr "$DIR/runs.txt" | head -1 | cut -d' ' -f1)
slow=$(sort -k2,2n "$DIR/runs.txt" | head -1 | cut -d' ' -f1)
for r in "$fast" "$slow"; do
    read -r _ msgs cpu < <(grep "^$r " "$DIR/runs.txt")
    echo "Run $r ($msgs msg/s, $cpu ns per message): share of the server's samples"
    echo
    echo '```'
    perf report -i "$DIR/run$r.data" --sort sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n "$TOP" || true
    echo '```'
    echo
done
