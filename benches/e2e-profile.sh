#!/usr/bin/env bash
# User-space instructions per echoed message, counted by callgrind: repeatable
# where the wall-clock numbers of benches/e2e.sh are noisy. Each server runs
# under valgrind twice, for MSGS and for 2 x MSGS messages of load; the
# difference divided by the difference in echoed messages removes start-up,
# connecting and shutdown. Prints a markdown table; the callgrind files stay in
# target/e2e/callgrind/ for `callgrind_annotate --inclusive=yes FILE`.
#
# With the cache simulation on (the default), it also counts L1 data-cache
# misses per message: how many cache lines the server pulls in for each
# message, which is what its per-connection layout decides once there are
# more connections than fit in the cache (c1000_d1). CACHE=0 turns it off.
#
#   benches/e2e-profile.sh                  (about 5 minutes)
#   SERVERS="evloop mio" SCENARIOS=c50_d16 MSGS=10000 benches/e2e-profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MSGS=${MSGS:-20000}
SERVERS=${SERVERS:-"evloop mio tokio calloop"}
SCENARIOS=${SCENARIOS:-"pingpong c50_d1 c50_d16 c1000_d1"}
CACHE=${CACHE:-1}
declare -A SHAPE=([pingpong]="1 64 1" [c50_d1]="50 64 1" [c50_d16]="50 64 16" [c10_16k_d4]="10 16384 4" [c1000_d1]="1000 64 1")
declare -A BIN=([evloop]=echo [mio]=bench_mio_echo [tokio]=bench_tokio_echo [calloop]=bench_calloop_echo)

cargo build --release --quiet --example loadgen $(for s in $SERVERS; do echo --example "${BIN[$s]}"; done)
EX=target/release/examples
DIR=target/e2e/callgrind
mkdir -p "$DIR"
SERVER_PID=""
trap '[[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null; true' EXIT

# Total instructions and echoed messages of one run under callgrind.
measure() {
    local srv=$1 sc=$2 n=$3 port=$4 out="$DIR/$1-$2-$3.out"
    read -r conns size depth <<<"${SHAPE[$sc]}"
    local sim=()
    [[ "$CACHE" == 1 ]] && sim=(--cache-sim=yes)
    RUST_LOG=warn valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$out" \
        "$EX/${BIN[$srv]}" "127.0.0.1:$port" 2>>"$DIR/valgrind.log" &
    SERVER_PID=$!
    local line
    line=$("$EX/loadgen" --addr "127.0.0.1:$port" --conns "$conns" --size "$size" --depth "$depth" \
        --warmup 0 --duration 120 --max-msgs "$n" 2>"$DIR/loadgen.log") || {
        kill -TERM "$SERVER_PID"
        echo "e2e-profile: loadgen failed on $srv $sc (see $DIR/loadgen.log)" >&2
        exit 1
    }
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    local ir misses msgs
    # summary: Ir [Dr Dw I1mr D1mr D1mw ...]: data-cache misses are D1mr + D1mw.
    read -r ir misses < <(grep -m1 '^summary:' "$out" | awk '{print $2, (NF >= 8 ? $6 + $7 : 0)}')
    msgs=$(tr ' ' '\n' <<<"$line" | sed -n 's/^echoed_total=//p')
    echo "$ir $misses $msgs"
}

echo "| scenario | server | instructions / message | × mio | L1d misses / message | × mio |"
echo "|---|---|--:|--:|--:|--:|"
# Below the ephemeral range (32768+), so no client socket holds our port.
port=$((10000 + RANDOM % 8000))
for sc in $SCENARIOS; do
    declare -A PER=() MISS=()
    for srv in $SERVERS; do
        port=$((port + 2))
        read -r ir1 d1 m1 < <(measure "$srv" "$sc" "$MSGS" "$port")
        read -r ir2 d2 m2 < <(measure "$srv" "$sc" $((2 * MSGS)) $((port + 1)))
        PER[$srv]=$(((ir2 - ir1) / (m2 - m1)))
        MISS[$srv]=$(awk -v a="$d1" -v b="$d2" -v m="$((m2 - m1))" 'BEGIN { d = (b - a) / m; printf "%.2f", (d < 0 ? 0 : d) }')
    done
    for srv in $SERVERS; do
        ratio=$(awk -v a="${PER[$srv]}" -v b="${PER[mio]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "–" }')
        if [[ "$CACHE" == 1 ]]; then
            mratio=$(awk -v a="${MISS[$srv]}" -v b="${MISS[mio]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "–" }')
            echo "| $sc | $srv | ${PER[$srv]} | $ratio | ${MISS[$srv]} | $mratio |"
        else
            echo "| $sc | $srv | ${PER[$srv]} | $ratio | – | – |"
        fi
    done
    unset PER MISS
done
