//! The reducer against a real nats-server: folding, publishing, snapshots and restarts,
//! malformed messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Bus, Running, assert_history, metric, wait_folded, wait_ready};
use ringside_reducer::metrics as m;

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folds_a_churn_and_stores_every_epoch_once() {
    let bus = Bus::start().await;
    let events = common::churn(7, 200, 12);
    bus.publish(&events[..100]).await;
    let reducer = Running::start(&bus.reducer_map("a")).await;
    wait_ready(reducer.metrics, WITHIN).await;
    bus.publish(&events[100..]).await;
    let last = bus
        .stream()
        .await
        .get_info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let folded = bus.offline_fold().await;
    wait_folded(reducer.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    let stored = bus.rebalances().await;
    assert_history(&stored, &folded);
    assert!(
        folded.epochs.len() > 100,
        "the churn made only {} epochs",
        folded.epochs.len()
    );
    assert!(last > 200);
    assert_eq!(
        metric(reducer.metrics, m::EPOCH).await,
        folded.epochs.len() as f64
    );
    reducer.stop().await.unwrap();
}
