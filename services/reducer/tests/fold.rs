//! The reducer against a real nats-server: folding, publishing, snapshots and restarts,
//! malformed messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Bus, Running, assert_history, assert_resumed_after, metric, wait_folded};
use ringside_reducer::metrics as m;

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folds_a_churn_and_stores_every_epoch_once() {
    let bus = Bus::start().await;
    let events = common::churn(7, 200, 12);
    bus.publish(&events[..100]).await;
    let reducer = Running::ready(&bus.reducer_map("a")).await;
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
    // Every scripted event is a distinct fact: none was dropped as a duplicate.
    let membership = bus.read_subject(ringside_events::subject::membership(&common::ring()));
    assert_eq!(membership.await.len(), events.len());
    assert!(
        folded.epochs.len() > 100,
        "the churn made only {} epochs",
        folded.epochs.len()
    );
    assert!(last > 200);
    assert_eq!(
        metric(reducer.metrics, m::EPOCH.name).await,
        folded.epochs.len() as f64
    );
    // The page is what Prometheus's own linter accepts.
    let page = common::metrics(reducer.metrics).await;
    ringside_testkit::prometheus::check_metrics(&page).unwrap();
    reducer.stop().await.unwrap();
}

/// A reducer started with no snapshot on a long stored history folds it all without
/// building events (a `CatchUp`), checks the stored head,
/// then serves the ring the offline fold makes and stores the next epochs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_on_a_long_history_serves_the_fold_and_goes_on() {
    let bus = Bus::start().await;
    let events = common::churn(11, 300, 14);
    // The first reducer stores every epoch and writes no snapshot while it runs.
    let never = [("RINGSIDE_REDUCER_SNAPSHOT_EVERY", "1000000")];
    let first = Running::ready(&bus.reducer_map_with("a", &never)).await;
    bus.publish(&events[..250]).await;
    let folded = bus.offline_fold().await;
    wait_folded(first.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    assert!(folded.epochs.len() > 100, "{} epochs", folded.epochs.len());

    let second = Running::ready(&bus.reducer_map_with("b", &never)).await;
    assert_eq!(metric(second.metrics, m::START_SEQUENCE.name).await, 1.0);
    let replayed = format!("{}{{how=\"replayed\"}}", m::REBALANCES.name);
    let verified = format!("{}{{how=\"verified\"}}", m::REBALANCES.name);
    assert_eq!(
        metric(second.metrics, &replayed).await,
        (folded.epochs.len() - 1) as f64
    );
    assert_eq!(metric(second.metrics, &verified).await, 1.0);
    let served = common::get_ring(second.grpc).await;
    assert_eq!(served.checksum, folded.ledger.checksum());
    assert_eq!(served.epoch, folded.epochs.len() as u64);

    // Both go on: still exactly one stored event per epoch, the offline fold's.
    bus.publish(&events[250..]).await;
    let folded = bus.offline_fold().await;
    let end = folded.ledger.membership_sequence();
    wait_folded(first.metrics, end, WITHIN).await;
    wait_folded(second.metrics, end, WITHIN).await;
    assert_history(&bus.rebalances().await, &folded);
    assert_eq!(
        common::get_ring(second.grpc).await.checksum,
        folded.ledger.checksum()
    );
    second.stop().await.unwrap();
    first.stop().await.unwrap();
}

/// The encoded envelope of `body` for `ring`, leaked for `publish_raw`.
fn envelope_bytes(ring: &str, body: impl Into<ringside_events::Body>) -> &'static [u8] {
    let event =
        ringside_events::Event::new(ringside_events::RingName::new(ring).unwrap(), body).unwrap();
    Box::leak(
        ringside_events::codec::encode(&event)
            .unwrap()
            .to_vec()
            .into_boxed_slice(),
    )
}

/// A `HeartbeatSent` envelope: valid, but it belongs on a heartbeat subject.
fn heartbeat_bytes() -> &'static [u8] {
    envelope_bytes(
        "orders",
        ringside_events::pb::HeartbeatSent {
            member: Some(member("node-99")),
            beat: 1,
            ..Default::default()
        },
    )
}

