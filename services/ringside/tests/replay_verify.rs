//! `ringside replay verify` on altered histories, and bad input of every replay command:
//! a non-zero exit with one clear error line, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod replay_support;

use std::path::Path;

use async_nats::jetstream;
use replay_support::{Stack, failure, ok_json, ringside_offline};
use ringside_events::{Event, RingName, codec, pb, subject};

const EVENTS: usize = 300;

fn verify_failure(stack: &Stack, ring: &str) -> (String, String) {
    let out = stack.ringside(&["replay", "verify", "--ring", ring]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (failure(&out), stdout)
}

/// The error of `replay state --ring orders ARGS`.
fn state_failure(stack: &Stack, args: &[&str]) -> String {
    failure(&stack.ringside(&[&["replay", "state", "--ring", "orders"], args].concat()))
}

/// The error of the offline `replay COMMAND --file FILE`.
fn file_failure(command: &str, file: &Path) -> String {
    failure(&ringside_offline(&[
        "replay",
        command,
        "--file",
        file.to_str().unwrap(),
    ]))
}

#[tokio::test]
async fn verify_fails_naming_the_epoch_of_an_altered_event_or_snapshot() {
    let stack = Stack::start().await;
    let clean = RingName::new("clean").unwrap();
    let written = stack.write_churn(&clean, EVENTS, 25, None).await;
    let ok = stack.ringside(&["replay", "verify", "--ring", "clean"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // The same history where the reducer stored a wrong checksum for one epoch.
    let altered = RingName::new("altered").unwrap();
    let flip = |e: &mut ringside_events::pb::RingRebalanced| e.checksum ^= 0xff;
    let bad = stack
        .write_churn(&altered, EVENTS, 25, Some((77, &flip)))
        .await;
    let seq = bad.epochs[76].rebalance_sequence;
    let (err, table) = verify_failure(&stack, "altered");
    assert!(err.contains(&format!("epoch 77, sequence {seq}")), "{err}");
    assert!(table.contains("stored checksum"), "{table}");
    assert!(
        table.lines().all(|l| !l.starts_with("78 ")),
        "later epochs check out: {table}"
    );

    // An event whose moved tokens were dropped: same checksum, but it no longer
    // rebuilds its epoch from the previous one.
    let dropped = RingName::new("dropped").unwrap();
    let drop_token = |e: &mut ringside_events::pb::RingRebalanced| {
        let t = e.token_changes.as_mut().unwrap();
        t.added.pop();
        t.added_owners.pop();
    };
    stack
        .write_churn(&dropped, EVENTS, 25, Some((5, &drop_token)))
        .await;
    let (err, table) = verify_failure(&stack, "dropped");
    assert!(err.contains("epoch 5,"), "{err}");
    assert!(
        table.contains("does not rebuild its ring from epoch 4"),
        "{table}"
    );

    // A snapshot overwritten with another epoch's ring.
    let kv = jetstream::new(stack.client.clone())
        .get_key_value(subject::KV_SNAPSHOTS)
        .await
        .unwrap();
    let key = subject::snapshot_key(&clean, 50);
    let other = kv
        .get(subject::snapshot_key(&clean, 75))
        .await
        .unwrap()
        .unwrap();
    let mut snapshot = codec::decode_snapshot(&other).unwrap();
    snapshot.epoch = 50;
    snapshot.membership_sequence = written.epochs[49].membership_sequence;
    kv.put(&key, codec::encode_snapshot(&snapshot).unwrap())
        .await
        .unwrap();
    let (err, table) = verify_failure(&stack, "clean");
    assert!(err.contains("epoch 50"), "{err}");
    assert!(table.contains(&key), "{table}");
    // `state` skips the bad snapshot with a warning and still answers right.
    let at = written.epochs[60].membership_sequence.to_string();
    let out = stack.ringside(&[
        "replay", "state", "--ring", "clean", "--output", "json", "--at-seq", &at,
    ]);
    let v = ok_json(&out);
    assert_eq!(
        v["checksum"],
        replay_support::hex(written.epochs[60].checksum)
    );
}

#[tokio::test]
async fn bad_input_is_one_clear_error() {
    let stack = Stack::start().await;
    let ring = RingName::new("orders").unwrap();
    let written = stack.write_churn(&ring, 60, 10, None).await;
    let last = written
        .after
        .last()
        .unwrap()
        .0
        .max(written.epochs.last().unwrap().rebalance_sequence);

    let err = failure(&stack.ringside(&["replay", "state", "--ring", "nosuch"]));
    assert!(
        err.contains("unknown ring 'nosuch'") && err.contains("orders"),
        "{err}"
    );
    let beyond = (last + 10).to_string();
    let err = state_failure(&stack, &["--at-seq", &beyond]);
    assert!(
        err.contains(&format!(
            "sequence {beyond} is beyond the end of the stream (the last sequence is {last})"
        )),
        "{err}"
    );
    let err = state_failure(&stack, &["--at-seq", "0"]);
    assert!(err.contains("start at 1"), "{err}");
    let err = state_failure(&stack, &["--at-time", "2000-01-01T00:00:00Z"]);
    assert!(
        err.contains("2000-01-01T00:00:00Z is before the first event of ring 'orders'"),
        "{err}"
    );
    let err = state_failure(&stack, &["--at-time", "yesterday"]);
    assert!(err.contains("RFC 3339"), "{err}");
    let err = failure(&stack.ringside(&[
        "replay", "events", "--ring", "orders", "--from", "50", "--to", "10",
    ]));
    assert!(err.contains("the range is empty"), "{err}");
    let err =
        failure(&stack.ringside(&["replay", "events", "--ring", "orders", "--type", "nonsense"]));
    assert!(err.contains("unknown event type 'nonsense'"), "{err}");
    let err = failure(&stack.ringside(&["replay", "key-history", "", "--ring", "orders"]));
    assert!(err.contains("the key is empty"), "{err}");
    let err = failure(&stack.ringside(&["replay", "state", "--ring", "bad.ring"]));
    assert!(err.contains("invalid ring name"), "{err}");
    // Wrong password, and nobody listening.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args([
            "replay",
            "state",
            "--nats-url",
            &stack.server.url(),
            "--password",
            "wrong",
        ])
        .output()
        .unwrap();
    let err = failure(&out);
    assert!(err.contains("cannot connect"), "{err}");
    let err = failure(&ringside_offline(&[
        "replay",
        "state",
        "--nats-url",
        "nats://127.0.0.1:1",
    ]));
    assert!(
        err.contains("cannot connect to nats://127.0.0.1:1"),
        "{err}"
    );

    // Export files: good, truncated, corrupt, not an export, missing.
    let dir = tempfile::tempdir().unwrap();
    for format in ["ndjson", "pb"] {
        let out = stack.ringside(&["replay", "export", "--ring", "orders", "--format", format]);
        assert!(out.status.success());
        let bytes = out.stdout;
        let good = dir.path().join(format!("good.{format}"));
        std::fs::write(&good, &bytes).unwrap();
        let v = ok_json(&ringside_offline(&[
            "replay",
            "state",
            "--output",
            "json",
            "--file",
            good.to_str().unwrap(),
        ]));
        assert_eq!(
            v["checksum"],
            replay_support::hex(written.epochs.last().unwrap().checksum)
        );

        let cut = dir.path().join(format!("cut.{format}"));
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let err = file_failure("state", &cut);
        assert!(
            err.contains("truncated export") || err.contains("corrupt export"),
            "{format}: {err}"
        );

        // Break the framing: the first frame's length (pb), a line in the middle (ndjson).
        let mut flipped = bytes.clone();
        let at = if format == "pb" { 8 } else { bytes.len() / 2 };
        flipped[at..at + 11].copy_from_slice(&[0xff; 11]);
        let corrupt = dir.path().join(format!("corrupt.{format}"));
        std::fs::write(&corrupt, &flipped).unwrap();
        let err = file_failure("verify", &corrupt);
        assert!(
            err.contains("corrupt export") || err.contains("truncated export"),
            "{format}: {err}"
        );
    }
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "hello").unwrap();
    let err = file_failure("state", &junk);
    assert!(err.contains("not a ringside export"), "{err}");
    let err = file_failure("state", Path::new("/nonexistent/x"));
    assert!(err.contains("cannot open /nonexistent/x"), "{err}");
}

