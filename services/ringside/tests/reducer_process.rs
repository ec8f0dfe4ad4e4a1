//! `ringside reducer` as a process: SIGTERM finishes, snapshots and exits 0, and the
//! next start resumes after that snapshot; a fatal error exits non-zero.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reducer_support;

use std::time::Duration;

use nix::sys::signal::Signal;
use reducer_support::common::{
    self, Bus, assert_history, assert_resumed_after, metric, wait_folded, wait_ready,
};
use ringside_reducer::metrics as m;

const WITHIN: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_snapshots_exits_zero_and_the_next_start_resumes_after_the_snapshot() {
    let bus = Bus::start().await;
    let events = common::churn(51, 300, 12);
    bus.publish(&events[..200]).await;
    // No periodic snapshot: the one the next start loads is the one SIGTERM wrote.
    let mut first = reducer_support::spawn(&bus, "a", &["--snapshot-every", "100000"]).await;
    wait_ready(first.metrics, WITHIN).await;
    let folded = bus.offline_fold().await;
    let at = folded.ledger.membership_sequence();
    wait_folded(first.metrics, at, WITHIN).await;
    assert_eq!(metric(first.metrics, m::START_SEQUENCE.name).await, 1.0);
    assert_eq!(metric(first.metrics, m::SNAPSHOTS_WRITTEN.name).await, 0.0);
    first.signal(Signal::SIGTERM);
    let status = first.exited(WITHIN).await;
    assert!(status.success(), "{status}\n{}", first.log());
    assert!(first.log().contains("Snapshot written."), "{}", first.log());

    let mut second = reducer_support::spawn(&bus, "a", &[]).await;
    wait_ready(second.metrics, WITHIN).await;
    // It started after the snapshot, not from sequence 1.
    assert_resumed_after(second.metrics, &folded).await;
    assert!(
        second.log().contains("Loaded snapshot."),
        "{}",
        second.log()
    );
    bus.publish(&events[200..]).await;
    let folded = bus.offline_fold().await;
    wait_folded(second.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    assert_history(&bus.rebalances().await, &folded);
    // SIGINT (Ctrl-C) stops it the same way.
    second.signal(Signal::SIGINT);
    assert!(second.exited(WITHIN).await.success(), "{}", second.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergence_exits_non_zero_and_says_so() {
    let bus = Bus::start().await;
    bus.publish(&common::churn(52, 20, 6)).await;
    bus.publish_forged_first_epoch().await;
    let mut reducer = reducer_support::spawn(&bus, "a", &[]).await;
    let status = reducer.exited(WITHIN).await;
    assert!(!status.success(), "{status}");
    let log = reducer.log();
    assert!(log.contains("divergence at epoch 1"), "{log}");
}

#[tokio::test]
async fn bad_configuration_is_refused_before_anything_starts() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(["reducer", "--vnodes", "0", "--grpc-addr", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RINGSIDE_REDUCER_VNODES"), "{stderr}");
    assert!(output.stdout.is_empty());
}
