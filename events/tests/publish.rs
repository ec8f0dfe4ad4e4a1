//! Publisher against a real server: exactly once and in order across SIGKILLs, the
//! single-writer conflict, retries recognised as stored.

// Helper functions of this test file unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use ringside_events::publish::BatchStored;
use ringside_events::subject::{self, STREAM_EVENTS};
use ringside_events::{Body, Event, PublishError, Publisher, RetryPolicy, ServiceUser, codec};

const EVENTS: usize = 10_000;
/// Events handed to `publish_batch` per call; the test kills the server between calls'
/// progress marks, while batches are in flight.
const CALL: usize = 500;

/// Polls the stream's message count through its own client (errors while the server
/// is down are expected and ignored) until it reaches `at_least`.
async fn wait_for_stored(js: &jetstream::Context, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = js.get_stream(STREAM_EVENTS).await
            && let Ok(info) = s.info().await
            && info.state.messages >= at_least
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream never reached {at_least} messages"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_membership_events_survive_two_sigkills_exactly_once_in_order() {
    let mut server = common::local_server().await;
    let admin = common::provisioned(&server).await;
    let publisher = Publisher::with_policy(
        server.connect_as(ServiceUser::Watcher).await.unwrap(),
        RetryPolicy {
            max_attempts: 40,
            ack_timeout: Duration::from_secs(1),
            ..RetryPolicy::default()
        },
    )
    .with_window(100);
    let events: Vec<Event> = (0..EVENTS).map(common::joined).collect();

    let handed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let task = {
        let handed = Arc::clone(&handed);
        tokio::spawn(async move {
            let mut total = BatchStored::default();
            for chunk in events.chunks(CALL) {
                handed.fetch_add(chunk.len(), Ordering::SeqCst);
                let r = publisher.publish_batch(chunk).await?;
                total.stored += r.stored;
                total.duplicates += r.duplicates;
                total.last_sequence = r.last_sequence;
            }
            Ok::<_, PublishError>(total)
        })
    };

    // Kill while publishing is in full swing, twice; keep each outage visible to the
    // client (reconnect attempts fail) before restarting on the same store and port.
    let js = jetstream::new(admin.clone());
    let mut kills_in_flight = 0;
    for mark in [2_500u64, 6_500] {
        wait_for_stored(&js, mark).await;
        if !task.is_finished() {
            kills_in_flight += 1;
        }
        server.kill().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.restart().await.unwrap();
    }
    let total = task.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(kills_in_flight, 2, "both kills must hit a running publish");
    assert_eq!(handed.load(Ordering::SeqCst), EVENTS);
    assert_eq!(total.stored + total.duplicates, EVENTS as u64, "{total:?}");

    // The stream: each event exactly once, in publication order.
    let admin = server.connect_as(ServiceUser::Admin).await.unwrap();
    let mut stream = jetstream::new(admin.clone())
        .get_stream(STREAM_EVENTS)
        .await
        .unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, EVENTS as u64, "exactly {EVENTS} stored");
    let stored = common::read_subject(
        &admin,
        STREAM_EVENTS,
        &subject::membership(&common::ring()),
        EVENTS,
    )
    .await;
    assert_eq!(stored.len(), EVENTS);
    assert_eq!(stored.last().map(|m| m.0), Some(state.last_sequence));
    for (i, (_, _, payload)) in stored.iter().enumerate() {
        let event = codec::decode(payload).unwrap();
        match event.body() {
            Body::MembersJoined(j) => {
                assert_eq!(j.members[0].id, common::member(i).id, "position {i}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(stored.windows(2).all(|w| w[0].0 < w[1].0));
    println!(
        "{EVENTS} events, 2 SIGKILLs: {elapsed:?}, stored {} + {} recognised duplicates, {} server starts",
        total.stored,
        total.duplicates,
        server.log().matches("Server is ready").count()
    );
}

#[tokio::test]
async fn a_stale_single_writer_publish_is_a_conflict() {
    let server = common::local_server().await;
    let _admin = common::provisioned(&server).await;
    let publisher = Publisher::new(server.connect_as(ServiceUser::Reducer).await.unwrap());

    let first = publisher
        .publish_expecting(&common::rebalanced(1, 3, 11), 0)
        .await
        .unwrap();
    assert!(!first.duplicate);
    let second = publisher
        .publish_expecting(&common::rebalanced(2, 4, 22), first.sequence)
        .await
        .unwrap();

    // A second reducer still at epoch 1 tries its own epoch 2: refused.
    match publisher
        .publish_expecting(&common::rebalanced(2, 4, 99), first.sequence)
        .await
    {
        Err(PublishError::Conflict {
            subject,
            expected,
            actual,
        }) => {
            assert_eq!(subject, "ringside.orders.rebalance");
            assert_eq!(expected, first.sequence);
            assert_eq!(actual, Some(second.sequence));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The same epoch-2 fact again (a retry whose ack was lost): recognised as stored.
    let again = publisher
        .publish_expecting(&common::rebalanced(2, 4, 22), first.sequence)
        .await
        .unwrap();
    assert_eq!((again.sequence, again.duplicate), (second.sequence, true));
    // A plain publish of a stored fact is deduplicated by its msg id.
    let watcher = Publisher::new(server.connect_as(ServiceUser::Watcher).await.unwrap());
    let dup = watcher.publish(&common::joined(1)).await.unwrap();
    let dup2 = watcher.publish(&common::joined(1)).await.unwrap();
    assert_eq!((dup2.sequence, dup2.duplicate), (dup.sequence, true));
    // Heartbeats are not stored: the JetStream publisher refuses them.
    let beat = Event::new(
        common::ring(),
        ringside_events::pb::HeartbeatSent {
            member: Some(common::member(1)),
            beat: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        publisher.publish(&beat).await,
        Err(PublishError::NotStored { .. })
    ));
}

#[tokio::test]
async fn a_batch_must_target_one_stream_and_gives_up_when_nothing_listens() {
    let server = common::local_server().await;
    let admin = common::provisioned(&server).await;
    let publisher = Publisher::new(admin.clone());
    let load = Event::new(
        common::ring(),
        ringside_events::pb::NodeLoadReported {
            node: "node-1".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        publisher.publish_batch(&[common::joined(1), load]).await,
        Err(PublishError::MixedStreams { .. })
    ));
    // No stream for the subject: bounded attempts, then a clear error.
    jetstream::new(admin)
        .delete_stream(STREAM_EVENTS)
        .await
        .unwrap();
    let quick = Publisher::with_policy(
        server.connect_as(ServiceUser::Admin).await.unwrap(),
        RetryPolicy {
            max_attempts: 3,
            ack_timeout: Duration::from_millis(300),
            ..RetryPolicy::default()
        },
    );
    match quick.publish(&common::joined(2)).await {
        Err(PublishError::GaveUp { attempts, .. }) => assert_eq!(attempts, 3),
        other => panic!("expected GaveUp, got {other:?}"),
    }
}

/// Durability as configured (`nats/local.conf`: `sync_interval: always`): an event the
/// server acknowledged is on disk before the acknowledgement, so a SIGKILL right after
/// it loses nothing. (Under JetStream's default lazy fsync, Jepsen's 2025 analysis of
/// NATS lost acknowledged writes to exactly this.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_event_survives_a_sigkill_right_after_its_ack() {
    const ROUNDS: usize = 12;
    let mut server = common::local_server().await;
    common::provisioned(&server).await;
    let mut acked = Vec::new();
    for i in 0..ROUNDS {
        let client = server.connect_as(ServiceUser::Watcher).await.unwrap();
        let event = common::joined(i);
        let stored = Publisher::new(client).publish(&event).await.unwrap();
        // No pause: the kill follows the acknowledgement at once.
        server.kill().await.unwrap();
        acked.push((stored.sequence, event));
        server.restart().await.unwrap();
    }
    let admin = server.connect_as(ServiceUser::Admin).await.unwrap();
    let stream = jetstream::new(admin)
        .get_stream(STREAM_EVENTS)
        .await
        .unwrap();
    for (seq, event) in &acked {
        let message = stream.direct_get(*seq).await.unwrap();
        let stored = codec::decode(&message.payload).unwrap();
        assert_eq!(stored.msg_id(), event.msg_id(), "sequence {seq}");
    }
    assert_eq!(
        server.log().matches("Server is ready").count(),
        ROUNDS + 1,
        "one start per kill"
    );
}
