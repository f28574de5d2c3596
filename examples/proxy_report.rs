//! Turns the `result ...` lines of `examples/loadgen.rs` from
//! `benches/proxy.sh` into the proxy benchmark's report: a markdown table of
//! medians per forwarded message (the proxy's CPU time and system calls),
//! evloop's ratio to the better of haproxy and nginx, the memory per proxied
//! pair, the targets, and an SVG bar chart of CPU per message.
//!
//! Usage: `proxy_report RESULTS OUT.md OUT.svg [SETTINGS [NOTE...]]`

use std::fmt::Write as _;

#[path = "report/mod.rs"]
mod report;

use report::{cpu_model, esc, mark, num, parse, thousands, Row, Table};

/// The order proxies appear in; the first is the one judged against the others.
const PROXIES: [&str; 3] = ["evloop", "haproxy", "nginx"];
const PEERS: [&str; 2] = ["haproxy", "nginx"];
const COLORS: [&str; 3] = ["#d62728", "#1f77b4", "#2ca02c"];
/// The scenario whose idle connections measure memory per pair.
const RSS_SCENARIO: &str = "c1000_d1";
/// Target: bytes of RSS per proxied pair.
const RSS_TARGET_B: f64 = 512.0;
/// What the counting pass (`pass=count`, loadgen with `--perf`) contributes;
/// everything else comes from the uninstrumented pass, perf's own cost
/// being out of its CPU time.
const COUNT_KEYS: [&str; 5] = [
    "syscalls_per_msg",
    "reads_per_msg",
    "writes_per_msg",
    "polls_per_msg",
    "ctls_per_msg",
];

/// Which pass a row's key comes from: the counting pass's figures from
/// it, everything else from the uninstrumented pass.
fn keep(row: &Row, key: &str) -> bool {
    let counting = row.get("pass").is_some_and(|p| p == "count");
    counting == COUNT_KEYS.contains(&key)
}

/// CPU per message in µs (loadgen reports on-CPU ns, user + system).
fn cpu_us(t: &Table, sc: &str, px: &str) -> Option<f64> {
    Some(t.get(sc, px, "cpu_ns_per_msg")? / 1000.0)
}

