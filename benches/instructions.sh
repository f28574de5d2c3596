#!/usr/bin/env bash
# User-space instructions per request of an example server, counted by
# callgrind (repeatable where wall-clock figures are not): the server runs
# under valgrind twice, for N and 2N requests of load, and the difference
# in instructions over the difference in requests removes start-up and
# shutdown. Compares builds: point EX at another build's examples folder
# (a worktree of an older commit, say) and run again.
#
#   benches/instructions.sh echo|echo_lines|echo_async|kv|http
#   EX=/path/to/other/target/release/examples benches/instructions.sh kv
#
# Loads: echo and echo_async, examples/loadgen 50 connections x 64 B at
# depth 1 (DEPTH to change); kv, redis-benchmark -c 10 -P 16 -t set,get;
# http, wrk -t1 -c1 (every request its own turn). Needs valgrind, and
# redis-benchmark or wrk for kv and http.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:?usage: benches/instructions.sh echo|echo_lines|echo_async|kv|http}
EX=${EX:-target/release/examples}
LOADGEN=target/release/examples/loadgen
DEPTH=${DEPTH:-1}
SIZE=${SIZE:-64}
case $WHAT in
    echo_lines) BIN=echo FLAGS=--lines LOAD=--lines ;;
    echo_async) BIN=echo_async FLAGS="" LOAD=--lines ;;
    echo | kv | http) BIN=$WHAT FLAGS="" LOAD="" ;;
    *) echo "instructions: unknown server $WHAT" >&2; exit 2 ;;
esac
if [[ "$EX" == target/release/examples ]]; then
    cargo build --release --quiet --example "$BIN" --example loadgen
fi
OUT=$(mktemp -d)
SERVER_PID=""
trap '[[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$OUT"' EXIT

# Prints "instructions requests" for one run of `n` (requests, or seconds for wrk).
run() {
    local n=$1 port=$((30000 + RANDOM % 2000)) got
    # shellcheck disable=SC2086
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/$n.out" \
        "$EX/$BIN" "127.0.0.1:$port" $FLAGS 2>/dev/null &
    SERVER_PID=$!
    sleep 2
    case $WHAT in
        kv)
            redis-benchmark -h 127.0.0.1 -p "$port" -c 10 -P 16 -n "$n" -t set,get -q >/dev/null
            got=$((2 * n)) ;;
        http)
            got=$(wrk -t1 -c1 -d"${n}s" "http://127.0.0.1:$port/" | awk '/requests in/{print $1}') ;;
        *)
            # shellcheck disable=SC2086
            got=$("$LOADGEN" --addr "127.0.0.1:$port" --conns "${CONNS:-50}" --size "$SIZE" --depth "$DEPTH" \
                --warmup 0 --duration 120 --max-msgs "$n" $LOAD 2>/dev/null |
                tr ' ' '\n' | sed -n 's/^echoed_total=//p') ;;
    esac
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    echo "$(grep -m1 '^summary:' "$OUT/$n.out" | awk '{print $2}') $got"
}

if [[ $WHAT == http ]]; then small=3 big=6; else small=20000 big=40000; fi
read -r a na < <(run $small)
read -r b nb < <(run $big)
echo "$WHAT ($EX): $(((b - a) / (nb - na))) instructions per request (runs of $na and $nb)"
