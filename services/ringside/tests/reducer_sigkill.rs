//! A scripted churn of 1,000 membership events while `ringside reducer` is SIGKILLed
//! at random points (fixed seed) and restarted: the final ring equals the offline fold
//! of the same events, and the stored epochs are 1..N with no gap and no duplicate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reducer_support;

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reducer_support::Reducer;
use reducer_support::common::{self, Bus, assert_history, metric, wait_folded, wait_ready};
use ringside_reducer::metrics as m;

const EVENTS: usize = 1000;
const KILLS: usize = 6;
const WITHIN: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_reducers_end_on_the_offline_fold() {
    let bus = Bus::start().await;
    let events = common::churn(1000, EVENTS, 16);
    let mut rng = StdRng::seed_from_u64(0x5ee0_f00d);

    // The membership source publishes in bursts while reducers come and go.
    let publishing = {
        let publisher = bus.publisher.clone();
        let sizes: Vec<usize> = (0..EVENTS).map(|_| rng.random_range(5..40)).collect();
        tokio::spawn(async move {
            let mut at = 0;
            for size in sizes {
                if at >= events.len() {
                    break;
                }
                let end = (at + size).min(events.len());
                publisher.publish_batch(&events[at..end]).await.unwrap();
                at = end;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };

    let mut resumed_from_snapshot = 0;
    for round in 0..KILLS {
        let reducer = reducer_support::spawn(&bus, "a", &["--snapshot-every", "10"]).await;
        if round > 0 && metric_when_up(&reducer).await > 1.0 {
            resumed_from_snapshot += 1;
        }
        // Killed somewhere: during start-up, catch-up, a publish or a snapshot.
        let life = Duration::from_millis(rng.random_range(50..900));
        tokio::time::sleep(life).await;
        reducer.kill().await;
    }
    publishing.await.unwrap();

    let reducer = reducer_support::spawn(&bus, "a", &["--snapshot-every", "10"]).await;
    wait_ready(reducer.metrics, WITHIN).await;
    let folded = bus.offline_fold().await;
    wait_folded(reducer.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    let stored = bus.rebalances().await;
    assert_history(&stored, &folded);
    assert!(
        folded.epochs.len() > EVENTS / 2,
        "only {} epochs",
        folded.epochs.len()
    );

    let snapshot = common::get_ring(reducer.grpc).await;
    assert_eq!(snapshot.checksum, folded.ledger.checksum());
    assert_eq!(snapshot.epoch, folded.ledger.epoch());
    assert_eq!(metric(reducer.metrics, m::DIVERGENCES.name).await, 0.0);
    // Restarts began from snapshots, not from the first event.
    assert!(resumed_from_snapshot > 0, "no restart used a snapshot");
    reducer.kill().await;
}

/// The start sequence of a freshly spawned reducer, once its metrics answer (0 if it
/// is killed before they do).
async fn metric_when_up(reducer: &Reducer) -> f64 {
    for _ in 0..100 {
        let value = metric(reducer.metrics, m::START_SEQUENCE.name).await;
        if value > 0.0 {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    0.0
}
