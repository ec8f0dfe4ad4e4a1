//! Two reducers racing over the same stream: exactly one event per epoch, each epoch
//! stored by one of them and adopted by the other, both on the same ring; a plain
//! subscriber of the stored copies sees each stored epoch once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Bus, Running, assert_history, metric, wait_folded};
use futures::StreamExt;
use ringside_events::subject::{self, SubjectKind};
use ringside_events::{Body, codec};
use ringside_reducer::metrics as m;

const WITHIN: Duration = Duration::from_secs(120);

async fn stored_by(addr: std::net::SocketAddr, how: &str) -> f64 {
    metric(addr, &format!("{}{{how=\"{how}\"}}", m::REBALANCES.name)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reducers_store_exactly_one_event_per_epoch() {
    let bus = Bus::start().await;
    // A plain core subscriber (what `nats sub` is) of the stored copies.
    let stored_copies = bus
        .admin
        .subscribe(subject::stored(&common::ring(), SubjectKind::Rebalance))
        .await
        .unwrap();
    bus.admin.flush().await.unwrap();
    let a = Running::ready(&bus.reducer_map("a")).await;
    let b = Running::ready(&bus.reducer_map("b")).await;
    // Bursts, so both have work in hand at the same time.
    let events = common::churn(21, 300, 12);
    for chunk in events.chunks(25) {
        bus.publish(chunk).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let folded = bus.offline_fold().await;
    let at = folded.ledger.membership_sequence();
    wait_folded(a.metrics, at, WITHIN).await;
    wait_folded(b.metrics, at, WITHIN).await;
    assert_history(&bus.rebalances().await, &folded);

    // Every epoch was stored by exactly one of them and found stored by the other.
    let n = folded.epochs.len() as f64;
    let published =
        stored_by(a.metrics, "published").await + stored_by(b.metrics, "published").await;
    let found = stored_by(a.metrics, "adopted").await
        + stored_by(b.metrics, "adopted").await
        + stored_by(a.metrics, "duplicate").await
        + stored_by(b.metrics, "duplicate").await;
    assert_eq!((published, found), (n, n));

    // Both serve the same ring.
    let mut rings = Vec::new();
    for addr in [a.grpc, b.grpc] {
        let snapshot = common::get_ring(addr).await;
        rings.push((
            snapshot.epoch,
            snapshot.checksum,
            snapshot.rebalance_sequence,
        ));
    }
    let last = bus.rebalances().await.pop().unwrap();
    assert_eq!(rings[0], (last.1.epoch, folded.ledger.checksum(), last.0));
    assert_eq!(rings[0], rings[1]);
    a.stop().await.unwrap();
    b.stop().await.unwrap();

    // The stored copies are exactly the stored events, each once, in order, with their
    // stream sequence: never a losing reducer's refused epoch.
    let stored = bus.rebalances().await;
    let copies = received(stored_copies, stored.len()).await;
    assert_eq!(copies, stored);
}

/// The first `n` messages of a subscription to stored copies of rebalance events
/// (and any that follow within a moment): (the `Nats-Sequence` header, the event).
async fn received(
    mut sub: async_nats::Subscriber,
    n: usize,
) -> Vec<(u64, ringside_events::pb::RingRebalanced)> {
    let mut out = Vec::new();
    loop {
        let wait = if out.len() < n {
            WITHIN
        } else {
            Duration::from_millis(500)
        };
        let Ok(Some(m)) = tokio::time::timeout(wait, sub.next()).await else {
            break;
        };
        let headers = m.headers.as_ref().unwrap();
        let sequence = headers
            .get("Nats-Sequence")
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        assert_eq!(
            headers.get("Nats-Subject").unwrap().as_str(),
            subject::rebalance(&common::ring())
        );
        let event = codec::decode_on(&subject::rebalance(&common::ring()), &m.payload).unwrap();
        match event.into_body() {
            Body::RingRebalanced(r) => out.push((sequence, r)),
            other => panic!("not a rebalance event: {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reducer_checks_the_history_and_joins_the_race() {
    let bus = Bus::start().await;
    let events = common::churn(22, 200, 10);
    let a = Running::ready(&bus.reducer_map("a")).await;
    bus.publish(&events[..120]).await;
    let folded = bus.offline_fold().await;
    wait_folded(a.metrics, folded.ledger.membership_sequence(), WITHIN).await;

    // The second one starts from nothing: it folds the stored epochs, checks the
    // last one (the head), then races.
    let b = Running::ready(&bus.reducer_map("b")).await;
    assert_eq!(stored_by(b.metrics, "verified").await, 1.0);
    assert_eq!(
        stored_by(b.metrics, "replayed").await,
        folded.epochs.len() as f64 - 1.0
    );
    bus.publish(&events[120..]).await;
    let folded = bus.offline_fold().await;
    let at = folded.ledger.membership_sequence();
    wait_folded(a.metrics, at, WITHIN).await;
    wait_folded(b.metrics, at, WITHIN).await;
    assert_history(&bus.rebalances().await, &folded);
    assert_eq!(metric(b.metrics, m::DIVERGENCES.name).await, 0.0);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
