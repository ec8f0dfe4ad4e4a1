//! End-to-end tests of `ringside replay` against a real nats-server: a scripted churn
//! of 1,000 membership events stored the way the reducer stores it (rebalance events
//! with the single-writer publish, snapshots in the KV bucket), then the binary's
//! answers checked against the fold run here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod replay_support;

use std::collections::BTreeMap;

use replay_support::{Stack, Written, failure, hex, ok_json};
use ringside_events::{RingName, ServiceUser};
use serde_json::Value;

const EVENTS: usize = 1000;
const SNAPSHOT_EVERY: u64 = 50;

async fn orders() -> (Stack, Written) {
    let stack = Stack::start().await;
    let ring = RingName::new("orders").unwrap();
    let written = stack.write_churn(&ring, EVENTS, SNAPSHOT_EVERY, None).await;
    (stack, written)
}

/// The JSON answer of `replay COMMAND --ring orders --output json ARGS`.
fn replay_json(stack: &Stack, command: &[&str], args: &[&str]) -> Value {
    let ring = ["--ring", "orders", "--output", "json"];
    ok_json(&stack.ringside(&[&["replay"], command, &ring, args].concat()))
}

fn state(stack: &Stack, args: &[&str]) -> Value {
    replay_json(stack, &["state"], args)
}

