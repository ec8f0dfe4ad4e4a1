//! The rules in deploy/prometheus: `promtool check rules` and `promtool test rules`
//! pass, and the tests are tight: moving any alert's threshold by 15 % either way makes
//! them fail.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ringside_testkit::prometheus::promtool;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap()
}

/// `promtool test rules` on `rules` (the tests unchanged): whether they pass, and what
/// promtool said.
fn test_rules(rules: &str) -> (bool, String) {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("rules.yaml"), rules).unwrap();
    std::fs::write(work.path().join("rules_test.yaml"), read("rules_test.yaml")).unwrap();
    promtool(&["test", "rules", "rules_test.yaml"], work.path(), "").unwrap()
}

#[test]
fn the_rules_check_and_their_tests_pass() {
    let (ok, said) = promtool(&["check", "rules", "rules.yaml"], &dir(), "").unwrap();
    assert!(ok, "{said}");
    let (ok, said) = test_rules(&read("rules.yaml"));
    assert!(ok, "{said}");
}

#[test]
fn moving_a_threshold_fails_the_tests() {
    let rules = read("rules.yaml");
    let thresholds: Vec<(usize, &str, f64)> = rules
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let expr = line.trim().strip_prefix("expr: ")?;
            let (_, value) = expr.rsplit_once(" > ")?;
            Some((i, line, value.parse().ok()?))
        })
        .collect();
    // Every alert with a threshold (the node-not-reporting alert has none).
    assert_eq!(thresholds.len(), 5, "{thresholds:?}");
    for (index, line, value) in thresholds {
        for factor in [0.85, 1.15] {
            let moved = value * factor;
            let mutated: Vec<String> = rules
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    if i == index {
                        l.replace(&format!(" > {value}"), &format!(" > {moved}"))
                    } else {
                        l.to_owned()
                    }
                })
                .collect();
            let (ok, _) = test_rules(&mutated.join("\n"));
            assert!(
                !ok,
                "the tests still pass with `{}` moved to {moved}",
                line.trim()
            );
        }
    }
}
