//! Hostile input against a running `ringside up`: garbage, empty, oversized,
//! wrong-version, other-ring and wrong-kind messages on every subject a service reads,
//! each published by a user allowed to publish there (a compromised or broken
//! service); malformed, oversized and slow HTTP on every listening port, garbage on
//! the gRPC port. Nothing crashes (every process keeps its pid), every service stays
//! ready, the ring is unchanged, `replay verify` passes, and every refusal is counted
//! in the reading service's metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod up_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use prost::Message as _;
use ringside_events::{Event, NodeName, RingName, ServiceUser, codec, pb, subject};
use serde_json::Value;
use up_support::{
    Up, all_ready, children_of, credentials, endpoints, get_ring, ok, runtime, wait_for,
};

/// A value of a counter (summed over its labels matching `labels`) on a page.
fn counter(page: &str, name: &str, labels: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics(addr: SocketAddr) -> String {
    runtime()
        .block_on(ringside_testkit::http::get(addr, "/metrics"))
        .unwrap()
        .1
}

/// The hostile payloads for a subject whose valid event is `valid`; `wrong` is an
/// event of another kind.
fn payloads(valid: &Event, wrong: &Event) -> Vec<(&'static str, Vec<u8>)> {
    let encoded = codec::encode(valid).unwrap();
    let mut envelope = pb::Envelope::decode(encoded.as_ref()).unwrap();
    envelope.schema_version = 99;
    let other = RingName::new("other").unwrap();
    let other_ring = codec::encode(&Event::new(other, valid.body().clone()).unwrap()).unwrap();
    vec![
        ("garbage", b"\xff\xfe not an event".to_vec()),
        ("empty", Vec::new()),
        ("oversized", vec![0x0a; 2 << 20]),
        ("wrong version", envelope.encode_to_vec()),
        ("other ring", other_ring.to_vec()),
        ("wrong kind", codec::encode(wrong).unwrap().to_vec()),
    ]
}

/// A raw exchange on a TCP port: what came back (empty if the server just closed).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A server may close before reading everything: the write may fail, fine.
    let _ = stream.write_all(request);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn hostile_messages_and_requests_are_refused_counted_and_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let (up, grpc) = Up::ready(dir.path(), 3, &[]);
    let before = get_ring(&grpc);
    let pids: Vec<i32> = children_of(up.pid()).into_iter().map(|(p, _)| p).collect();
    let points = endpoints(&up);
    let page_of = |service: &str| metrics(points[&format!("{service}.metrics")]);
    let counted = || {
        [
            counter(
                &page_of("reducer"),
                "ringside_reducer_malformed_messages_total",
                "",
            ),
            counter(
                &page_of("collector"),
                "ringside_collector_load_reports_total",
                "refused",
            ),
            counter(
                &page_of("watcher"),
                "ringside_watcher_heartbeats_refused_total",
                "",
            ),
            counter(&page_of("bridge"), "ringside_bridge_malformed_total", ""),
        ]
    };
    let counted_before = counted();

    // Every subject a service reads, as a user allowed to publish there.
    let ring = RingName::new("default").unwrap();
    let node = NodeName::new("node-1").unwrap();
    let passwords = credentials(&up);
    let url = up.record()["nats_url"].as_str().unwrap().to_string();
    let joined = Event::new(
        ring.clone(),
        pb::MembersJoined {
            members: vec![pb::Member {
                id: "intruder".into(),
                address: "127.0.0.1:1".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .unwrap();
    let load = Event::new(
        ring.clone(),
        pb::NodeLoadReported {
            node: "node-1".into(),
            ..Default::default()
        },
    )
    .unwrap();
    // (user, subject, an event of the subject's kind, an event of another kind)
    let targets = [
        (
            ServiceUser::Watcher,
            subject::membership(&ring),
            &joined,
            &load,
        ),
        (
            ServiceUser::Node,
            subject::load(&ring, &node),
            &load,
            &joined,
        ),
        (
            ServiceUser::Node,
            subject::heartbeat(&ring, &node),
            &load,
            &joined,
        ),
        (ServiceUser::Node, subject::handoff(&ring), &load, &joined),
        (ServiceUser::Node, subject::traffic(&ring), &load, &joined),
        (
            ServiceUser::Collector,
            subject::scale(&ring),
            &load,
            &joined,
        ),
    ];
    let mut sent = 0;
    runtime().block_on(async {
        for (user, subject, valid, wrong) in targets {
            let password = &passwords[&user.password_env()];
            let client = async_nats::connect_with_options(&url, user.connect_options(password))
                .await
                .unwrap();
            for (what, payload) in payloads(valid, wrong) {
                client
                    .publish(subject.clone(), payload.into())
                    .await
                    .unwrap_or_else(|e| panic!("{user} {what} on {subject}: {e}"));
                sent += 1;
            }
            client.flush().await.unwrap();
        }
    });
    assert_eq!(sent, 36);

    // Every reader counted what it refused.
    wait_for(Duration::from_secs(20), "every refusal counted", || {
        let now = counted();
        now.iter().zip(&counted_before).all(|(a, b)| a > b)
    });

    // HTTP: every listener, a malformed request line, a 1 MiB header (over hyper's 400 KB buffer), a slow client
    // holding connections open; garbage on the gRPC port.
    let mut slow = Vec::new();
    for (name, addr) in &points {
        if name.ends_with(".grpc") {
            let reply = raw(*addr, b"\x00\x01garbage that is not HTTP/2\r\n\r\n");
            assert!(!reply.contains("200 OK"), "{name}: {reply}");
            continue;
        }
        let reply = raw(*addr, b"NONSENSE\r\n\r\n");
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
            "{name}: {reply}"
        );
        let mut big = b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 1 << 20));
        big.extend_from_slice(b"\r\n\r\n");
        let reply = raw(*addr, &big);
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
            "{name}: {reply}"
        );
        for _ in 0..20 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n").unwrap();
            slow.push(s);
        }
    }
    // With slow clients on every port, every service still answers, on every port.
    assert!(all_ready(&up), "a slow client blocked a service");
    for (name, addr) in points.iter().filter(|(n, _)| !n.ends_with(".grpc")) {
        let reply = raw(
            *addr,
            b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(
            reply.starts_with("HTTP/1.1 "),
            "{name} with slow clients: {reply}"
        );
    }
    drop(slow);

    // Nothing crashed, the ring is as it was, the history verifies.
    wait_for(Duration::from_secs(20), "every service ready", || {
        all_ready(&up)
    });
    let after: Vec<i32> = children_of(up.pid()).into_iter().map(|(p, _)| p).collect();
    assert_eq!(after, pids, "a process was restarted");
    let ring_now = get_ring(&grpc);
    assert_eq!(
        (ring_now.epoch, ring_now.checksum),
        (before.epoch, before.checksum)
    );
    let verify: Value =
        serde_json::from_str(&ok(&up.ringside(&["replay", "verify", "--output", "json"]))).unwrap();
    assert_eq!(verify["problems"], serde_json::json!([]), "{verify}");
    ok(&up.interrupt());
}