#[tokio::test]
async fn replay_answers_match_the_fold() {
    let (stack, written) = orders().await;
    assert_eq!(written.after.len(), EVENTS);
    assert!(
        written.epochs.len() > 500,
        "{} epochs",
        written.epochs.len()
    );

    // The state at an epoch's membership sequence and at its rebalance event is the
    // fold's. The library's test checks every point (replay/tests/history.rs); here,
    // where each answer is a process, a sample goes through the command line.
    for e in written.epochs.iter().step_by(25) {
        for at in [e.membership_sequence, e.rebalance_sequence] {
            let s = state(&stack, &["--at-seq", &at.to_string()]);
            assert_eq!(s["epoch"], e.epoch, "at {at}");
            assert_eq!(s["checksum"], hex(e.checksum), "at {at}");
            assert_eq!(s["at_sequence"], at);
        }
    }
    // Between epochs (a membership event that changed nothing) too.
    for (seq, epoch, checksum) in written.after.iter().step_by(97) {
        let s = state(&stack, &["--at-seq", &seq.to_string()]);
        assert_eq!(
            (&s["epoch"], &s["checksum"]),
            (&Value::from(*epoch), &Value::from(hex(*checksum)))
        );
    }
    // The work is bounded by the snapshots: a late point starts from the newest
    // snapshot at or before it and folds fewer events than the interval's span.
    let late = written.epochs[written.epochs.len() - 3].membership_sequence;
    let s = state(&stack, &["--at-seq", &late.to_string()]);
    let from = s["started_from_snapshot"]
        .as_str()
        .expect("a snapshot was used");
    assert!(written.snapshots.iter().any(|k| k == from), "{from}");
    assert!(s["folded"]["membership"].as_u64().unwrap() < 2 * SNAPSHOT_EVERY * 2);
    let shares: f64 = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");
    assert!(s["imbalance"].as_f64().unwrap() >= 1.0);
    // Without a point: the end of the stream.
    let last = written.epochs.last().unwrap();
    let s = state(&stack, &[]);
    assert_eq!(s["checksum"], hex(last.checksum));

    key_history_agrees_with_lookups(&stack, &written);
    diff_matches_the_ring_crate(&stack, &written);
    events_and_times(&stack, &written);
    let out = stack.ringside(&["replay", "verify", "--ring", "orders"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("OK: every stored rebalance event and snapshot matches the fold"),
        "{text}"
    );
    let v = replay_json(&stack, &["verify"], &[]);
    assert_eq!(v["rebalance_events"], written.epochs.len());
    // `latest` holds the newest per-epoch snapshot, so it is not checked twice.
    assert_eq!(v["snapshots"], written.snapshots.len());
    assert_eq!(v["folded"]["epochs"], written.epochs.len());
    // The read-only bridge user can replay too.
    let v = ok_json(&stack.ringside_as(
        ServiceUser::Bridge,
        &["replay", "state", "--ring", "orders", "--output", "json"],
    ));
    assert_eq!(v["checksum"], hex(last.checksum));

    export_equals_stream(&stack, &written);
}

/// Owners of `key` at every epoch from the fold, against `key-history`.
fn key_history_agrees_with_lookups(stack: &Stack, written: &Written) {
    for key in ["user:1", "user:42", "cart/99", "é"] {
        let h = replay_json(stack, &["key-history", key], &[]);
        // From the index (the default) as from the stored epochs.
        assert_eq!(
            h,
            replay_json(stack, &["key-history", key], &["--no-index"])
        );
        let hash = ringside_ring::hash_key(key.as_bytes());
        let mut owner: Option<String> = None;
        assert_eq!(h["initial_owner"], Value::Null);
        let changes: BTreeMap<u64, &Value> = h["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["epoch"].as_u64().unwrap(), c))
            .collect();
        for e in &written.epochs {
            let now = e.ring.owner_of_hash(hash).ok().map(str::to_string);
            match changes.get(&e.epoch) {
                Some(c) => {
                    assert_eq!(
                        c["from"].as_str(),
                        owner.as_deref(),
                        "{key} epoch {}",
                        e.epoch
                    );
                    assert_eq!(c["to"].as_str(), now.as_deref(), "{key} epoch {}", e.epoch);
                    assert_eq!(c["sequence"], e.membership_sequence);
                    assert!(!c["cause"].as_str().unwrap().is_empty());
                }
                None => assert_eq!(
                    now, owner,
                    "{key}: owner changed at epoch {} without a row",
                    e.epoch
                ),
            }
            owner = now;
        }
        assert_eq!(h["final_owner"].as_str(), owner.as_deref());
    }
    // The answers above came through the index, kept where the environment says.
    let index = stack.server.store_dir().join("replay-index");
    assert_eq!(std::fs::read_dir(&index).unwrap().count(), 1, "{index:?}");
    // A sub-range starts from the owner at its start.
    let mid = &written.epochs[written.epochs.len() / 2];
    let end = &written.epochs[written.epochs.len() / 2 + 40];
    let h = replay_json(
        stack,
        &["key-history", "user:42"],
        &[
            "--from",
            &(mid.membership_sequence + 1).to_string(),
            "--to",
            &end.membership_sequence.to_string(),
        ],
    );
    let hash = ringside_ring::hash_key(b"user:42");
    assert_eq!(
        h["initial_owner"].as_str(),
        mid.ring.owner_of_hash(hash).ok()
    );
    assert_eq!(h["initial_epoch"], mid.epoch);
    assert_eq!(h["final_owner"].as_str(), end.ring.owner_of_hash(hash).ok());
    assert_eq!(h["final_epoch"], end.epoch);
}

fn diff_matches_the_ring_crate(stack: &Stack, written: &Written) {
    let by_epoch: BTreeMap<u64, &replay_support::Epoch> =
        written.epochs.iter().map(|e| (e.epoch, e)).collect();
    for (a, b) in [(1, 2), (10, 11), (100, 180), (250, 240), (37, 37)] {
        let d = replay_json(
            stack,
            &["diff"],
            &["--from", &a.to_string(), "--to", &b.to_string()],
        );
        let expected = ringside_ring::diff(&by_epoch[&a].ring, &by_epoch[&b].ring);
        assert_eq!(
            d["moved_fraction"].as_f64().unwrap(),
            expected.moved_fraction,
            "{a}->{b}"
        );
        assert_eq!(
            d["ideal_fraction"].as_f64().unwrap(),
            expected.ideal_fraction,
            "{a}->{b}"
        );
        assert_eq!(
            d["ranges"].as_array().unwrap().len(),
            expected.ranges.len(),
            "{a}->{b}"
        );
        assert_eq!(d["from_checksum"], hex(by_epoch[&a].checksum));
        assert_eq!(d["to_checksum"], hex(by_epoch[&b].checksum));
    }
    let out = stack.ringside(&[
        "replay", "diff", "--ring", "orders", "--from", "1", "--to", "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("moved/ideal"), "{text}");
    let beyond = (written.epochs.len() + 5).to_string();
    let err = failure(&stack.ringside(&[
        "replay", "diff", "--ring", "orders", "--from", "1", "--to", &beyond,
    ]));
    assert!(
        err.contains(&format!(
            "epoch {beyond} is beyond the last epoch ({})",
            written.epochs.len()
        )),
        "{err}"
    );
}

fn events_and_times(stack: &Stack, written: &Written) {
    let (from, to) = (
        written.epochs[10].membership_sequence,
        written.epochs[30].rebalance_sequence,
    );
    let range = ["--from", &from.to_string(), "--to", &to.to_string()];
    let v = replay_json(
        stack,
        &["events"],
        &[&["--type", "rebalance"], &range[..]].concat(),
    );
    let epochs: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["event"]["ringRebalanced"]["epoch"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, (11..=31).collect::<Vec<u64>>());
    let mut args = vec!["replay", "events", "--ring", "orders"];
    args.extend_from_slice(&range);
    let out = stack.ringside(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().count() as u64,
        to - from + 1,
        "every message of the ring in range: {text}"
    );
    assert!(
        text.contains("RingRebalanced") && text.contains("moved"),
        "{text}"
    );

    // A time names the last sequence stored at or before it.
    let e = &written.epochs[200];
    let seq = e.rebalance_sequence.to_string();
    let v = replay_json(stack, &["events"], &["--from", &seq, "--to", &seq]);
    let time = v[0]["time"].as_str().unwrap().to_string();
    let s = state(stack, &["--at-time", &time]);
    assert!(s["at_sequence"].as_u64().unwrap() >= e.rebalance_sequence);
    assert!(s["epoch"].as_u64().unwrap() >= e.epoch);
    let at = s["at_sequence"].as_u64().unwrap();
    let s2 = state(stack, &["--at-seq", &at.to_string()]);
    assert_eq!(s["checksum"], s2["checksum"]);
}

fn export_equals_stream(stack: &Stack, written: &Written) {
    let dir = tempfile::tempdir().unwrap();
    for format in ["ndjson", "pb"] {
        let out = stack.ringside(&["replay", "export", "--ring", "orders", "--format", format]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.path().join(format!("orders.{format}"));
        std::fs::write(&path, &out.stdout).unwrap();
        let file = path.to_str().unwrap();
        for e in written.epochs.iter().step_by(53) {
            for args in [
                vec![
                    "replay",
                    "state",
                    "--output",
                    "json",
                    "--at-seq",
                    &e.rebalance_sequence.to_string(),
                ],
                vec![
                    "replay",
                    "key-history",
                    "user:7",
                    "--output",
                    "json",
                    "--to",
                    &e.rebalance_sequence.to_string(),
                ],
            ] {
                let from_stream =
                    ok_json(&stack.ringside(&[&args[..], &["--ring", "orders"]].concat()));
                let from_file = ok_json(&replay_support::ringside_offline(
                    &[&args[..], &["--file", file]].concat(),
                ));
                assert_eq!(from_stream, from_file, "{format}: {args:?}");
            }
        }
        let events = [
            "replay", "events", "--output", "json", "--from", "100", "--to", "300",
        ];
        assert_eq!(
            ok_json(&stack.ringside(&[&events[..], &["--ring", "orders"]].concat())),
            ok_json(&replay_support::ringside_offline(
                &[&events[..], &["--file", file]].concat()
            )),
        );
        let v = ok_json(&replay_support::ringside_offline(&[
            "replay", "verify", "--output", "json", "--file", file,
        ]));
        assert_eq!(v["problems"], Value::Array(vec![]));
        assert_eq!(v["rebalance_events"], written.epochs.len());
        // A file of another ring is refused by name.
        let err = failure(&replay_support::ringside_offline(&[
            "replay", "state", "--ring", "other", "--file", file,
        ]));
        assert!(
            err.contains("unknown ring 'other'") && err.contains("holds ring 'orders'"),
            "{err}"
        );
    }
}
