# Sourced by benches/e2e-stalls.sh and benches/e2e-states.sh: one load run
# against a fresh server, with perf sampling the server inside the window.
#
#   sampled_run BIN ADDR EVENT DATA LOG -- LOADGEN_ARGS...
#
# Starts BIN on core 0, samples it with `perf record -e EVENT` into DATA from
# the end of the warm-up (plus 0.3 s, plus CONNS/10,000 s for connecting) for
# 60 % of the window, runs the load generator on core 1 and sets LINE to its
# result line. Uses EX, WARMUP, DURATION and CONNS from the caller. While it
# runs, SERVER_PID and SAMPLER_PID name the server and the sampler, so that
# the caller's EXIT trap (`stop_sampled_run`) can stop both if it fails.
sampled_run() {
    local bin=$1 addr=$2 event=$3 data=$4 log=$5
    shift 5
    [[ ${1-} == -- ]] && shift
    RUST_LOG=warn taskset -c 0 "$bin" "$addr" 2>>"$log" &
    SERVER_PID=$!
    (
        sleep "$(awk -v w="$WARMUP" -v c="$CONNS" 'BEGIN { print w + 0.3 + c / 10000 }')"
        exec perf record -q -e "$event" -F 20000 -p "$SERVER_PID" -o "$data" \
            -- sleep "$(awk -v d="$DURATION" 'BEGIN { print d * 0.6 }')" >/dev/null 2>>"$log"
    ) &
    SAMPLER_PID=$!
    LINE=$(taskset -c 1 "$EX/loadgen" --addr "$addr" --pid "$SERVER_PID" \
        --duration "$DURATION" --warmup "$WARMUP" --conns "$CONNS" "$@")
    if ! wait "$SAMPLER_PID"; then
        SAMPLER_PID=""
        echo "sampled-run: perf record failed (see $log)" >&2
        return 1
    fi
    SAMPLER_PID=""
    kill -TERM "$SERVER_PID" 2>/dev/null || echo "sampled-run: the server had already exited (see $log)" >&2
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# The scripts' common start: check that perf can sample EVENT, build the load
# generator and the given examples, make DIR, raise the fd limit and set the
# EXIT trap. Sets EX.
#
#   sampled_setup NAME EVENT DIR EXAMPLE...
sampled_setup() {
    local name=$1 event=$2 dir=$3
    shift 3
    if ! perf record -q -e "$event" -o /dev/null true >/dev/null 2>&1; then
        echo "$name: perf cannot sample here (apt-get install -y linux-perf; run as root)" >&2
        exit 1
    fi
    cargo build --release --quiet --example loadgen $(for ex in "$@"; do echo --example "$ex"; done)
    EX=target/release/examples
    mkdir -p "$dir"
    ulimit -n "$(ulimit -Hn)"
    SERVER_PID=""
    SAMPLER_PID=""
    trap stop_sampled_run EXIT
}

# For the caller's EXIT trap: stop whatever a failed sampled_run left behind.
stop_sampled_run() {
    [[ -n "${SAMPLER_PID-}" ]] && kill "$SAMPLER_PID" 2>/dev/null
    [[ -n "${SERVER_PID-}" ]] && kill "$SERVER_PID" 2>/dev/null
    true
}
