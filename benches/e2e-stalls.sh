#!/usr/bin/env bash
# Where a server's user time goes under load, by source line. The server runs
# on core 0 under the load generator (core 1), and `perf record -e
# cpu-clock:u` samples it in user mode only, after the warm-up. A load that
# misses the cache stalls the instruction after it, so the lines that head
# this list are the server's cache misses, not its busiest code: at 10,000
# connections the kernel's work between two dispatches leaves little of a
# connection's state in cache, and each table the server walks per message
# costs one miss.
#
#   benches/e2e-stalls.sh                          (evloop and mio, 10,000 connections; ~1 minute)
#   SERVERS=evloop CONNS=1000 TOP=20 benches/e2e-stalls.sh
#
# Prints, per server, the share of its user-mode samples at each source line
# (of the function named beside it). Samples landing on a libc system-call
# wrapper (send.c, recv.c) are the first instruction after the kernel
# returns. Needs `perf` (apt-get install -y linux-perf) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/sampled-run.sh
source benches/sampled-run.sh

SERVERS=${SERVERS:-"evloop mio"}
CONNS=${CONNS:-10000}
SIZE=${SIZE:-64}
DEPTH=${DEPTH:-1}
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
TOP=${TOP:-14}
declare -A BIN=([evloop]=echo [mio]=bench_mio_echo [tokio]=bench_tokio_echo [calloop]=bench_calloop_echo)

DIR=target/e2e/stalls
sampled_setup e2e-stalls cpu-clock:u "$DIR" $(for s in $SERVERS; do echo "${BIN[$s]}"; done)

port=$((20000 + RANDOM % 8000))
for srv in $SERVERS; do
    port=$((port + 1))
    addr=127.0.0.1:$port
    sampled_run "$EX/${BIN[$srv]}" "$addr" cpu-clock:u "$DIR/$srv.data" "$DIR/servers.log" \
        -- --size "$SIZE" --depth "$DEPTH"
    echo "## $srv: $CONNS connections x $SIZE B x depth $DEPTH"
    echo
    echo "$(tr ' ' '\n' <<<"$LINE" | grep -E '^(msgs_per_s|cpu_ns_per_msg)=' | tr '\n' ' ')"
    echo
    echo '```'
    perf report -i "$DIR/$srv.data" --sort sym,srcline --stdio 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -n "$TOP" || true
    echo '```'
    echo
done
