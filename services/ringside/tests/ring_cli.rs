//! End-to-end tests of `ringside ring`: the real binary, checked against the ring crate.

// A test fails loudly on a broken expectation; unwrap is how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use ringside_ring::{Member, Ring, RingConfig, Strategy};
use serde_json::Value;

fn ringside(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(args)
        .output()
        .expect("run ringside")
}

fn ok_json(args: &[&str]) -> Value {
    let out = ringside(args);
    assert!(
        out.status.success(),
        "ringside {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn failure(args: &[&str]) -> String {
    let out = ringside(args);
    assert!(!out.status.success(), "ringside {args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "panic instead of an error: {stderr}"
    );
    stderr
}

/// The plan both plan-add tests run: a fourth member `d` joins `a,b,c`.
const PLAN_ADD_D: [&str; 6] = ["ring", "plan", "--members", "a,b,c", "--add", "d"];

fn ring_of(strategy: Strategy, vnodes: u32, ids: &[&str]) -> Ring {
    let mut ring = Ring::new(RingConfig::new(strategy, vnodes).unwrap());
    for id in ids {
        ring.add(Member {
            id: (*id).to_owned(),
            weight: 1,
        })
        .unwrap();
    }
    ring
}

#[test]
fn lookup_agrees_with_the_ring_crate() {
    for (strategy, name) in [
        (Strategy::Random, "random"),
        (Strategy::Balanced, "balanced"),
    ] {
        let keys = [
            "",
            "user:1",
            "user:2",
            "a much longer key with spaces and ünïcode",
        ];
        let mut args = vec![
            "ring",
            "lookup",
            "--members",
            "a,b,c",
            "--vnodes",
            "32",
            "--strategy",
            name,
            "--output",
            "json",
        ];
        args.extend(keys);
        let rows = ok_json(&args);
        let ring = ring_of(strategy, 32, &["a", "b", "c"]);
        let rows = rows.as_array().expect("array of lookups");
        assert_eq!(rows.len(), keys.len());
        for (row, key) in rows.iter().zip(keys) {
            assert_eq!(row["key"], key);
            assert_eq!(
                row["owner"],
                ring.owner(key.as_bytes()).unwrap(),
                "{name} {key:?}"
            );
        }
    }
}

#[test]
fn ids_with_colons_are_ids() {
    let rows = ok_json(&[
        "ring",
        "lookup",
        "--members",
        "web-0:8080,fe80::1=2",
        "--output",
        "json",
        "k",
    ]);
    let mut ring = Ring::new(RingConfig::default());
    ring.add(Member::new("web-0:8080", 1)).unwrap();
    ring.add(Member::new("fe80::1", 2)).unwrap();
    assert_eq!(rows[0]["owner"], ring.owner(b"k").unwrap());
}

#[test]
fn lookup_table_lists_every_key() {
    let out = ringside(&["ring", "lookup", "--members", "a,b", "k1", "k2"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("KEY"));
    assert!(lines[1].starts_with("k1 ") && lines[2].starts_with("k2 "));
}

#[test]
fn plan_add_moves_ranges_only_to_the_new_member() {
    let plan = ok_json(&[&PLAN_ADD_D[..], &["--output", "json"]].concat());
    let before = ring_of(Strategy::Balanced, 160, &["a", "b", "c"]);
    let after = ring_of(Strategy::Balanced, 160, &["a", "b", "c", "d"]);
    let diff = ringside_ring::diff(&before, &after);
    assert_eq!(plan["members_before"], 3);
    assert_eq!(plan["members_after"], 4);
    assert_eq!(
        plan["moved_fraction"].as_f64().unwrap(),
        diff.moved_fraction
    );
    assert_eq!(
        plan["ideal_fraction"].as_f64().unwrap(),
        diff.ideal_fraction
    );
    let ranges = plan["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), diff.ranges.len());
    assert!(!ranges.is_empty());
    assert!(ranges.iter().all(|r| r["to"] == "d"));
    assert_eq!(
        plan["checksum_after"],
        format!("{:#018x}", after.checksum())
    );
}

#[test]
fn plan_remove_moves_ranges_only_from_the_removed_member() {
    let plan = ok_json(&[
        "ring",
        "plan",
        "--members",
        "a,b,c,d",
        "--remove",
        "b",
        "--strategy",
        "random",
        "--output",
        "json",
    ]);
    let ranges = plan["ranges"].as_array().unwrap();
    assert!(!ranges.is_empty());
    assert!(ranges.iter().all(|r| r["from"] == "b" && r["to"] != "b"));
    // Removing moves exactly what b owned, nothing else.
    let shares = plan["shares"].as_array().unwrap();
    let b = shares.iter().find(|s| s["id"] == "b").unwrap();
    assert_eq!(b["after"].as_f64().unwrap(), 0.0);
    let moved = plan["moved_fraction"].as_f64().unwrap();
    assert!(
        (moved - b["before"].as_f64().unwrap()).abs() < 1e-12,
        "{moved} vs {b}"
    );
    assert_eq!(plan["ideal_fraction"].as_f64().unwrap(), 0.25);
}

#[test]
fn plan_table_is_readable() {
    let out = ringside(&[&PLAN_ADD_D[..], &["--max-ranges", "2"]].concat());
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("plan: 3 -> 4 members (+d), strategy balanced, 160 vnodes"),
        "{text}"
    );
    assert!(text.contains("moved/ideal"), "{text}");
    assert!(text.contains("more ranges"), "{text}");
}

#[test]
fn bad_input_is_a_clear_error() {
    assert!(failure(&["ring", "lookup", "--members", "a,a", "k"]).contains("already on the ring"));
    assert!(failure(&["ring", "lookup", "--members", "a=0", "k"]).contains("weight 0"));
    assert!(failure(&["ring", "lookup", "--members", "a,=2", "k"]).contains("empty member id"));
    assert!(
        failure(&["ring", "lookup", "--members", "a=4294967296", "k"]).contains("out of range")
    );
    assert!(
        failure(&["ring", "lookup", "--members", "a", "--strategy", "rnd", "k"])
            .contains("random, balanced")
    );
    assert!(
        failure(&["ring", "lookup", "--members", "a", "--vnodes", "0", "k"]).contains("vnodes")
    );
    assert!(
        failure(&["ring", "plan", "--members", "a,b", "--remove", "x"]).contains("not on the ring")
    );
    assert!(failure(&["ring", "plan", "--members", "a", "--remove", "a"]).contains("every member"));
    assert!(failure(&["ring", "plan", "--members", "a,b"]).contains("--add"));
}
