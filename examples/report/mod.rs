//! What the benchmark reports share (`e2e_report`, `proxy_report`): reading
//! `examples/loadgen.rs`'s `result ...` lines, medians per scenario and
//! contender, and the small formatters of their markdown and SVG.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// One loadgen result line: labels and numbers by key.
pub type Row = BTreeMap<String, String>;

/// The `result ...` lines of `text`.
pub fn parse(text: &str) -> Vec<Row> {
    text.lines()
        .filter_map(|l| l.strip_prefix("result "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Medians of every numeric key, per (scenario, contender).
pub struct Table {
    /// Scenarios in the order they first appear.
    pub scenarios: Vec<String>,
    /// The most runs any cell has.
    pub runs: usize,
    cells: BTreeMap<(String, String), BTreeMap<String, f64>>,
    /// The contenders, in the order they are listed.
    order: &'static [&'static str],
}

impl Table {
    /// The medians of `rows`, whose contender is labelled `who` (`server`,
    /// `proxy`), keeping from each row the keys `keep` accepts.
    pub fn new(
        rows: &[Row],
        who: &str,
        order: &'static [&'static str],
        keep: impl Fn(&Row, &str) -> bool,
    ) -> Table {
        let mut scenarios: Vec<String> = Vec::new();
        let mut samples: BTreeMap<(String, String), BTreeMap<String, Vec<f64>>> = BTreeMap::new();
        let mut runs = 0;
        for r in rows {
            let (Some(sc), Some(name)) = (r.get("scenario"), r.get(who)) else {
                continue;
            };
            if !scenarios.contains(sc) {
                scenarios.push(sc.clone());
            }
            let cell = samples.entry((sc.clone(), name.clone())).or_default();
            for (k, v) in r {
                if !keep(r, k) {
                    continue;
                }
                if let Ok(x) = v.parse::<f64>() {
                    cell.entry(k.clone()).or_default().push(x);
                }
            }
            runs = runs.max(cell.get("msgs_per_s").map_or(0, Vec::len));
        }
        let cells = samples
            .into_iter()
            .map(|(key, m)| {
                (
                    key,
                    m.into_iter().filter_map(|(k, v)| Some((k, median(v)?))).collect(),
                )
            })
            .collect();
        Table {
            scenarios,
            runs,
            cells,
            order,
        }
    }

    /// The median of `key` for `name` in scenario `sc`.
    pub fn get(&self, sc: &str, name: &str, key: &str) -> Option<f64> {
        self.cells
            .get(&(sc.to_string(), name.to_string()))?
            .get(key)
            .copied()
    }

    /// The contenders with results in scenario `sc`, in listing order.
    pub fn members(&self, sc: &str) -> impl Iterator<Item = &'static str> + '_ {
        let sc = sc.to_string();
        self.order
            .iter()
            .copied()
            .filter(move |s| self.cells.contains_key(&(sc.clone(), s.to_string())))
    }

    /// "N conn × S B × depth D" for scenario `sc`.
    pub fn shape(&self, sc: &str) -> String {
        let Some(name) = self.members(sc).next() else {
            return String::new();
        };
        let g = |k| self.get(sc, name, k).unwrap_or(0.0);
        format!("{} conn × {} B × depth {}", g("conns"), g("size"), g("depth"))
    }
}

/// `v` with `decimals` decimals, or a dash.
pub fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.decimals$}"))
}

/// `v` rounded, with thousands separated by commas, or a dash.
pub fn thousands(v: Option<f64>) -> String {
    let Some(v) = v else { return "–".into() };
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A target's tick or cross.
pub fn mark(ok: bool) -> &'static str {
    if ok {
        "✅"
    } else {
        "❌"
    }
}

/// The machine's CPU model, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                Some(
                    l.strip_prefix("model name")?
                        .split(':')
                        .nth(1)?
                        .trim()
                        .to_string(),
                )
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `s` escaped for SVG text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
