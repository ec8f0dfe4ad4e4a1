//! The consumer loop against a real server: garbage, truncated, oversized, unknown
//! and rejected messages, and events that do not belong on their subject (another
//! ring's, another kind's), are counted and dead-lettered, and the loop goes on.

// Helper functions of this test file unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use prost::Message as _;
use ringside_events::codec::{self, MAX_EVENT_BYTES, MAX_PAYLOAD_BYTES};
use ringside_events::consume::{StatsSnapshot, Stopped};
use ringside_events::subject::{self, STREAM_DEADLETTER, STREAM_EVENTS};
use ringside_events::{
    Body, Consumer, Delivery, Event, HandleError, Publisher, RingName, SCHEMA_VERSION, ServiceUser,
    headers, pb,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn member_id(d: &Delivery) -> String {
    match d.event.body() {
        Body::MembersJoined(j) => j.members[0].id.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

/// Sends a 10 MB PUB over a raw connection: the server must refuse it.
async fn raw_oversized_publish(port: u16, password: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = tcp.read(&mut buf).await.unwrap(); // INFO
    assert!(buf[..n].starts_with(b"INFO "));
    let connect = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"user\":\"admin\",\"pass\":\"{password}\",\"protocol\":1}}\r\nPUB ringside.orders.membership {}\r\n",
        10 * 1024 * 1024
    );
    tcp.write_all(connect.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await {
            Ok(Ok(0)) => break, // the server closed the connection
            Ok(Ok(n)) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    answer
}

async fn wait_for(
    stats: &ringside_events::ConsumerStats,
    done: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = stats.snapshot();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "consumer stuck at {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_counted_dead_lettered_and_do_not_stop_the_consumer() {
    let server = common::local_server().await;
    let admin = common::provisioned(&server).await;
    let ring = common::ring();
    let membership = subject::membership(&ring);

    // The reducer's durable consumer, created with the reducer's own permissions.
    let reducer = server.connect_as(ServiceUser::Reducer).await.unwrap();
    let stream = jetstream::new(reducer.clone())
        .get_stream(STREAM_EVENTS)
        .await
        .unwrap();
    let pull = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(subject::durable_name("reducer", &ring)),
            filter_subject: membership.clone(),
            ack_wait: Duration::from_secs(10),
            ..Default::default()
        })
        .await
        .unwrap();
    let messages = pull.messages().await.unwrap();
    let consumer = Consumer::new("reducer", ring.clone(), Publisher::new(reducer.clone()));
    let stats = consumer.stats();

    // Handler: records ids; rejects node 666; asks for a retry of node 777 once.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let seen = Arc::clone(&seen);
        move |d: Delivery| {
            let seen = Arc::clone(&seen);
            async move {
                let id = member_id(&d);
                if id == common::member(666).id {
                    return Err(HandleError::Reject {
                        reason: "poison member".into(),
                    });
                }
                if id == common::member(777).id && d.delivered == 1 {
                    return Err(HandleError::Retry {
                        reason: "dependency down".into(),
                        delay: Duration::from_millis(100),
                    });
                }
                seen.lock()
                    .unwrap()
                    .push((id, d.stream_sequence.unwrap(), d.delivered));
                Ok(())
            }
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            consumer
                .run(messages, handler, async {
                    let _ = stopped.await;
                })
                .await
        }
    });

    let js = jetstream::new(admin.clone());
    let put = |payload: Bytes| {
        let js = js.clone();
        let subject = membership.clone();
        async move {
            js.publish(subject, payload)
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };
    let envelope = |version: u32, body: Option<pb::envelope::Body>| {
        Bytes::from(
            pb::Envelope {
                schema_version: version,
                ring: "orders".into(),
                body,
                ..Default::default()
            }
            .encode_to_vec(),
        )
    };
    let good = |i| codec::encode(&common::joined(i)).unwrap();
    let joined_body = common::joined(5).to_envelope().body;
    let unsorted = pb::MembersJoined {
        members: vec![common::member(9), common::member(8)],
        source: 2,
        ..Default::default()
    };

    let other_ring_join = codec::encode(
        &Event::new(
            RingName::new("other").unwrap(),
            common::joined(6).into_body(),
        )
        .unwrap(),
    )
    .unwrap();
    let scale = Event::new(
        ring.clone(),
        pb::ScaleDecided {
            current_replicas: 1,
            desired_replicas: 2,
            ..Default::default()
        },
    )
    .unwrap();

    // (payload, expected dead-letter reason)
    let mut bad: Vec<(Bytes, &str)> = vec![
        (Bytes::from_static(b"\xff\xfe\xfd garbage"), "malformed"),
        (good(2).slice(..good(2).len() / 2), "malformed"),
        (envelope(SCHEMA_VERSION + 1, joined_body), "unknown_version"),
        (envelope(SCHEMA_VERSION, None), "missing_event"),
        (envelope(SCHEMA_VERSION, Some(unsorted.into())), "invalid"),
        // Another ring's join on this ring's subject: not folded into this ring.
        (other_ring_join, "wrong_subject"),
        // A scale decision on the membership subject: it belongs on the scale subject.
        (codec::encode(&scale).unwrap(), "wrong_subject"),
        // Just under the codec limit, still garbage.
        (Bytes::from(vec![0xffu8; MAX_EVENT_BYTES - 1]), "malformed"),
        // Over the codec limit but under the server's: refused unread; the
        // dead-letter copy is cut short to leave room for its headers.
        (
            Bytes::from(vec![0x0au8; MAX_PAYLOAD_BYTES - 4096]),
            "too_large",
        ),
    ];
    let mut sequences = BTreeMap::new();
    sequences.insert(put(good(1)).await, "good");
    for (payload, reason) in &bad {
        sequences.insert(put(payload.clone()).await, reason);
    }
    sequences.insert(put(good(666)).await, "rejected");
    bad.push((good(666), "rejected"));
    sequences.insert(put(good(777)).await, "good");

    // 10 MB never reaches the stream: the client refuses it, and so does the server
    // when a client does not check.
    let ten_mb = Bytes::from(vec![0u8; 10 * 1024 * 1024]);
    let refused = admin.publish(membership.clone(), ten_mb).await.unwrap_err();
    assert_eq!(
        refused.kind(),
        async_nats::client::PublishErrorKind::MaxPayloadExceeded
    );
    let answer = raw_oversized_publish(server.port(), server.password("admin").unwrap()).await;
    assert!(
        answer.contains("Maximum Payload Violation"),
        "server said {answer:?}"
    );
    sequences.insert(put(good(3)).await, "good");

    // 1 + 9 bad + 666 + 777 twice + 3.
    let s = wait_for(&stats, |s| s.handled == 3 && s.dead_lettered == 10).await;
    assert_eq!(
        s,
        StatsSnapshot {
            received: 14,
            handled: 3,
            decode_failed: 9,
            rejected: 1,
            retried: 1,
            dead_lettered: 10,
            ..StatsSnapshot::default()
        }
    );
    let seen = seen.lock().unwrap().clone();
    let ids: Vec<&str> = seen.iter().map(|(id, _, _)| id.as_str()).collect();
    // 777 came back after its retry delay, possibly after 3.
    assert!(
        ids == ["node-00001", "node-00777", "node-00003"]
            || ids == ["node-00001", "node-00003", "node-00777"],
        "{ids:?}"
    );
    assert!(
        seen.iter()
            .any(|(id, _, delivered)| id == "node-00777" && *delivered == 2)
    );

    // The dead-letter stream holds one copy of each bad message, with its reason,
    // origin and (cut short where needed) payload.
    let dead =
        common::read_subject(&admin, STREAM_DEADLETTER, &subject::deadletter(&ring), 10).await;
    assert_eq!(dead.len(), 10);
    for ((_, h, payload), (original, reason)) in dead.iter().zip(&bad) {
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_string()).unwrap_or_default();
        assert_eq!(get(headers::DEADLETTER_REASON), *reason);
        assert_eq!(get(headers::DEADLETTER_SUBJECT), membership);
        assert_eq!(get(headers::DEADLETTER_CONSUMER), "reducer");
        let source = get(headers::DEADLETTER_SOURCE);
        let seq: u64 = source.strip_prefix("RINGSIDE:").unwrap().parse().unwrap();
        assert_eq!(sequences[&seq], *reason);
        assert!(!get(headers::DEADLETTER_ERROR).is_empty());
        if original.len() > MAX_EVENT_BYTES {
            assert_eq!(
                get(headers::DEADLETTER_TRUNCATED),
                original.len().to_string()
            );
            assert_eq!(&payload[..], &original[..payload.len()]);
        } else {
            assert_eq!(payload, original);
        }
    }

    // Still alive: a later good message is handled.
    put(good(4)).await;
    wait_for(&stats, |s| s.handled == 4).await;
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap().unwrap(), Stopped::Shutdown);
}

