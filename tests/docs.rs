//! The documents quote the code: check every quoted line still is the code.
//!
//! docs/ARCHITECTURE.md and README.md show excerpts of `src/` and the echo
//! examples in ```` ```rust,ignore ```` blocks (excerpts of private code cannot
//! be doctests). Every line of such a block, except elisions (`...`) and
//! comments, must appear verbatim (modulo indentation) in the sources, so an
//! excerpt cannot silently drift from what the loop really does.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

fn source_lines() -> HashSet<String> {
    let mut lines = HashSet::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("examples/echo.rs"),
        root.join("examples/echo_async.rs"),
        root.join("tests/predict_order.rs"),
    ];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    for f in files {
        for line in fs::read_to_string(f).unwrap().lines() {
            lines.insert(line.trim().to_string());
        }
    }
    lines
}

fn check(doc: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
    let text = fs::read_to_string(&path).unwrap();
    let code = source_lines();
    let mut in_block = false;
    let mut checked = 0;
    let mut missing = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = !in_block && t == "```rust,ignore";
            continue;
        }
        if !in_block || t.is_empty() || t.contains("...") || t.starts_with("//") {
            continue;
        }
        checked += 1;
        if !code.contains(t) {
            missing.push(format!("{doc}:{}: {t}", n + 1));
        }
    }
    assert!(checked > 0, "{doc} quotes no code");
    assert!(
        missing.is_empty(),
        "quoted lines not found in the sources:\n{}",
        missing.join("\n")
    );
}

#[test]
fn architecture_quotes_the_real_code() {
    check("docs/ARCHITECTURE.md");
}

#[test]
fn readme_quotes_the_real_echo_example() {
    check("README.md");
}