/// An event of another ring stored on this ring's membership subject is not folded:
/// `state` and `verify` skip it as the reducer does, `events` shows why.
#[tokio::test]
async fn another_rings_event_on_the_subject_is_skipped() {
    let stack = Stack::start().await;
    let ring = RingName::new("orders").unwrap();
    let written = stack.write_churn(&ring, 40, 1000, None).await;
    let intruder = Event::new(
        RingName::new("other").unwrap(),
        pb::MembersJoined {
            members: vec![pb::Member {
                id: "intruder".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .unwrap();
    let seq = jetstream::new(stack.client.clone())
        .publish(
            subject::membership(&ring),
            codec::encode(&intruder).unwrap(),
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;

    let v = ok_json(&stack.ringside(&["replay", "state", "--ring", "orders", "--output", "json"]));
    let last = written.epochs.last().unwrap();
    assert_eq!(v["checksum"], replay_support::hex(last.checksum));
    assert!(
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != "intruder"),
        "{v}"
    );
    let ok = stack.ringside(&["replay", "verify", "--ring", "orders"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let at = seq.to_string();
    let v = ok_json(&stack.ringside(&[
        "replay", "events", "--ring", "orders", "--output", "json", "--from", &at, "--to", &at,
    ]));
    let error = v[0]["undecodable"]["error"].as_str().unwrap();
    assert!(
        error.contains("ringside.other.membership arrived on ringside.orders.membership"),
        "{error}"
    );
}

/// Without `--nats-url` the tools say which server they read, and refuse the record of
/// an `up` that is gone (its port may be another system's now).
#[test]
fn the_tools_say_which_server_they_read_and_refuse_a_stale_record() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    // Nothing recorded: the default, said so (the connection itself may fail).
    let out = ringside_offline(&["replay", "state", "--state-dir", state]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reading nats://127.0.0.1:4222 (the default: no ringside up runs"),
        "{stderr}"
    );
    // A record whose process is gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let record = format!(
        r#"{{"pid":{pid},"ring":"default","nats_url":"nats://127.0.0.1:4999","grpc":"127.0.0.1:7420","metrics":"127.0.0.1:9420"}}"#
    );
    std::fs::write(dir.path().join("up.json"), record).unwrap();
    for command in [["replay", "state"], ["tail", "--count"]] {
        let mut args = command.to_vec();
        if command[0] == "tail" {
            args.push("1");
        }
        args.extend(["--state-dir", state]);
        let err = failure(&ringside_offline(&args));
        assert!(
            err.contains("no longer running") && err.contains("nats://127.0.0.1:4999"),
            "{err}"
        );
    }
}
