//! Shared helpers of the events integration tests: a real nats-server with
//! `nats/local.conf`, provisioned streams, sample events, reading a subject back.

// Helpers of tests: a failed unwrap is a failed test, which is what we want here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ringside_events::{Body, Event, Publisher, RetryPolicy, RingName, pb};
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

/// One event of every kind, with most fields set.
pub(crate) fn one_of_each() -> Vec<Event> {
    let at = ringside_events::event::timestamp(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    );
    let mut labelled = member(7);
    labelled.zone = Some("eu-1a".into());
    labelled.labels.insert("app".into(), "ringside".into());
    labelled.labels.insert("tier".into(), "a".into());
    let bodies: Vec<Body> = vec![
        pb::MembersJoined {
            members: vec![member(2), labelled.clone()],
            source: pb::MembershipSource::Kubernetes as i32,
            ..Default::default()
        }
        .into(),
        pb::MemberLeft {
            member_id: "node-00002".into(),
            uid: Some("uid-2".into()),
            reason: pb::LeaveReason::HeartbeatMissed as i32,
            source: pb::MembershipSource::Heartbeat as i32,
            detail: "missed 3 beats".into(),
            ..Default::default()
        }
        .into(),
        pb::MembershipSynced {
            members: vec![member(1), member(3), labelled.clone()],
            source: pb::MembershipSource::Kubernetes as i32,
            resource_version: "12345".into(),
        }
        .into(),
        pb::RingRebalanced {
            epoch: 41,
            membership_sequence: 97,
            config: Some(pb::RingConfig {
                strategy: pb::RingStrategy::Balanced as i32,
                vnodes: 160,
            }),
            members: vec![member(1), member(4)],
            joined: vec!["node-00004".into()],
            departed: vec!["node-00003".into()],
            reweighted: vec![],
            token_changes: Some(pb::TokenChanges {
                added: vec![10, u64::MAX],
                added_owners: vec![1, 1],
                removed: vec![5],
                removed_owners: vec![2],
                reassigned: vec![7],
                reassigned_from: vec![0],
                reassigned_to: vec![1],
            }),
            moved_ranges: Some(pb::MovedRanges {
                starts: vec![u64::MAX - 3],
                ends: vec![10],
                from: vec![0],
                to: vec![1],
            }),
            moved_fraction: 0.198,
            ideal_fraction: 0.2,
            previous_checksum: 0xdead_beef,
            checksum: u64::MAX,
            token_count: 320,
        }
        .into(),
        pb::NodeLoadReported {
            node: "node-00001".into(),
            window_start: Some(at),
            window: Some(pbjson_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            requests: 1200,
            forwarded: 300,
            unique_client_ips_last_minute: 42,
            cpu_ratio: 0.35,
            keys_held: 9000,
            epoch: 41,
            bytes_held: 9_216_000,
            pod: "node-00001".into(),
            namespace: "ring".into(),
            client_ip_sketch: vec![0; ringside_events::sketch::REGISTERS],
        }
        .into(),
        pb::KeysHandedOff {
            epoch: 41,
            from: "node-00001".into(),
            to: "node-00004".into(),
            count: 1234,
            bytes: 56789,
            range_starts: vec![10, 1 << 40],
            range_ends: vec![20, 1 << 41],
            duration: Some(pbjson_types::Duration {
                seconds: 0,
                nanos: 250_000_000,
            }),
        }
        .into(),
        pb::ScaleDecided {
            current_replicas: 3,
            desired_replicas: 5,
            metric: "ringside_unique_client_ips".into(),
            metric_value: 180.0,
            target_value: 100.0,
            evaluated_at: Some(at),
            reason: "above target".into(),
            metrics: vec![pb::ScaleMetric {
                name: "ringside_unique_client_ips".into(),
                target_type: "AverageValue".into(),
                value: 180.0,
                target: 100.0,
                proposed_replicas: 5,
                unavailable: String::new(),
            }],
        }
        .into(),
        pb::HeartbeatSent {
            member: Some(member(1)),
            beat: 17,
            interval: Some(pbjson_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            goodbye: false,
        }
        .into(),
        pb::TrafficSampled {
            node: "node-00001".into(),
            epoch: 41,
            sample_every: 100,
            requests: vec![pb::RoutedRequest {
                position: 99,
                owner: "node-00004".into(),
                forwarded: true,
            }],
        }
        .into(),
    ];
    bodies
        .into_iter()
        .map(|b| {
            Event::new(ring(), b)
                .unwrap()
                .with_producer("test/1")
                .with_occurred_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001))
        })
        .collect()
}
