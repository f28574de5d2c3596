#!/usr/bin/env bash
# HTTP benchmark: evloop's http example against the same server on tokio's
# current-thread runtime (examples/bench_tokio_http.rs, same parser), both
# driven by wrk with 50 connections, plain and pipelined at depth 16.
# Regenerates docs/bench/http.md.
#
#   benches/http.sh            full run: 3 interleaved runs, 10 s each (about 3 minutes
#                              on a quiet machine, half a minute more per repeated measurement)
#   QUICK=1 benches/http.sh    smoke run: 1 run, 2 s each
#
# Knobs (environment): RUNS, DURATION and WARMUP (whole seconds per wrk run;
# WARMUP=0 skips the unmeasured load before each measurement), OUT (default
# docs/bench), MAX_OTHER (default 0.05: a measurement during which other
# processes used more cores than this is repeated after PAUSE seconds, 20, up
# to RETRIES times in all, 10; a smoke run measures once). The server runs on
# core 0 and wrk on core 1 (taskset). Needs wrk (apt-get install -y wrk);
# fails if wrk reports any error or non-2xx response, since a server that
# answers errors fast would win unfairly.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
    echo "http: wrk is not installed (apt-get install -y wrk); nothing measured" >&2
    exit 1
fi

if [[ "${QUICK:-0}" == 1 ]]; then
    RUNS=${RUNS:-1} DURATION=${DURATION:-2} WARMUP=${WARMUP:-1} RETRIES=${RETRIES:-1}
else
    RUNS=${RUNS:-3} DURATION=${DURATION:-10} WARMUP=${WARMUP:-1} RETRIES=${RETRIES:-10}
fi
OUT=${OUT:-docs/bench}
MAX_OTHER=${MAX_OTHER:-0.05} PAUSE=${PAUSE:-20}
CONNS=50
SERVERS="evloop tokio"
SHAPES="plain pipe16"
declare -A DEPTH=([plain]=1 [pipe16]=16)
declare -A BIN=([evloop]=http [tokio]=bench_tokio_http)
SCRIPT=benches/pipeline.lua

cargo build --release --quiet --example http --example bench_tokio_http
EX=target/release/examples
TCK=$(getconf CLK_TCK)

mkdir -p target/http "$OUT"
RESULTS=target/http/results.txt
: >"$RESULTS"
: >target/http/servers.log
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap stop_server EXIT
# An interrupted run still goes through the EXIT trap.
trap 'exit 130' INT TERM

fail() {
    echo "http: $*" >&2
    exit 1
}

# Two pipelined requests, the second asking to close: both must come back
# as 200 with the body, in one connection.
check_server() {
    local resp
    resp=$(
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
        timeout 5 cat <&3
    ) || return 1
    # A body has no line end, so the second status line follows it directly.
    [[ $(grep -o $'HTTP/1.1 200 OK\r' <<<"$resp" | wc -l) == 2 && $(grep -o 'Hello, World!' <<<"$resp" | wc -l) == 2 ]]
}

# Start server $1 on a free port (in PORT), pinned to core 0, and wait until
# it answers correctly. A port someone else holds makes the server exit;
# then the next port is tried.
PORT=$((10000 + RANDOM % 8000))
start_server() {
    for _ in 1 2 3 4 5; do
        PORT=$((PORT + 1))
        RUST_LOG=warn taskset -c 0 "$EX/${BIN[$1]}" "127.0.0.1:$PORT" 2>>target/http/servers.log &
        SERVER_PID=$!
        for _ in $(seq 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
                check_server "$PORT" || fail "$1 on port $PORT does not answer two pipelined GETs with 200 and the body"
                return
            fi
            sleep 0.05
        done
        stop_server
    done
    fail "$1 did not start (see target/http/servers.log)"
}

# utime and stime of process $1, in clock ticks (fields 14 and 15 of
# proc_pid_stat(5); the command name in field 2 may hold spaces, so count
# from after its closing parenthesis).
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    read -r -a f <<<"${stat##*) }"
    echo "${f[11]} ${f[12]}"
}

# Busy clock ticks of cores 0 and 1 together, whoever ran there: user,
# nice, system, irq and softirq (a process's stime can include softirq work
# done in its context, which /proc/stat counts as softirq).
cores_busy() {
    awk '$1 == "cpu0" || $1 == "cpu1" { t += $2 + $3 + $4 + $7 + $8 } END { print t }' /proc/stat
}

