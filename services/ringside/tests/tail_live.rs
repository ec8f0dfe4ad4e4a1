//! End-to-end tests of `ringside tail` against a real nats-server: decoded lines and
//! JSON lines of stored events, undecodable messages shown and counted, never fatal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod replay_support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use replay_support::{Stack, churn};
use ringside_events::{RingName, ServiceUser, subject};
use ringside_ring::RingConfig;

/// Runs `ringside tail ARGS --count N` and returns its stdout lines and stderr; kills
/// it if it has not finished in 30 s (the test then fails on the count).
fn tail(stack: &Stack, args: &[&str], count: usize) -> (Vec<String>, String) {
    let user = ServiceUser::Bridge;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringside"))
        .arg("tail")
        .args(args)
        .args([
            "--count",
            &count.to_string(),
            "--nats-url",
            &stack.server.url(),
            "--user",
            user.name(),
        ])
        .env(
            user.password_env(),
            stack.server.password(user.name()).unwrap(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let lines = BufReader::new(&out.stdout[..])
        .lines()
        .map(Result::unwrap)
        .collect();
    (lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn tail_prints_each_stored_event_decoded_and_survives_garbage() {
    let stack = Stack::start().await;
    let ring = RingName::new("orders").unwrap();
    let written = stack
        .write_history(&churn(&ring, 25), RingConfig::default(), 1000, None)
        .await;
    // Garbage on the membership subject: stored, but not an event.
    let js = jetstream::new(stack.client.clone());
    let garbage = js
        .publish(subject::membership(&ring), "not protobuf \u{1}".into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let stored = 25 + written.epochs.len() + 1;

    let (lines, stderr) = tail(&stack, &["--ring", "orders", "--from-seq", "1"], stored);
    assert_eq!(lines.len(), stored, "{stderr}");
    assert!(stderr.contains("1 undecodable"), "{stderr}");
    let bad: Vec<&String> = lines.iter().filter(|l| l.contains("UNDECODABLE")).collect();
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].trim_start().starts_with(&garbage.to_string()),
        "{}",
        bad[0]
    );
    assert!(bad[0].contains("malformed protobuf"), "{}", bad[0]);
    let first = &written.epochs[0];
    let line = lines
        .iter()
        .find(|l| {
            l.trim_start()
                .starts_with(&format!("{} ", first.rebalance_sequence))
        })
        .unwrap();
    assert!(
        line.contains("RingRebalanced")
            && line.contains("epoch 1: +m")
            && line.contains("moved 1.000 (ideal 1.000)"),
        "{line}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("MembersJoined") && l.contains("joined (manual)"))
    );
    assert!(lines.iter().any(|l| l.contains("MemberLeft")));

    // JSON lines: proto3 JSON of the envelope with seq, time and subject.
    let from = first.rebalance_sequence.to_string();
    let (lines, _) = tail(
        &stack,
        &["--ring", "orders", "--json", "--from-seq", &from],
        3,
    );
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["seq"], first.rebalance_sequence);
    assert_eq!(v["subject"], "ringside.orders.rebalance");
    assert_eq!(v["event"]["ringRebalanced"]["epoch"], "1");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }

    // Live: a tail started before new events sees them (only them).
    let live = std::thread::spawn({
        let url = stack.server.url();
        let password = stack.server.password("bridge").unwrap().to_string();
        move || {
            Command::new(env!("CARGO_BIN_EXE_ringside"))
                .args([
                    "tail",
                    "--ring",
                    "orders",
                    "--count",
                    "2",
                    "--nats-url",
                    &url,
                    "--user",
                    "bridge",
                ])
                .env(ServiceUser::Bridge.password_env(), password)
                .output()
                .unwrap()
        }
    });
    // The tail needs a moment to create its consumer; new events keep coming until
    // it has seen two.
    let more = churn(&ring, 40);
    let mut next = 25;
    while !live.is_finished() && next < more.len() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        ringside_events::Publisher::new(stack.client.clone())
            .publish(&more[next])
            .await
            .unwrap();
        next += 1;
    }
    let out = live.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.lines().count(), 2, "{text}");
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(seqs.iter().all(|s| *s > garbage), "only new events: {text}");
}

#[tokio::test]
async fn tail_since_a_time_and_bad_arguments() {
    let stack = Stack::start().await;
    let ring = RingName::new("orders").unwrap();
    stack
        .write_history(&churn(&ring, 5), RingConfig::default(), 1000, None)
        .await;
    let (lines, stderr) = tail(
        &stack,
        &["--ring", "orders", "--since", "2000-01-01T00:00:00Z"],
        5,
    );
    assert_eq!(lines.len(), 5, "{stderr}");
    assert!(lines[0].trim_start().starts_with("1 "), "{lines:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(["tail", "--since", "noon", "--nats-url", &stack.server.url()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    let out = Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(["tail", "--nats-url", "nats://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ringside: reading nats://127.0.0.1:1 (--nats-url")
            && err.contains("\nerror: cannot connect")
            && !err.contains("panicked"),
        "{err}"
    );
}