fn member(id: &str) -> ringside_events::pb::Member {
    ringside_events::pb::Member {
        id: id.into(),
        weight: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_skipped_counted_and_do_not_stop_the_reducer() {
    let bus = Bus::start().await;
    let events = common::churn(11, 60, 8);
    bus.publish(&events[..20]).await;
    bus.publish_raw(b"\xff\xfe not protobuf").await;
    bus.publish(&events[20..40]).await;
    // Decodes, but does not belong on the membership subject.
    bus.publish_raw(heartbeat_bytes()).await;
    // Another ring's join on this ring's subject: it must not make a member here.
    let intruder = ringside_events::pb::MembersJoined {
        members: vec![member("intruder")],
        ..Default::default()
    };
    bus.publish_raw(envelope_bytes("other", intruder)).await;
    let reducer = Running::ready(&bus.reducer_map("a")).await;
    // Truncated protobuf, while live.
    bus.publish_raw(b"\x0a\x05ab").await;
    bus.publish(&events[40..]).await;
    let folded = bus.offline_fold().await;
    wait_folded(reducer.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    assert_history(&bus.rebalances().await, &folded);
    assert!(!folded.ledger.ring().contains("intruder"));
    let served = common::get_ring(reducer.grpc).await;
    assert!(served.members.iter().all(|m| m.id != "intruder"));
    assert_eq!(metric(reducer.metrics, m::MALFORMED.name).await, 4.0);
    assert_eq!(metric(reducer.metrics, m::DEAD_LETTERED.name).await, 4.0);
    let dead = bus
        .read_stream(
            ringside_events::subject::STREAM_DEADLETTER,
            ringside_events::subject::deadletter(&common::ring()),
        )
        .await;
    assert_eq!(dead.len(), 4);
    assert!(!reducer.is_finished());
    reducer.stop().await.unwrap();
}

/// Messages on the rebalance subject that are not an epoch of the ring (garbage,
/// another ring's event, a copy of an old epoch) are skipped and counted: live, when
/// the next epoch's publish finds the subject moved on, and at a restart, when the
/// last message of the subject is one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_the_rebalance_subject_is_skipped_live_and_at_a_restart() {
    let bus = Bus::start().await;
    let events = common::churn(5, 60, 8);
    let first = Running::ready(&bus.reducer_map("a")).await;
    bus.publish(&events[..20]).await;
    let folded = bus.offline_fold().await;
    wait_folded(first.metrics, folded.ledger.membership_sequence(), WITHIN).await;

    let stored = bus.rebalances().await;
    let old_epoch = ringside_events::codec::encode(
        &ringside_events::Event::new(common::ring(), stored[0].1.clone()).unwrap(),
    )
    .unwrap();
    let other_ring = envelope_bytes("other", stored[1].1.clone());
    let mut junk = vec![
        bus.publish_raw_rebalance("garbage \u{1}".into()).await,
        bus.publish_raw_rebalance(other_ring.into()).await,
        bus.publish_raw_rebalance(old_epoch).await,
    ];
    bus.publish(&events[20..40]).await;
    let folded = bus.offline_fold().await;
    wait_folded(first.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    assert_history(&bus.rebalances_but(&junk).await, &folded);
    assert_eq!(metric(first.metrics, m::INVALID_STORED.name).await, 3.0);
    first.stop().await.unwrap();

    // The last message of the subject is junk when the next reducer starts.
    junk.push(bus.publish_raw_rebalance("more garbage".into()).await);
    let second = Running::ready(&bus.reducer_map("b")).await;
    assert_eq!(metric(second.metrics, m::INVALID_STORED.name).await, 1.0);
    bus.publish(&events[40..]).await;
    let folded = bus.offline_fold().await;
    wait_folded(second.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    assert_history(&bus.rebalances_but(&junk).await, &folded);
    assert_eq!(
        common::get_ring(second.grpc).await.checksum,
        folded.ledger.checksum()
    );
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_snapshots_and_the_next_start_resumes_after_it() {
    let bus = Bus::start().await;
    let events = common::churn(3, 150, 10);
    let map = bus.reducer_map_with(
        "a",
        &[
            ("RINGSIDE_REDUCER_SNAPSHOT_EVERY", "20"),
            ("RINGSIDE_REDUCER_SNAPSHOT_KEEP", "2"),
        ],
    );
    let first = Running::ready(&map).await;
    assert_eq!(metric(first.metrics, m::START_SEQUENCE.name).await, 1.0);
    bus.publish(&events[..100]).await;
    let folded = bus.offline_fold().await;
    let at = folded.ledger.membership_sequence();
    wait_folded(first.metrics, at, WITHIN).await;
    assert!(metric(first.metrics, m::SNAPSHOTS_WRITTEN.name).await >= 1.0);
    first.stop().await.unwrap();

    // The stop wrote a snapshot of everything folded: the next start begins after it.
    let second = Running::ready(&map).await;
    assert_resumed_after(second.metrics, &folded).await;
    assert!(metric(second.metrics, m::SNAPSHOT_AGE.name).await < 60.0);
    bus.publish(&events[100..]).await;
    let folded = bus.offline_fold().await;
    wait_folded(second.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    assert_history(&bus.rebalances().await, &folded);
    second.stop().await.unwrap();

    // Old per-epoch snapshots are pruned down to the configured two.
    let kv = async_nats::jetstream::new(bus.admin.clone())
        .get_key_value(ringside_events::subject::KV_SNAPSHOTS)
        .await
        .unwrap();
    let keys: Vec<String> = futures::TryStreamExt::try_collect(kv.keys().await.unwrap())
        .await
        .unwrap();
    let epoch_keys = keys.iter().filter(|k| k.starts_with("orders.e")).count();
    assert_eq!(epoch_keys, 2, "{keys:?}");
    assert!(keys.contains(&"orders.latest".to_string()), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_ring_configuration_is_refused() {
    let bus = Bus::start().await;
    bus.publish(&common::churn(5, 10, 6)).await;
    let map = bus.reducer_map("a");
    let first = Running::ready(&map).await;
    first.stop().await.unwrap();
    let mut changed = map.clone();
    changed.insert("RINGSIDE_REDUCER_VNODES".into(), "16".into());
    let err = Running::refused(&changed).await;
    assert!(
        matches!(err, ringside_reducer::ReducerError::ConfigMismatch { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_epoch_that_differs_from_the_fold_stops_the_reducer() {
    let bus = Bus::start().await;
    let events = common::churn(9, 30, 6);
    bus.publish(&events).await;
    bus.publish_forged_first_epoch().await;
    let err = Running::refused(&bus.reducer_map("a")).await;
    assert!(
        matches!(
            err,
            ringside_reducer::ReducerError::Divergence { epoch: 1, .. }
        ),
        "{err}"
    );
}

/// Catch-up folds the epochs before the stored head without reading them back, so it
/// must notice when the head does not sit where the fold puts it: here the stored
/// epochs 1..=3 are true, and epoch 4 claims a later membership event than the one
/// the fold makes it from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_head_from_another_membership_event_stops_the_reducer() {
    let bus = Bus::start().await;
    bus.publish(&common::churn(9, 30, 6)).await;
    let folded = bus.offline_fold().await;
    assert!(folded.epochs.len() > 5, "the churn makes enough epochs");
    let mut history: Vec<_> = folded.epochs[..4].to_vec();
    history[3].membership_sequence = folded.epochs[5].membership_sequence;
    let reducer = ringside_events::Publisher::new(bus.reducer.clone());
    for epoch in history {
        reducer
            .publish(&ringside_events::Event::new(common::ring(), epoch).unwrap())
            .await
            .unwrap();
    }
    let err = Running::refused(&bus.reducer_map("a")).await;
    // Found as soon as the fold makes epoch 4, not after folding on to the head's.
    assert!(
        matches!(
            &err,
            ringside_reducer::ReducerError::Divergence { epoch: 4, detail, .. }
                if detail.contains("made it already from sequence")
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_is_ridden_out_in_order() {
    let mut bus = Bus::start().await;
    let events = common::churn(13, 120, 10);
    let reducer = Running::ready(&bus.reducer_map("a")).await;
    bus.publish(&events[..60]).await;
    let folded = bus.offline_fold().await;
    wait_folded(reducer.metrics, folded.ledger.membership_sequence(), WITHIN).await;

    // SIGKILL the server, bring it back on the same store and port: the reducer's
    // connection, consumer and publisher recover by themselves. Meanwhile it says it
    // is not ready (it could not store an epoch), and says so again once it can.
    bus.server.kill().await.unwrap();
    common::wait_readyz(reducer.metrics, 503, WITHIN).await;
    assert_eq!(metric(reducer.metrics, m::READY.name).await, 0.0);
    bus.server.restart().await.unwrap();
    common::wait_readyz(reducer.metrics, 200, WITHIN).await;
    assert_eq!(metric(reducer.metrics, m::READY.name).await, 1.0);
    bus.publish(&events[60..]).await;
    let folded = bus.offline_fold().await;
    wait_folded(reducer.metrics, folded.ledger.membership_sequence(), WITHIN).await;
    assert_history(&bus.rebalances().await, &folded);
    assert!(!reducer.is_finished());
    reducer.stop().await.unwrap();
}