/// The lower of haproxy's and nginx's `value`, and whose it is.
fn best_peer(value: impl Fn(&str) -> Option<f64>) -> Option<(&'static str, f64)> {
    PEERS
        .into_iter()
        .filter_map(|p| Some((p, value(p)?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// Three significant figures or so: 0.452, 7.41, 54.2, 131.
fn us(v: Option<f64>) -> String {
    match v {
        Some(x) if x < 1.0 => format!("{x:.3}"),
        Some(x) if x < 10.0 => format!("{x:.2}"),
        Some(x) if x < 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.0}"),
        None => "–".into(),
    }
}

fn markdown(t: &Table, settings: &str, notes: &[String]) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# TCP proxy benchmark\n");
    let _ = writeln!(
        w,
        "Regenerate this page and `proxy.svg` with **`benches/proxy.sh`** (about 8 minutes on an \
         idle machine; `QUICK=1 benches/proxy.sh` is a one-run smoke run; `RUNS`, `DURATION`, `WARMUP`, \
         `PERF_DURATION`, `PROXIES`, `SCENARIOS`, `PERF=0`, `QUIET_WAIT`, `OUT` are the knobs).\n"
    );
    let _ = writeln!(
        w,
        "Proxies, each forwarding `LISTEN` → `UPSTREAM` and pinned alone to core 0: **evloop** \
         (`examples/proxy.rs`), **haproxy** (`mode tcp`, `nbthread 1`, `maxconn 4096`, \
         hour-long client/server timeouts, no logging, `-db` so the process started is the one \
         that forwards) and **nginx** (the `stream` module, `worker_processes 1`, \
         `master_process off` and `daemon off` for the same reason, `worker_connections 8192`, \
         `proxy_timeout 1h`); buffers at each one's defaults (16 KiB for both peers). Upstream: \
         `examples/bench_mio_echo.rs`. The load generator (`examples/loadgen.rs`) keeps `depth` \
         messages in flight per connection and checks every echoed byte; it shares core 1 with \
         the echo server, which costs the same whichever proxy feeds it. Every figure is the **proxy's**: `loadgen --pid` reads its `/proc` counters (and \
         attaches `perf` to it in the counting pass) over the measured window only, warm-up \
         and connecting excluded. A message is \
         one round trip through the proxy: client → proxy → echo → proxy → client. A fresh \
         proxy and echo server are started for every measurement; runs are interleaved, each \
         starting with the next proxy.\n"
    );
    let _ = writeln!(
        w,
        "Settings: {settings}; every number is the median of {} run{}. Machine: {}, {} cores, \
         shared: compare proxies within a scenario, not absolute numbers across machines.\n",
        t.runs,
        if t.runs == 1 { "" } else { "s" },
        cpu_model(),
        cores()
    );
    for n in notes {
        let _ = writeln!(w, "> **Note:** {n}\n");
    }
    let _ = writeln!(
        w,
        "![proxy CPU µs per forwarded message, by scenario (log scale)](proxy.svg)\n"
    );

    let _ = writeln!(w, "## Per forwarded message\n");
    let _ = writeln!(
        w,
        "Each measurement is two passes against one fresh proxy. The first, with nothing \
         attached to the proxy, gives msg/s, latency and CPU: the proxy's on-CPU time from \
         `/proc/PID/schedstat` (user + system, which on loopback includes delivering what it \
         sends into the receiver's socket) divided by the messages in the window. The second \
         counts system calls with `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_*` \
         on the proxy over exactly its window (perf's per-call cost would otherwise inflate \
         the CPU figures, the more so the more calls a proxy makes): reads = recvfrom + read \
         + readv, writes = sendto + write + writev, polls = epoll_wait + epoll_pwait. Proxy load: the proxy's CPU \
         time over the window's wall time; where it is near 1 the proxy's core is what limits \
         the rate, and CPU per message is the inverse of its msg/s. Wait: the share of the \
         run the proxy was runnable while another task held core 0 (the run-queue time of \
         `/proc/PID/schedstat`); above a percent or two something else competed for its core \
         and its figures are inflated (the script takes such a measurement again).\n"
    );
    let _ = writeln!(
        w,
        "| scenario | proxy | msg/s | CPU µs | syscalls | reads | writes | polls | epoll_ctl | proxy load | wait % | p50 µs | p99 µs |"
    );
    let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for sc in &t.scenarios {
        for px in t.members(sc) {
            let g = |k| t.get(sc, px, k);
            let _ = writeln!(
                w,
                "| {sc} ({}) | {px} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.shape(sc),
                thousands(g("msgs_per_s")),
                us(cpu_us(t, sc, px)),
                num(g("syscalls_per_msg"), 2),
                num(g("reads_per_msg"), 2),
                num(g("writes_per_msg"), 2),
                num(g("polls_per_msg"), 2),
                num(g("ctls_per_msg"), 2),
                num(g("server_cpu"), 2),
                num(g("proxy_runq_pct"), 1),
                num(g("p50_us"), 1),
                num(g("p99_us"), 1),
            );
        }
    }

    let _ = writeln!(w, "\n## evloop against the better peer\n");
    let _ = writeln!(
        w,
        "Ratio = evloop ÷ the lower of haproxy's and nginx's figure in that scenario \
         (below 1: evloop spends less).\n"
    );
    let _ = writeln!(
        w,
        "| scenario | evloop CPU µs | better peer | × peer | evloop syscalls | better peer | × peer |"
    );
    let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|");
    for sc in &t.scenarios {
        let cpu = best_peer(|p| cpu_us(t, sc, p));
        let sys = best_peer(|p| t.get(sc, p, "syscalls_per_msg"));
        let ev_cpu = cpu_us(t, sc, "evloop");
        let ev_sys = t.get(sc, "evloop", "syscalls_per_msg");
        let peer = |b: Option<(&str, f64)>, f: &dyn Fn(Option<f64>) -> String| {
            b.map_or_else(|| "–".into(), |(p, v)| format!("{} ({p})", f(Some(v))))
        };
        let _ = writeln!(
            w,
            "| {sc} | {} | {} | {} | {} | {} | {} |",
            us(ev_cpu),
            peer(cpu, &us),
            num(ev_cpu.zip(cpu).map(|(e, (_, b))| e / b), 2),
            num(ev_sys, 2),
            peer(sys, &|v| num(v, 2)),
            num(ev_sys.zip(sys).map(|(e, (_, b))| e / b), 2),
        );
    }

    if t.scenarios.iter().any(|s| s == RSS_SCENARIO) {
        let sc = RSS_SCENARIO;
        let n = t.members(sc).find_map(|p| t.get(sc, p, "conns")).unwrap_or(0.0);
        let _ = writeln!(
            w,
            "\n## Memory per proxied pair ({sc}: {} pairs open)\n",
            thousands(Some(n))
        );
        let _ = writeln!(
            w,
            "(the proxy's VmRSS once every client connection is open and has had one message \
             echoed through its upstream connection − its VmRSS at start, read by the load \
             generator once the proxy accepts connections) ÷ pairs, in the uninstrumented pass. A pair is the client's connection and the proxy's upstream \
             one; kernel socket buffers are not in RSS. Peak: VmHWM after the load.\n"
        );
        let _ = writeln!(
            w,
            "| proxy | RSS at start KiB | RSS with the pairs KiB | bytes / pair | peak RSS KiB |"
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|");
        for px in t.members(sc) {
            let g = |k| t.get(sc, px, k);
            let _ = writeln!(
                w,
                "| {px} | {} | {} | {} | {} |",
                thousands(g("rss_before_kb")),
                thousands(g("rss_idle_kb")),
                thousands(g("rss_per_conn_b")),
                thousands(g("hwm_kb")),
            );
        }
    }

    let _ = writeln!(w, "\n## Targets (evloop)\n");
    for line in targets(t) {
        let _ = writeln!(w, "- {line}");
    }
    md
}

/// The issue's targets: CPU and system calls per message at or below the
/// better peer's in every scenario; RSS per pair at most 512 B.
fn targets(t: &Table) -> Vec<String> {
    let measured = t.scenarios.iter().any(|sc| t.members(sc).any(|p| p == "evloop"));
    if !measured {
        return vec!["not judged: evloop was not measured in this run".into()];
    }
    let mut out = Vec::new();
    // (what, loadgen's key, scale to the unit shown, how to show it)
    type Show = fn(Option<f64>) -> String;
    let metrics: [(&str, &str, f64, Show); 2] = [
        ("CPU µs", "cpu_ns_per_msg", 1e-3, us),
        ("system calls", "syscalls_per_msg", 1.0, |v| num(v, 2)),
    ];
    for (what, key, scale, fmt) in metrics {
        let value = |sc: &str, p: &str| Some(t.get(sc, p, key)? * scale);
        let mut all = true;
        let mut parts = Vec::new();
        for sc in &t.scenarios {
            let Some(ev) = value(sc, "evloop") else {
                all = false;
                parts.push(format!("{sc}: evloop not measured"));
                continue;
            };
            match best_peer(|p| value(sc, p)) {
                Some((peer, b)) => {
                    all &= ev <= b;
                    parts.push(format!(
                        "{sc} {} {} vs {} ({peer})",
                        mark(ev <= b),
                        fmt(Some(ev)),
                        fmt(Some(b))
                    ));
                }
                None => parts.push(format!("{sc}: no peer measured")),
            }
        }
        out.push(format!(
            "{} {what} per message at or below the better peer's in every scenario: {}",
            mark(all),
            parts.join("; ")
        ));
    }
    match t.get(RSS_SCENARIO, "evloop", "rss_per_conn_b") {
        Some(b) => out.push(format!(
            "{} RSS per proxied pair ≤ {RSS_TARGET_B:.0} B at 1,000 pairs: {} B",
            mark(b <= RSS_TARGET_B),
            thousands(Some(b))
        )),
        None => out.push(format!(
            "RSS per proxied pair ≤ {RSS_TARGET_B:.0} B: not judged ({RSS_SCENARIO} not run)"
        )),
    }
    out
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// Grouped horizontal bars: each scenario's CPU µs per message per proxy, on
/// a log scale (the scenarios span more than two decades).
fn svg(t: &Table) -> String {
    let (left, top, bar, gap, width) = (190.0, 50.0, 14.0, 16.0, 560.0);
    let group = PROXIES.len() as f64 * bar + gap;
    let height = top + t.scenarios.len() as f64 * group + 50.0;
    let values: Vec<f64> = t
        .scenarios
        .iter()
        .flat_map(|sc| PROXIES.iter().filter_map(move |p| cpu_us(t, sc, p)))
        .filter(|v| *v > 0.0)
        .collect();
    // Whole decades around the data.
    let lo = values
        .iter()
        .fold(f64::INFINITY, |a, &b| a.min(b))
        .log10()
        .floor()
        .min(0.0);
    let hi = values
        .iter()
        .fold(f64::NEG_INFINITY, |a, &b| a.max(b))
        .log10()
        .ceil()
        .max(lo + 1.0);
    let x = |v: f64| left + (v.log10() - lo) / (hi - lo) * width;
    let total_w = left + width + 50.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" font-size="15" text-anchor="middle">Proxy CPU µs per forwarded message, log scale (median of {} run{}; lower is better)</text>"#,
        total_w / 2.0,
        t.runs,
        if t.runs == 1 { "" } else { "s" }
    );
    for (i, (px, color)) in PROXIES.iter().zip(COLORS).enumerate() {
        let lx = left + i as f64 * 110.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="30" width="12" height="12" fill="{color}"/>"#
        );
        let _ = writeln!(s, r#"<text x="{}" y="40">{px}</text>"#, lx + 16.0);
    }
    let mut decade = lo;
    while decade <= hi + 1e-9 {
        let v = 10f64.powf(decade);
        let tx = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{}" stroke="#ddd"/>"##,
            height - 40.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{tx:.1}" y="{}" text-anchor="middle">{} µs</text>"#,
            height - 25.0,
            v
        );
        decade += 1.0;
    }
    for (gi, sc) in t.scenarios.iter().enumerate() {
        let gy = top + gi as f64 * group;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 8.0,
            gy + 2.0 * bar,
            esc(sc)
        );
        for (pi, (px, color)) in PROXIES.iter().zip(COLORS).enumerate() {
            let Some(v) = cpu_us(t, sc, px).filter(|v| *v > 0.0) else {
                continue;
            };
            let y = gy + pi as f64 * bar;
            let _ = writeln!(
                s,
                r#"<rect x="{left}" y="{y}" width="{:.1}" height="{}" fill="{color}"><title>{px} {sc}: {} µs per message</title></rect>"#,
                (x(v) - left).max(1.0),
                bar - 2.0,
                us(Some(v))
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" font-size="10">{}</text>"#,
                x(v).max(left + 1.0) + 3.0,
                y + bar - 4.0,
                us(Some(v))
            );
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: proxy_report RESULTS OUT.md OUT.svg [SETTINGS [NOTE...]]");
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&args[1]).unwrap_or_else(|e| {
        eprintln!("proxy_report: {}: {e}", args[1]);
        std::process::exit(2);
    });
    let table = Table::new(&parse(&text), "proxy", &PROXIES, keep);
    if table.scenarios.is_empty() {
        eprintln!("proxy_report: no result lines in {}", args[1]);
        std::process::exit(2);
    }
    let settings = args.get(4).map_or("", String::as_str);
    let notes = args.get(5..).unwrap_or_default();
    let write = |path: &str, body: String| {
        std::fs::write(path, body).unwrap_or_else(|e| {
            eprintln!("proxy_report: {path}: {e}");
            std::process::exit(2);
        })
    };
    write(&args[2], markdown(&table, settings, notes));
    write(&args[3], svg(&table));
}
