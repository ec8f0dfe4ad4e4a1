//! The client against a real nats-server and a real reducer in this process: it ends
//! on the reducer's ring (epoch, checksum, lookups), sees every epoch once and in
//! order, its gained and lost ranges add up to each event's moved ranges, and it gets
//! through a start from a snapshot, junk on the rebalance subject, an epoch that does
//! not fit, a deleted consumer, a nats-server restart and a slow subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use ringside_client::{Change, ClientConfig, ClientError, LookupError, SyncReason, follow};
use ringside_events::{Event, RingName, codec, pb};
use ringside_ring::RingError;
use support::{
    Bus, Following, Reducer, WITHIN, assert_every_epoch_once, assert_gained_and_lost,
    assert_same_ring, churn, ring,
};

fn encode(ring: &RingName, event: pb::RingRebalanced) -> Vec<u8> {
    codec::encode(&Event::new(ring.clone(), event).unwrap())
        .unwrap()
        .to_vec()
}

/// Waits until `what` holds.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WITHIN;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_every_epoch_once_from_the_first() {
    let bus = Bus::start().await;
    let following = Following::start(&bus).await;
    // Nothing stored yet: synced at epoch 0, before the configuration is known.
    let view = tokio::time::timeout(WITHIN, following.client.ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((view.epoch(), view.checksum()), (0, None));
    assert_eq!(
        following.client.lookup(b"key"),
        Err(LookupError::Ring(RingError::Empty))
    );

    let reducer = Reducer::start(&bus, &[]).await;
    bus.publish(&churn(1, 0, 40)).await;
    let last = bus.last_epoch();
    assert!(last > 20, "the churn made only {last} epochs");
    following.wait_for_epoch(last).await;
    assert_same_ring(&following.client, &reducer.ring_at(last).await);

    assert_eq!(bus.client_consumers().await.len(), 1);
    let seen = following.stop().await;
    // A clean stop leaves no consumer behind.
    assert_eq!(bus.client_consumers().await, Vec::<String>::new());
    assert_eq!(assert_every_epoch_once(&seen.all, last), 0);
    for changes in seen.by_member.values() {
        assert_every_epoch_once(changes, last);
    }
    assert_gained_and_lost(&seen, &bus.rings());
    assert_eq!(seen.stats.applied, last);
    assert_eq!(
        (seen.stats.syncs, seen.stats.resyncs, seen.stats.skipped),
        (1, 0, 0)
    );
    reducer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_started_mid_history_starts_from_the_snapshot() {
    let bus = Bus::start().await;
    let reducer = Reducer::start(&bus, &[("RINGSIDE_REDUCER_SNAPSHOT_EVERY", "5")]).await;
    bus.publish(&churn(2, 0, 30)).await;
    let first = bus.last_epoch();
    reducer.ring_at(first).await;
    // The snapshot writer runs beside the fold: wait for the newest multiple of 5.
    let snapshot_epoch = first / 5 * 5;
    let deadline = Instant::now() + WITHIN;
    while bus.latest_snapshot().await.map(|s| s.epoch) != Some(snapshot_epoch) {
        assert!(Instant::now() < deadline, "no snapshot at {snapshot_epoch}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let following = Following::start(&bus).await;
    following.wait_for_epoch(first).await;
    bus.publish(&churn(3, 30, 20)).await;
    let last = bus.last_epoch();
    following.wait_for_epoch(last).await;
    assert_same_ring(&following.client, &reducer.ring_at(last).await);

    let seen = following.stop().await;
    // Synced once caught up with what was stored, then each later epoch.
    assert_eq!(assert_every_epoch_once(&seen.all, last), first);
    assert_gained_and_lost(&seen, &bus.rings());
    // Only what the snapshot did not hold was read.
    assert_eq!(seen.stats.applied, last - snapshot_epoch);
    assert_eq!((seen.stats.resyncs, seen.stats.snapshots_rejected), (0, 0));
    reducer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_messages_that_are_not_epochs_are_skipped() {
    let bus = Bus::start().await;
    let reducer = Reducer::start(&bus, &[]).await;
    let following = Following::start(&bus).await;
    bus.publish(&churn(4, 0, 15)).await;
    following.wait_for_epoch(bus.last_epoch()).await;

    let head = bus.last_rebalance().await;
    let mut next = head.clone();
    next.epoch += 1;
    let mut ahead = head.clone();
    ahead.epoch += 5;
    bus.store_on_rebalance(b"not a protobuf".to_vec()).await;
    bus.store_on_rebalance(encode(&RingName::new("other").unwrap(), next))
        .await;
    bus.store_on_rebalance(encode(&ring(), head)).await;
    bus.store_on_rebalance(encode(&ring(), ahead)).await;
    // The reducer publishes the next epochs after them.
    bus.publish(&churn(5, 15, 15)).await;
    let last = bus.last_epoch();
    following.wait_for_epoch(last).await;
    assert_same_ring(&following.client, &reducer.ring_at(last).await);

    let seen = following.stop().await;
    assert_every_epoch_once(&seen.all, last);
    assert_gained_and_lost(&seen, &bus.rings());
    assert_eq!((seen.stats.skipped, seen.stats.resyncs), (4, 0));
    reducer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_that_do_not_fit_resync_once_each_then_are_skipped() {
    let bus = Bus::start().await;
    let reducer = Reducer::start(&bus, &[]).await;
    let following = Following::start(&bus).await;
    bus.publish(&churn(6, 0, 12)).await;
    let last = bus.last_epoch();
    following.wait_for_epoch(last).await;
    let served = reducer.ring_at(last).await;
    // The newest snapshot is older than the ring (one every 100 epochs), so each
    // re-sync reads both forged epochs again.
    assert!(bus.latest_snapshot().await.is_none_or(|s| s.epoch < last));

    // Two versions of the next epoch, each on top of another ring than this one.
    let head = bus.last_rebalance().await;
    for flip in [1, 2] {
        let mut forged = head.clone();
        forged.epoch += 1;
        forged.previous_checksum ^= flip;
        bus.store_on_rebalance(encode(&ring(), forged)).await;
    }
    // Each stops the chain once (a re-sync), and is skipped when met again: the
    // first in the second and third reading, the second in the third.
    wait_until("both forged epochs skipped", || {
        following.client.stats().skipped == 3
    })
    .await;
    assert_same_ring(&following.client, &served);

    let seen = following.stop().await;
    assert_eq!(seen.stats.resyncs, 2);
    let lived = 1 + seen
        .all
        .iter()
        .rposition(|c| matches!(c, Change::Rebalanced { .. }))
        .unwrap_or(0);
    assert_every_epoch_once(&seen.all[..lived], last);
    // Then one or two announcements (one if both were stored before the first
    // re-sync caught up), of the same ring.
    let resyncs = &seen.all[lived..];
    assert!(matches!(resyncs.len(), 1 | 2), "{resyncs:?}");
    for change in resyncs {
        assert!(
            matches!(change, Change::Synced { ring, reason: SyncReason::Mismatch } if ring.epoch() == last),
            "{change:?}"
        );
    }
    reducer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_replaced_from_the_position() {
    let bus = Bus::start().await;
    let reducer = Reducer::start(&bus, &[]).await;
    let following = Following::start(&bus).await;
    bus.publish(&churn(7, 0, 10)).await;
    following.wait_for_epoch(bus.last_epoch()).await;

    let consumers = bus.client_consumers().await;
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    let stream = async_nats::jetstream::new(bus.admin.clone())
        .get_stream(ringside_events::subject::STREAM_EVENTS)
        .await
        .unwrap();
    stream.delete_consumer(&consumers[0]).await.unwrap();
    wait_until("the consumer replaced", || {
        following.client.stats().consumer_resets >= 1
    })
    .await;

    bus.publish(&churn(8, 10, 10)).await;
    let last = bus.last_epoch();
    following.wait_for_epoch(last).await;
    assert_same_ring(&following.client, &reducer.ring_at(last).await);
    let seen = following.stop().await;
    assert_every_epoch_once(&seen.all, last);
    assert_eq!(seen.stats.resyncs, 0);
    reducer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_is_ridden_out() {
    let mut bus = Bus::start().await;
    let reducer = Reducer::start(&bus, &[]).await;
    let following = Following::start(&bus).await;
    bus.publish(&churn(9, 0, 10)).await;
    let before = bus.last_epoch();
    following.wait_for_epoch(before).await;

    bus.server.kill().await.unwrap();
    // Lookups go on from the last ring while the server is away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(following.client.lookup(b"key").unwrap().epoch, before);
    bus.server.restart().await.unwrap();

    bus.publish(&churn(10, 10, 10)).await;
    let last = bus.last_epoch();
    following.wait_for_epoch(last).await;
    assert_same_ring(&following.client, &reducer.ring_at(last).await);
    let seen = following.stop().await;
    assert_every_epoch_once(&seen.all, last);
    assert_gained_and_lost(&seen, &bus.rings());
    assert_eq!(seen.stats.resyncs, 0);
    assert!(seen.stats.consumer_resets >= 1, "{:?}", seen.stats);
    reducer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_lags_starts_again_from_the_current_ring() {
    let bus = Bus::start().await;
    let reducer = Reducer::start(&bus, &[]).await;
    let config = ClientConfig::new(ring()).buffer(NonZeroUsize::MIN);
    let (follower, client) = follow(bus.node_client().await, config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = tokio::spawn(follower.run(async {
        let _ = stopped.await;
    }));
    client.ready().await.unwrap();
    let mut subscription = client.subscribe(Some("node-01"));
    let first = subscription.next().await.unwrap();
    assert!(matches!(
        first,
        Change::Synced {
            reason: SyncReason::Subscribed,
            ..
        }
    ));

    // Epochs pass while nobody reads: more than the buffer of one.
    bus.publish(&churn(11, 0, 10)).await;
    let behind = bus.last_epoch();
    wait_until("the client caught up", || client.epoch() == Some(behind)).await;
    let lagged = subscription.next().await.unwrap();
    assert!(
        matches!(&lagged, Change::Synced { ring, reason: SyncReason::Lagged } if ring.epoch() == behind),
        "{lagged:?}"
    );
    assert_eq!(client.stats().subscribers_lagged, 1);

    // Read as they come: each later epoch once, nothing from before the lag.
    for (i, event) in churn(12, 10, 6).into_iter().enumerate() {
        let was = bus.last_epoch();
        bus.publish(&[event]).await;
        if bus.last_epoch() > was {
            let change = tokio::time::timeout(WITHIN, subscription.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(change.epoch(), was + 1, "event {i}");
        }
    }
    let _ = stop.send(());
    follower.await.unwrap();
    assert!(subscription.next().await.is_none());
    reducer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_never_ran_says_stopped() {
    let bus = Bus::start().await;
    let (follower, client) = follow(bus.node_client().await, ClientConfig::new(ring()));
    let mut subscription = client.subscribe(None);
    drop(follower);
    assert!(matches!(client.ready().await, Err(ClientError::Stopped)));
    assert!(!client.is_ready());
    assert_eq!(client.lookup(b"key"), Err(LookupError::NotReady));
    assert!(subscription.next().await.is_none());
}
