//! Turns the `result ...` lines of `examples/loadgen.rs` into the end-to-end
//! benchmark's report: a markdown table of medians (each server's ratio to the
//! hand-written mio loop) and an SVG chart. `benches/e2e.sh` runs it.
//!
//! Usage: `e2e_report RESULTS OUT.md OUT.svg [SETTINGS]`

use std::fmt::Write as _;

#[path = "report/mod.rs"]
mod report;

use report::{cpu_model, esc, mark, num, parse, thousands, Table};

/// The order servers appear in, and the baseline every ratio is taken to.
const SERVERS: [&str; 7] = [
    "evloop",
    "echo_lines",
    "echo_async",
    "mio",
    "tokio",
    "tokio_lines",
    "calloop",
];
const BASELINE: &str = "mio";
const COLORS: [&str; 7] = [
    "#d62728", "#e377c2", "#ff9896", "#7f7f7f", "#1f77b4", "#aec7e8", "#2ca02c",
];

/// Each server's `key` in scenario `sc` relative to the baseline's.
fn ratio(t: &Table, sc: &str, srv: &str, key: &str) -> Option<f64> {
    Some(t.get(sc, srv, key)? / t.get(sc, BASELINE, key)?)
}

fn markdown(t: &Table, settings: &str) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# End-to-end echo benchmark\n");
    let _ = writeln!(
        w,
        "Regenerate this page and `e2e.svg` with **`benches/e2e.sh`** (about 25 minutes; \
         `QUICK=1 benches/e2e.sh` is a two-minute smoke run; `RUNS`, `DURATION`, `WARMUP`, \
         `SERVERS`, `SCENARIOS`, `PERF=0` are the knobs).\n"
    );
    let _ = writeln!(
        w,
        "Servers, each taking its listen address as first argument and pinned to core 0: \
         **evloop** (`examples/echo.rs`, callbacks), **echo_lines** (`echo --lines`: the \
         callback handler doing eventlet's work, a `write` per complete line; load with \
         `--lines`), **echo_async** (`examples/echo_async.rs`: \
         the same loop with a task per connection, `read_line` then `write_all`; its load ends \
         every message with a newline, `loadgen --lines`), **mio** (`examples/bench_mio_echo.rs`: a hand-written \
         edge-triggered mio loop with a slab, reading until `WouldBlock`; the baseline of every \
         ratio), **tokio** (`examples/bench_tokio_echo.rs`: current-thread runtime, a task and a \
         16 KiB buffer per connection), **tokio_lines** (the same with `--lines`: a \
         `BufReader`, `read_until` a newline into a line, `write_all` it: the work \
         `echo_async` does, written as a tokio user would; load with `--lines`) and **calloop** (`examples/bench_calloop_echo.rs`: one \
         `Generic` source per socket). The load generator (`examples/loadgen.rs`, mio, core 1) \
         keeps `depth` messages in flight per connection, checks every echoed byte, and reads \
         the server's `/proc` and `perf stat` counters over the measured window.\n"
    );
    let _ = writeln!(
        w,
        "Settings: {settings}; every number is the median of {} interleaved runs. \
         Machine: {}, 2 cores, shared and noisy: compare ratios, not absolute numbers.\n",
        t.runs,
        cpu_model()
    );
    let _ = writeln!(w, "![messages per second, relative to the mio loop](e2e.svg)\n");

    let _ = writeln!(w, "## Throughput and round-trip latency\n");
    let _ = writeln!(
        w,
        "| scenario | server | msg/s | × mio | MB/s | p50 µs | p99 µs | p99.9 µs | server CPU | loadgen CPU |"
    );
    let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for sc in &t.scenarios {
        for srv in t.members(sc) {
            let g = |k| t.get(sc, srv, k);
            let _ = writeln!(
                w,
                "| {sc} ({}) | {srv} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.shape(sc),
                thousands(g("msgs_per_s")),
                num(ratio(t, sc, srv, "msgs_per_s"), 2),
                num(g("mb_per_s"), 1),
                num(g("p50_us"), 1),
                num(g("p99_us"), 1),
                num(g("p999_us"), 1),
                num(g("server_cpu"), 2),
                num(g("client_cpu"), 2),
            );
        }
    }

    let _ = writeln!(w, "\n## Per echoed message: what the loop decides\n");
    let _ = writeln!(
        w,
        "System calls of the server counted by `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_*` \
         over exactly the measured window (started disabled, enabled and disabled through its \
         control fifo by the load generator at the window's ends), divided by the messages \
         echoed in it; reads = recvfrom + read + readv, writes = sendto + write + writev, \
         polls = epoll_wait + epoll_pwait. CPU: on-CPU ns from `/proc/PID/schedstat`. User ns: \
         that on-CPU time times the share of the server's `perf record -e cpu-clock -F 4999` \
         samples taken in user mode: the same timer-interrupt split as `/proc/PID/stat`'s utime, \
         with ~50 times its 100 ticks a second (without perf, utime's ticks, which blur \
         anything under ~10 ms of user time over the window). \
         Peak RSS is the server's VmHWM.\n"
    );
    let _ = writeln!(
        w,
        "| scenario | server | syscalls | reads | writes | polls | epoll_ctl | CPU ns | user ns | × mio user | peak RSS KiB |"
    );
    let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for sc in &t.scenarios {
        for srv in t.members(sc) {
            let g = |k| t.get(sc, srv, k);
            let _ = writeln!(
                w,
                "| {sc} | {srv} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(g("syscalls_per_msg"), 3),
                num(g("reads_per_msg"), 3),
                num(g("writes_per_msg"), 3),
                num(g("polls_per_msg"), 3),
                num(g("ctls_per_msg"), 3),
                num(g("cpu_ns_per_msg"), 0),
                num(g("user_ns_per_msg"), 0),
                num(ratio(t, sc, srv, "user_ns_per_msg"), 2),
                thousands(g("hwm_kb")),
            );
        }
    }

    let big = t
        .scenarios
        .iter()
        .max_by_key(|sc| t.get(sc, BASELINE, "conns").unwrap_or(0.0) as u64);
    if let Some(sc) = big {
        let n = t.get(sc, BASELINE, "conns").unwrap_or(0.0);
        let _ = writeln!(
            w,
            "\n## Memory per connection ({sc}: {} idle connections)\n",
            thousands(Some(n))
        );
        let _ = writeln!(
            w,
            "(VmRSS once every connection is open and has echoed one message − VmRSS before \
             connecting) / connections.\n"
        );
        let _ = writeln!(
            w,
            "| server | RSS before KiB | RSS idle KiB | bytes / connection | − mio B | peak RSS KiB |"
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|");
        for srv in t.members(sc) {
            let g = |k| t.get(sc, srv, k);
            let diff = g("rss_per_conn_b")
                .zip(t.get(sc, BASELINE, "rss_per_conn_b"))
                .map(|(a, b)| a - b);
            let _ = writeln!(
                w,
                "| {srv} | {} | {} | {} | {} | {} |",
                thousands(g("rss_before_kb")),
                thousands(g("rss_idle_kb")),
                num(g("rss_per_conn_b"), 0),
                num(diff, 0),
                thousands(g("hwm_kb")),
            );
        }
    }

    let _ = writeln!(w, "\n## Targets (evloop)\n");
    let _ = writeln!(
        w,
        "User CPU is judged from the sampled user time above (clock ticks when perf is \
         missing); `benches/e2e-profile.sh` counts user instructions per message under \
         callgrind, repeatably (see the link below): what a server executes, where the \
         sampled time also carries what each system call's return costs in user mode. \
         `perf` counts and samples during every measured window, for every server alike.\n"
    );
    for line in targets(t) {
        let _ = writeln!(w, "- {line}");
    }
    let tasks = async_targets(t);
    if !tasks.is_empty() {
        let _ = writeln!(w, "\n## Targets (echo_async: tasks beside callbacks)\n");
        for line in tasks {
            let _ = writeln!(w, "- {line}");
        }
    }
    let _ = writeln!(
        w,
        "\nWhere the time and the system calls go, with profiles: [e2e-profile.md](e2e-profile.md)."
    );
    md
}

