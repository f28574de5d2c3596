# Sourced by benches/e2e-stalls.sh and benches/e2e-states.sh: one load run
# against a fresh server, with perf sampling the server inside the window.
#
#   sampled_run BIN ADDR EVENT DATA LOG -- LOADGEN_ARGS...
#
# Starts BIN on core 0, samples it with `perf record -e EVENT` into DATA from
# the end of the warm-up (plus CONNS/10,000 s for connecting) for 60 % of the
# window, runs the load generator on core 1 and sets LINE to its result line.
# Uses EX, WARMUP, DURATION and CONNS from the caller; SERVER_PID is set while
# the server runs so the caller's EXIT trap can stop it.
sampled_run() {
    local bin=$1 addr=$2 event=$3 data=$4 log=$5
    shift 6
    RUST_LOG=warn taskset -c 0 "$bin" "$addr" 2>>"$log" &
    SERVER_PID=$!
    (
        sleep "$(awk -v w="$WARMUP" -v c="$CONNS" 'BEGIN { print w + 0.3 + c / 10000 }')"
        perf record -q -e "$event" -F 20000 -p "$SERVER_PID" -o "$data" \
            -- sleep "$(awk -v d="$DURATION" 'BEGIN { print d * 0.6 }')" >/dev/null 2>&1
    ) &
    local sampler=$!
    LINE=$(taskset -c 1 "$EX/loadgen" --addr "$addr" --pid "$SERVER_PID" \
        --duration "$DURATION" --warmup "$WARMUP" --conns "$CONNS" "$@")
    wait "$sampler"
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