# wrk at depth $1 for $2 seconds against PORT; its output goes to file $3,
# its user+system CPU seconds to WRK_CPU. Any socket error or non-2xx
# response aborts the benchmark.
run_wrk() {
    local TIMEFORMAT='%3U %3S' times
    times=$({ time WRK_CONNECTIONS=$CONNS taskset -c 1 wrk -t1 -c"$CONNS" -d"$2" --latency \
        -s "$SCRIPT" "http://127.0.0.1:$PORT/" -- "$1" >"$3" 2>&1; } 2>&1) ||
        fail "wrk failed; its output: $(cat "$3")"
    WRK_CPU=$(awk '{ print $1 + $2 }' <<<"$times")
    # The script's line ends in the five error counts; a negative sample
    # count means it could not undo wrk's latency correction.
    if grep -q -e 'Non-2xx' -e 'Socket errors' "$3" || ! grep -q '^RESULT [0-9][0-9]* [0-9][0-9]* [0-9][0-9]* .* 0 0 0 0 0$' "$3"; then
        fail "wrk reports errors against ${BIN[$srv]}:
$(cat "$3")"
    fi
}

# One measurement of server $1 at depth $2, appended to RESULTS as a line
# of run $3; sets OTHER to the cores other processes used meanwhile. Runs
# in this shell, not a $(...) subshell, so the EXIT trap knows the server.
measure() {
    local srv=$1 depth=$2 run=$3 log=target/http/wrk-$1-$shape-$3.txt
    start_server "$srv"
    if ((WARMUP > 0)); then
        run_wrk "$depth" "$WARMUP" "$log"
    fi
    read -r u0 s0 < <(cpu_ticks "$SERVER_PID")
    b0=$(cores_busy) t0=$EPOCHREALTIME
    run_wrk "$depth" "$DURATION" "$log"
    b1=$(cores_busy) t1=$EPOCHREALTIME
    read -r u1 s1 < <(cpu_ticks "$SERVER_PID")
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
    stop_server
    read -r _ reqs dur_us _ p50 p99 _ <<<"$(grep '^RESULT ' "$log")"
    # CPU on the two cores that was neither the server's nor wrk's: other
    # tenants of this machine (and kernel threads), in cores.
    OTHER=$(awk -v b=$((b1 - b0)) -v srv=$((u1 - u0 + s1 - s0)) -v wrk="$WRK_CPU" -v tck="$TCK" \
        -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f", (b / tck - srv / tck - wrk) / (t1 - t0) }')
    echo "$shape $srv $run $reqs $dur_us $p50 $p99 $((u1 - u0)) $((s1 - s0)) $hwm $WRK_CPU $OTHER" >>"$RESULTS"
}

REDONE=0
for run in $(seq 1 "$RUNS"); do
    # Alternate which server goes first, so a drift in the machine's load
    # during a run does not always favour the same one.
    order=$SERVERS
    ((run % 2 == 0)) && order=$(tr ' ' '\n' <<<"$SERVERS" | tac | xargs)
    for shape in $SHAPES; do
        for srv in $order; do
            # A measurement that shared its cores with someone else's work
            # says little about the server: drop it and measure again, a
            # bounded number of times, after a pause.
            for attempt in $(seq 1 "$RETRIES"); do
                echo "http: run $run/$RUNS  $shape  $srv" >&2
                measure "$srv" "${DEPTH[$shape]}" "$run"
                if awk -v o="$OTHER" -v m="$MAX_OTHER" 'BEGIN { exit !(o <= m) }' || ((attempt == RETRIES)); then
                    break
                fi
                echo "http: other processes took $OTHER cores meanwhile; measuring again in ${PAUSE}s" >&2
                sed -i '$d' "$RESULTS"
                REDONE=$((REDONE + 1))
                sleep "$PAUSE"
            done
        done
    done
done

# The median of the numbers on stdin.
median() {
    sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Column $3 of the results for shape $1 and server $2, derived per run:
# rps, p50, p99, user ns/req, sys ns/req, cpu (cores busy), wrk, hwm. Their
# median, or with $4 = all every run's value in ascending order.
series() {
    awk -v shape="$1" -v srv="$2" -v col="$3" -v tck="$TCK" '
        $1 == shape && $2 == srv {
            reqs = $4; secs = $5 / 1e6
            if (col == "rps")  print reqs / secs
            if (col == "p50")  print $6
            if (col == "p99")  print $7
            if (col == "user") print $8 * 1e9 / tck / reqs
            if (col == "sys")  print $9 * 1e9 / tck / reqs
            if (col == "cpu")  print ($8 + $9) / tck / secs
            if (col == "hwm")  print $10
            if (col == "wrk")  print $11 / secs
        }' "$RESULTS" | if [[ "${4:-}" == all ]]; then sort -g; else median; fi
}

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
other_max=$(awk '$12 > m { m = $12 } END { printf "%.2f", m }' "$RESULTS")
if awk -v m="$other_max" -v max="$MAX_OTHER" 'BEGIN { exit !(m > max) }'; then
    echo "http: other processes used up to $other_max cores during a run; the numbers are distorted" >&2
fi
{
    echo "# HTTP benchmark: evloop against tokio under wrk"
    echo
    echo "Regenerate this page with **\`benches/http.sh\`** (about 3 minutes on a quiet machine; \`QUICK=1 benches/http.sh\` is a smoke run; \`RUNS\`, \`DURATION\`, \`WARMUP\`, \`OUT\` are the knobs)."
    echo
    echo "Servers, each pinned to core 0 and restarted for every measurement: **evloop** (\`examples/http.rs\`) and **tokio** (\`examples/bench_tokio_http.rs\`: the same server on tokio's current-thread runtime, a task per connection, the same parser, one \`write_all\` per read). Both answer the TechEmpower plaintext shape (\`Hello, World!\`, keep-alive, a \`Date\` header refreshed once a second). wrk runs on core 1:"
    echo
    echo '```'
    echo "taskset -c 0 target/release/examples/http 127.0.0.1:PORT     # or bench_tokio_http"
    echo "WRK_CONNECTIONS=$CONNS taskset -c 1 wrk -t1 -c$CONNS -d$DURATION --latency -s benches/pipeline.lua http://127.0.0.1:PORT/ -- DEPTH"
    echo '```'
    echo
    echo "DEPTH is 1 for **plain** (wrk's static request, no Lua per request) and 16 for **pipe16** (16 requests per write; wrk waits for all 16 responses before sending the next batch). Each measurement follows ${WARMUP} s of unmeasured load on the same server. wrk reported no socket errors and no non-2xx responses in any run (the script fails otherwise)."
    echo
    echo "- **Latency** is what wrk measured, from the write of a request (plain) or of a batch of 16 (pipe16) to its last response, without wrk's coordinated-omission correction: with pipelining wrk 4.1 applies that with a 16 times too short interval and its own p90/p99 come out as 0, so \`benches/pipeline.lua\` undoes it, for both shapes alike (wrk's corrected printout is kept in \`target/http/wrk-*.txt\`)."
    echo "- **user, sys ns/req**: the change in the server's \`utime\` and \`stime\` (\`/proc/PID/stat\`, clock ticks of 1/${TCK} s) over the measured run, divided by the requests wrk completed."
    echo "- **server CPU**, **wrk CPU**: the fraction of its core each was busy. A server near 1.0 is the bottleneck; below it, it waits for wrk or the kernel's loopback path. With wrk near 1.0, wrk is the bottleneck: requests/s then says more about the machine and wrk than about the server, and the CPU per request is the comparison that counts. Neither includes softirq time (much of loopback's receive path), which the kernel accounts to no process."
    echo "- **peak RSS**: the server's \`VmHWM\` at the end of the run (warm-up included)."
    echo "- **other**: CPU on the two cores that was neither the server's nor wrk's (\`/proc/stat\` user+nice+system+irq+softirq, in cores): other tenants of the machine, which distort a run. A measurement during which they took more than $MAX_OTHER cores was dropped and repeated after ${PAUSE} s (up to $RETRIES times); $REDONE were."
    echo
    echo "Settings: runs=$RUNS duration=${DURATION}s warmup=${WARMUP}s connections=$CONNS; every number is the median of $RUNS interleaved runs. Machine: $cpu_model, $(nproc) cores, shared and noisy: compare ratios, not absolute numbers. $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), Linux $(uname -r). Other processes used at most $other_max cores during a measured run."
    echo
    echo "| shape | server | requests/s | runs' range, k | × tokio | p50 µs | p99 µs | user ns/req | sys ns/req | server CPU | wrk CPU | peak RSS KiB |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for shape in $SHAPES; do
        base=$(series "$shape" tokio rps)
        for srv in $SERVERS; do
            rps=$(series "$shape" "$srv" rps)
            printf '| %s | %s | %s | %s | %.2f | %s | %s | %.0f | %.0f | %.2f | %.2f | %s |\n' \
                "$shape (c$CONNS, depth ${DEPTH[$shape]})" "$srv" \
                "$(printf '%.0f' "$rps" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')" \
                "$(series "$shape" "$srv" rps all | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f–%.0f", lo / 1e3, hi / 1e3 }')" \
                "$(awk -v a="$rps" -v b="$base" 'BEGIN { print a / b }')" \
                "$(series "$shape" "$srv" p50)" "$(series "$shape" "$srv" p99)" \
                "$(series "$shape" "$srv" user)" "$(series "$shape" "$srv" sys)" \
                "$(series "$shape" "$srv" cpu)" "$(series "$shape" "$srv" wrk)" \
                "$(series "$shape" "$srv" hwm)"
        done
    done
    echo
    echo "## Every run"
    echo
    echo "| shape | server | run | requests | seconds | requests/s | p50 µs | p99 µs | utime ticks | stime ticks | peak RSS KiB | wrk CPU s | other |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    sort -k1,1r -k2,2 -k3,3n "$RESULTS" | awk '{
        printf "| %s | %s | %s | %s | %.2f | %.0f | %s | %s | %s | %s | %s | %s | %s |\n",
            $1, $2, $3, $4, $5 / 1e6, $4 / ($5 / 1e6), $6, $7, $8, $9, $10, $11, $12 }'
} >"$OUT/http.md"
echo "http: wrote $OUT/http.md" >&2