/// The issue's targets, checked against the medians.
fn targets(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for sc in &t.scenarios {
        let g = |srv, k| t.get(sc, srv, k);
        let depth = g("evloop", "depth").unwrap_or(0.0);
        if let (Some(r), Some(wr), Some(p)) = (
            g("evloop", "reads_per_msg"),
            g("evloop", "writes_per_msg"),
            g("evloop", "polls_per_msg"),
        ) {
            if depth <= 1.0 {
                out.push(format!(
                    "{} {sc}: at most one read and one write per message (reads {r:.3}, writes {wr:.3}, polls {p:.3})",
                    mark(r <= 1.005 && wr <= 1.005)
                ));
            } else {
                out.push(format!(
                    "{} {sc}: fewer than one read and one write per message (reads {r:.3}, writes {wr:.3})",
                    mark(r < 1.0 && wr < 1.0)
                ));
            }
        }
        if let Some(ev) = g("evloop", "user_ns_per_msg") {
            let peers: Vec<String> = ["mio", "tokio"]
                .iter()
                .filter_map(|p| Some((*p, g(p, "user_ns_per_msg")?)))
                .map(|(p, v)| format!("{p} {v:.0}"))
                .collect();
            let ok = ["mio", "tokio"]
                .iter()
                .all(|p| g(p, "user_ns_per_msg").map_or(true, |v| ev < v));
            out.push(format!(
                "{} {sc}: user CPU per message below mio's and tokio's (evloop {ev:.0} ns; {})",
                mark(ok),
                peers.join(", ")
            ));
        }
        if let Some(ev) = g("evloop", "msgs_per_s") {
            let best = t
                .members(sc)
                .filter(|s| *s != "evloop")
                .filter_map(|s| Some((s, g(s, "msgs_per_s")?)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((peer, v)) = best {
                out.push(format!(
                    "{} {sc}: msg/s ≥ 0.97 × the best peer ({:.2} × {peer})",
                    mark(ev >= 0.97 * v),
                    ev / v
                ));
            }
        }
        if let Some(ev) = g("evloop", "p99_us") {
            let peers: Vec<(&str, f64)> = t
                .members(sc)
                .filter(|s| *s != "evloop")
                .filter_map(|s| Some((s, g(s, "p99_us")?)))
                .collect();
            if !peers.is_empty() {
                let listed: Vec<String> = peers.iter().map(|(p, v)| format!("{p} {v:.1}")).collect();
                out.push(format!(
                    "{} {sc}: p99 round trip no worse than any peer's (evloop {ev:.1} µs; {})",
                    mark(peers.iter().all(|&(_, v)| ev <= v)),
                    listed.join(", ")
                ));
            }
        }
    }
    let big = t
        .scenarios
        .iter()
        .max_by_key(|sc| t.get(sc, BASELINE, "conns").unwrap_or(0.0) as u64);
    if let Some(sc) = big {
        let g = |srv| t.get(sc, srv, "rss_per_conn_b");
        if let (Some(ev), Some(m)) = (g("evloop"), g("mio")) {
            let tokio = g("tokio");
            let ok = ev - m <= 1024.0 && tokio.map_or(true, |to| ev < to / 2.0);
            out.push(format!(
                "{} {sc}: RSS per connection within 1 KiB of mio's and far below tokio's \
                 (evloop {ev:.0} B, mio {m:.0} B, tokio {} B)",
                mark(ok),
                num(tokio, 0)
            ));
        }
    }
    out
}

/// Tasks' targets: CPU per message within 1.10x of the callback echo and
/// below tokio's, the same system calls per message, and at most 1 KiB of
/// RSS per idle connection at the largest scenario.
fn async_targets(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for sc in &t.scenarios {
        let g = |srv, k| t.get(sc, srv, k);
        for (key, what) in [("cpu_ns_per_msg", "server CPU"), ("user_ns_per_msg", "user CPU")] {
            let (Some(a), Some(e)) = (g("echo_async", key), g("evloop", key)) else {
                continue;
            };
            let tokio = g("tokio", key);
            out.push(format!(
                "{} {sc}: {what} per message within 1.10 × echo's and below tokio's \
                 ({:.2} × echo; echo_async {a:.0} ns, echo {e:.0} ns, tokio {} ns, \
                 tokio_lines {} ns)",
                mark(a <= 1.10 * e && tokio.map_or(true, |to| a < to)),
                a / e,
                num(tokio, 0),
                num(g("tokio_lines", key), 0)
            ));
            // The same work as a callback: what the task layer itself costs.
            if let Some(l) = g("echo_lines", key) {
                out.push(format!(
                    "{} {sc}: {what} per message within 1.10 × the callback line echo's \
                     ({:.2} × echo_lines; echo_async {a:.0} ns, echo_lines {l:.0} ns)",
                    mark(a <= 1.10 * l),
                    a / l
                ));
            }
        }
        if let (Some(a), Some(e)) = (
            g("echo_async", "syscalls_per_msg"),
            g("evloop", "syscalls_per_msg"),
        ) {
            out.push(format!(
                "{} {sc}: system calls per message no more than echo's (echo_async {a:.3}, echo {e:.3})",
                // Fewer is better (writes of several lines leave together).
                mark(a <= e + 0.02 * e.max(0.05))
            ));
        }
    }
    let big = t
        .scenarios
        .iter()
        .max_by_key(|sc| t.get(sc, BASELINE, "conns").unwrap_or(0.0) as u64);
    if let Some(sc) = big {
        if let Some(a) = t.get(sc, "echo_async", "rss_per_conn_b") {
            out.push(format!(
                "{} {sc}: RSS per idle connection at most 1 KiB (echo_async {a:.0} B, tokio {} B)",
                mark(a <= 1024.0),
                num(t.get(sc, "tokio", "rss_per_conn_b"), 0)
            ));
        }
    }
    out
}

/// Grouped horizontal bars: each scenario's msg/s per server, relative to mio.
fn svg(t: &Table) -> String {
    let (left, top, bar, gap, width) = (190.0, 50.0, 14.0, 16.0, 560.0);
    let group = SERVERS.len() as f64 * bar + gap;
    let height = top + t.scenarios.len() as f64 * group + 50.0;
    let max = t
        .scenarios
        .iter()
        .flat_map(|sc| SERVERS.iter().filter_map(move |s| ratio(t, sc, s, "msgs_per_s")))
        .fold(1.0f64, f64::max)
        .max(1.2)
        * 1.1;
    let x = |r: f64| left + r / max * width;
    let mut s = String::new();
    let total_w = left + width + 40.0;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" font-size="15" text-anchor="middle">Echoed messages per second, relative to the hand-written mio loop (median of {} runs)</text>"#,
        total_w / 2.0,
        t.runs
    );
    for (i, (srv, color)) in SERVERS.iter().zip(COLORS).enumerate() {
        let lx = left + i as f64 * 110.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="30" width="12" height="12" fill="{color}"/>"#
        );
        let _ = writeln!(s, r#"<text x="{}" y="40">{srv}</text>"#, lx + 16.0);
    }
    let mut tick = 0.0;
    while tick <= max {
        let tx = x(tick);
        let stroke = if (tick - 1.0f64).abs() < 1e-9 {
            "#000"
        } else {
            "#ddd"
        };
        let _ = writeln!(
            s,
            r#"<line x1="{tx}" y1="{top}" x2="{tx}" y2="{}" stroke="{stroke}"/>"#,
            height - 40.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{tx}" y="{}" text-anchor="middle">{tick}×</text>"#,
            height - 25.0
        );
        tick += if max > 3.0 { 0.5 } else { 0.25 };
    }
    for (gi, sc) in t.scenarios.iter().enumerate() {
        let gy = top + gi as f64 * group;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 8.0,
            gy + 2.0 * bar + 4.0,
            esc(sc)
        );
        for (si, (srv, color)) in SERVERS.iter().zip(COLORS).enumerate() {
            let Some(r) = ratio(t, sc, srv, "msgs_per_s") else {
                continue;
            };
            let y = gy + si as f64 * bar;
            let _ = writeln!(
                s,
                r#"<rect x="{left}" y="{y}" width="{:.1}" height="{}" fill="{color}"><title>{srv} {sc}: {} msg/s</title></rect>"#,
                x(r) - left,
                bar - 2.0,
                thousands(t.get(sc, srv, "msgs_per_s"))
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" font-size="10">{r:.2}</text>"#,
                x(r) + 3.0,
                y + bar - 4.0
            );
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: e2e_report RESULTS OUT.md OUT.svg [SETTINGS]");
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&args[1]).unwrap_or_else(|e| {
        eprintln!("e2e_report: {}: {e}", args[1]);
        std::process::exit(2);
    });
    let table = Table::new(&parse(&text), "server", &SERVERS, |_, _| true);
    if table.scenarios.is_empty() {
        eprintln!("e2e_report: no result lines in {}", args[1]);
        std::process::exit(2);
    }
    let settings = args.get(4).map_or("", String::as_str);
    let write = |path: &str, body: String| {
        std::fs::write(path, body).unwrap_or_else(|e| {
            eprintln!("e2e_report: {path}: {e}");
            std::process::exit(2);
        })
    };
    write(&args[2], markdown(&table, settings));
    write(&args[3], svg(&table));
}
