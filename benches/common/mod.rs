//! Shared by the benchmarks: the event sources they dispatch, and a
//! [`Report`] that runs each evloop-versus-peer comparison under criterion
//! and again interleaved, and prints the ratios at the end.

// Each bench uses only the part of this module it needs.
#![allow(dead_code)]

pub mod sources;

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Throughput};

/// Where criterion keeps its results (the same rule criterion follows).
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("criterion")
}

/// The number that follows `"point_estimate":` inside the object named `key`
/// of an `estimates.json` (`None` when the key is absent or `null`).
fn point_estimate(json: &str, key: &str) -> Option<f64> {
    let rest = &json[json.find(&format!("\"{key}\":"))? + key.len() + 3..];
    if rest.trim_start().starts_with("null") {
        return None;
    }
    let rest = &rest[rest.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse().ok()
}

/// Nanoseconds per iteration of `group/function/param` as criterion reports
/// it (the slope estimate, or the mean where there is no slope), if that
/// benchmark was measured after `since`: a stale result from an earlier run,
/// or one this run's filter skipped, is not mixed in.
fn measured_ns(group: &str, function: &str, param: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_home()
        .join(group)
        .join(function)
        .join(param)
        .join("new/estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let json = std::fs::read_to_string(path).ok()?;
    point_estimate(&json, "slope").or_else(|| point_estimate(&json, "mean"))
}

/// How a [`Report`] shows a cost.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Nanoseconds per element, and the time ratio ours / peer (lower is better).
    NsPerElement,
    /// Millions of elements per second, and the throughput ratio ours / peer
    /// (higher is better).
    ElementsPerSec,
}

/// Rounds of a paired comparison (odd, so the median is one of them).
const ROUNDS: usize = 21;
/// About how long each side runs in one round.
const ROUND_NS: f64 = 3e6;

/// One comparison: ours and the peer, per element, measured two ways.
struct Row {
    group: String,
    param: String,
    /// Criterion's estimates (ns per element), one benchmark after the other.
    criterion: (f64, f64),
    /// Medians over interleaved rounds: ours, peer (ns per element), and of
    /// the per-round ratio ours / peer.
    paired: (f64, f64, f64),
}

/// Runs each comparison under criterion, then again interleaved, and prints
/// both at the end.
///
/// Criterion measures one benchmark after the other, so on a busy machine a
/// change in load between the two skews their ratio. The paired run times
/// the two sides in alternating rounds (alternating which goes first too)
/// and takes the median of the per-round ratios, which such drift mostly
/// cancels out of.
pub struct Report {
    ours: &'static str,
    peer: &'static str,
    unit: Unit,
    since: SystemTime,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(ours: &'static str, peer: &'static str, unit: Unit) -> Report {
        Report {
            ours,
            peer,
            unit,
            since: SystemTime::now(),
            rows: Vec::new(),
        }
    }

    /// Benchmark `ours` and `peer` (one iteration each) as `group/ours/param`
    /// and `group/peer/param`, each iteration handling `elements` elements.
    /// The paired run only follows when criterion really measured both
    /// (not under `cargo test`, nor when a filter left one out).
    pub fn compare<A: FnMut(), B: FnMut()>(
        &mut self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        group_name: &str,
        param: &str,
        elements: u64,
        mut ours: A,
        mut peer: B,
    ) {
        group.throughput(Throughput::Elements(elements));
        group.bench_function(BenchmarkId::new(self.ours, param), |b| b.iter(&mut ours));
        group.bench_function(BenchmarkId::new(self.peer, param), |b| b.iter(&mut peer));
        let (Some(a), Some(b)) = (
            measured_ns(group_name, self.ours, param, self.since),
            measured_ns(group_name, self.peer, param, self.since),
        ) else {
            return;
        };
        let iters = (ROUND_NS / a.max(b)).ceil().max(1.0) as u32;
        let (pa, pb, ratio) = paired(iters, &mut ours, &mut peer);
        let per = elements as f64;
        self.rows.push(Row {
            group: group_name.to_string(),
            param: param.to_string(),
            criterion: (a / per, b / per),
            paired: (pa / per, pb / per, ratio),
        });
    }

    /// Print the table: one line per comparison.
    pub fn print(&self) {
        let (ours, peer) = (self.ours, self.peer);
        let mut last_group = "";
        for row in &self.rows {
            if row.group != last_group {
                let (unit, ratio) = match self.unit {
                    Unit::NsPerElement => ("ns per element", format!("time {ours}/{peer}")),
                    Unit::ElementsPerSec => ("M elements/s", format!("throughput {ours}/{peer}")),
                };
                println!("\n{} ({unit}; ratio: {ratio})", row.group);
                println!(
                    "  {:>8}  {:>28}   {:>28}",
                    "",
                    "criterion (one after other)",
                    format!("paired (median of {ROUNDS})")
                );
                println!(
                    "  {:>8}  {ours:>9} {peer:>11} {:>6}   {ours:>9} {peer:>11} {:>6}",
                    "", "ratio", "ratio"
                );
                last_group = &row.group;
            }
            let (a, b) = row.criterion;
            let (pa, pb, pr) = row.paired;
            let (a, b, r, pa, pb, pr) = match self.unit {
                Unit::NsPerElement => (a, b, a / b, pa, pb, pr),
                Unit::ElementsPerSec => (1e3 / a, 1e3 / b, b / a, 1e3 / pa, 1e3 / pb, 1.0 / pr),
            };
            println!(
                "  {:>8}  {a:>9.2} {b:>11.2} {r:>6.2}   {pa:>9.2} {pb:>11.2} {pr:>6.2}",
                row.param
            );
        }
    }
}

/// Time `iters` iterations of each side in alternating rounds; the medians
/// of ours and of the peer (ns per iteration), and of the per-round ratio.
fn paired(iters: u32, ours: &mut dyn FnMut(), peer: &mut dyn FnMut()) -> (f64, f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let t0 = Instant::now();
        for _ in 0..iters {
            f();
        }
        t0.elapsed().as_nanos() as f64 / iters as f64
    };
    let (mut a, mut b, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (ta, tb) = if round % 2 == 0 {
            let ta = time(ours);
            (ta, time(peer))
        } else {
            let tb = time(peer);
            (time(ours), tb)
        };
        a.push(ta);
        b.push(tb);
        ratio.push(ta / tb);
    }
    (median(a), median(b), median(ratio))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