#[tokio::test]
async fn a_core_subscription_is_consumed_the_same_way() {
    let server = common::local_server().await;
    let _admin = common::provisioned(&server).await;
    let ring = common::ring();
    let watcher = server.connect_as(ServiceUser::Watcher).await.unwrap();
    let beats = watcher
        .subscribe(subject::heartbeat_any(&ring))
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let consumer = Consumer::new(
        "heartbeat-watcher",
        ring.clone(),
        Publisher::new(watcher.clone()),
    )
    .without_acks();
    let stats = consumer.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            let beats = beats.map(Ok::<_, std::convert::Infallible>);
            consumer
                .run(beats, |_d: Delivery| async { Ok(()) }, async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    use futures::StreamExt as _;
    let node = server.connect_as(ServiceUser::Node).await.unwrap();
    let beat = ringside_events::Event::new(
        ring.clone(),
        pb::HeartbeatSent {
            member: Some(common::member(1)),
            beat: 1,
            ..Default::default()
        },
    )
    .unwrap();
    Publisher::new(node.clone())
        .publish_core(&beat)
        .await
        .unwrap();
    node.publish(
        subject::heartbeat(&ring, &"node-2".parse().unwrap()),
        "junk".into(),
    )
    .await
    .unwrap();
    node.flush().await.unwrap();
    let s = wait_for(&stats, |s| s.handled == 1 && s.dead_lettered == 1).await;
    assert_eq!(s.decode_failed, 1);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap().unwrap(), Stopped::Shutdown);
}
