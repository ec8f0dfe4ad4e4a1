//! Shared helpers of the events integration tests: a real nats-server with
//! `nats/local.conf`, provisioned streams, sample events, reading a subject back.

// Helpers of tests: a failed unwrap is a failed test, which is what we want here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ringside_events::{Event, Publisher, RetryPolicy, RingName, pb};
use ringside_testkit::NatsServer;

/// The ring every test uses.
pub(crate) fn ring() -> RingName {
    RingName::new("orders").unwrap()
}

/// A member `node-<i>` with incarnation `uid-<i>`.
pub(crate) fn member(i: usize) -> pb::Member {
    pb::Member {
        id: format!("node-{i:05}"),
        address: format!("127.0.0.1:{}", 20000 + i % 40000),
        weight: 1,
        uid: Some(format!("uid-{i}")),
        ..Default::default()
    }
}

/// `node-<i>` joined (heartbeat source).
pub(crate) fn joined(i: usize) -> Event {
    Event::new(
        ring(),
        pb::MembersJoined {
            members: vec![member(i)],
            source: pb::MembershipSource::Heartbeat as i32,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A rebalance event for `epoch` with members `0..n` (enough for publish tests).
pub(crate) fn rebalanced(epoch: u64, n: usize, checksum: u64) -> Event {
    Event::new(
        ring(),
        pb::RingRebalanced {
            epoch,
            membership_sequence: epoch,
            members: (0..n).map(member).collect(),
            joined: vec![member(n - 1).id],
            moved_fraction: 1.0 / n as f64,
            ideal_fraction: 1.0 / n as f64,
            checksum,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A server with `nats/local.conf` (auth, fsync always, 8 MiB max payload).
pub(crate) async fn local_server() -> NatsServer {
    NatsServer::start_local_conf().await.unwrap()
}

/// Admin client with the builtin streams and buckets provisioned.
pub(crate) async fn provisioned(server: &NatsServer) -> async_nats::Client {
    server.connect_provisioned().await.unwrap()
}

/// A publisher that gives up quickly (for tests that expect failures).
pub(crate) fn impatient(client: async_nats::Client) -> Publisher {
    Publisher::with_policy(
        client,
        RetryPolicy {
            max_attempts: 1,
            ack_timeout: Duration::from_millis(500),
            ..RetryPolicy::default()
        },
    )
}

/// Every stored message of `subject` in `stream`, in stream order (ordered consumer),
/// as (sequence, headers, payload). Stops at `expect` messages or after 10 s of quiet.
pub(crate) async fn read_subject(
    client: &async_nats::Client,
    stream: &str,
    subject: &str,
    expect: usize,
) -> Vec<(u64, async_nats::HeaderMap, bytes::Bytes)> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(stream).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < expect {
        match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
            Ok(Some(Ok(m))) => {
                let seq = m.info().unwrap().stream_sequence;
                out.push((
                    seq,
                    m.headers.clone().unwrap_or_default(),
                    m.payload.clone(),
                ));
            }
            Ok(Some(Err(e))) => panic!("ordered consumer error: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    out
}
