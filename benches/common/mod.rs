//! Shared by the benchmarks: the event sources they dispatch, and reading
//! back what criterion measured in this run, so each bench can finish with
//! the evloop/peer ratio per element.

// Each bench uses only the part of this module it needs.
#![allow(dead_code)]

pub mod sources;

use std::path::PathBuf;
use std::time::SystemTime;

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
pub fn measured_ns(group: &str, function: &str, param: &str, since: SystemTime) -> Option<f64> {
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

/// Print one table row per parameter: the cost per element of `ours` and of
/// `peer`, and their ratio. `elements` turns a parameter into its element
/// count. Rows measured before `since` are left out.
pub fn print_ratios(
    group: &str,
    ours: &str,
    peer: &str,
    params: &[(&str, u64)],
    unit: Unit,
    since: SystemTime,
) {
    let mut header = false;
    for &(param, elements) in params {
        let (Some(a), Some(b)) = (
            measured_ns(group, ours, param, since),
            measured_ns(group, peer, param, since),
        ) else {
            continue;
        };
        if !header {
            println!("\n{group}: {ours} / {peer}");
            header = true;
        }
        let (a, b) = (a / elements as f64, b / elements as f64);
        match unit {
            Unit::NsPerElement => {
                println!(
                    "  {param:>8}: {ours} {a:9.1} ns  {peer} {b:9.1} ns  ratio {:.2}",
                    a / b
                )
            }
            Unit::ElementsPerSec => println!(
                "  {param:>8}: {ours} {:7.2} M/s  {peer} {:7.2} M/s  throughput ratio {:.2}",
                1e3 / a,
                1e3 / b,
                b / a
            ),
        }
    }
}

/// How [`print_ratios`] shows a cost.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Nanoseconds per element.
    NsPerElement,
    /// Millions of elements per second.
    ElementsPerSec,
}
