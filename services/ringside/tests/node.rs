//! Real nodes under `ringside up`: keys read anywhere they were written, bad input
//! refused and counted, the handoff moving exactly the keys of the moved ranges, and
//! no acknowledged write lost across a join, a leave and a SIGKILL under load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod up_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ringside_events::pb;
use up_support::*;

/// Each node's API address, by id.
fn nodes(up: &Up) -> BTreeMap<String, SocketAddr> {
    let record = up.record();
    record["endpoints"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(name, addr)| {
            let id = name.strip_suffix(".api")?;
            Some((id.to_owned(), addr.as_str()?.parse().ok()?))
        })
        .collect()
}

/// A raw HTTP/1.1 request (method, path, extra headers, body): status and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn metric(page: &str, series: &str) -> f64 {
    ringside_kit::telemetry::sample(page, series).unwrap_or(0.0)
}

#[test]
fn keys_are_read_anywhere_and_bad_input_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (up, grpc) = Up::ready(dir.path(), 3, &[("RINGSIDE_NODE_REQUEST_TIMEOUT", "1s")]);
    let by_id = nodes(&up);
    let nodes: Vec<SocketAddr> = by_id.values().copied().collect();
    assert_eq!(nodes.len(), 3);
    // For the stale-ring case below: a key, its owner, and another node.
    let stale_key = "stale-ring-key";
    let stale_owner = ringside_events::convert::snapshot_to_ring(&get_ring(&grpc))
        .unwrap()
        .owner(stale_key.as_bytes())
        .unwrap()
        .to_string();
    let (_, &other_addr) = by_id.iter().find(|(id, _)| **id != stale_owner).unwrap();
    runtime().block_on(async {
        // Written through one node, read through every other; deleted likewise.
        for i in 0..30 {
            let key = format!("/v1/keys/user:{i}");
            let value = format!("value {i}");
            let (status, _) = http(nodes[i % 3], "PUT", &key, &[], value.as_bytes()).await;
            assert_eq!(status, 204, "{key}");
            for node in &nodes {
                assert_eq!(
                    http(*node, "GET", &key, &[], b"").await,
                    (200, value.clone())
                );
            }
        }
        assert_eq!(
            http(nodes[0], "DELETE", "/v1/keys/user:0", &[], b"")
                .await
                .0,
            204
        );
        for node in &nodes {
            assert_eq!(http(*node, "GET", "/v1/keys/user:0", &[], b"").await.0, 404);
        }
        let (status, owner) = http(nodes[1], "GET", "/v1/keys/user:7/owner", &[], b"").await;
        assert_eq!(status, 200);
        let owner: serde_json::Value = serde_json::from_str(&owner).unwrap();
        assert_eq!(owner["replicas"].as_array().unwrap().len(), 2, "{owner}");

        // Bad input, each refused with its status and counted by its reason.
        let too_large = vec![b'x'; (1 << 20) + 1];
        assert_eq!(
            http(nodes[0], "PUT", "/v1/keys/big", &[], &too_large)
                .await
                .0,
            413
        );
        let long_key = format!("/v1/keys/{}", "k".repeat(1025));
        assert_eq!(http(nodes[0], "GET", &long_key, &[], b"").await.0, 400);
        assert_eq!(http(nodes[0], "GET", "/v1/nothing", &[], b"").await.0, 404);
        // A forwarded request without the client's address, or from a member that
        // is not there.
        let forwarded_by = [("Ringside-Forwarded-By", "node-2")];
        assert_eq!(
            http(nodes[0], "GET", "/v1/keys/a", &forwarded_by, b"")
                .await
                .0,
            400
        );
        // A sender this node's ring does not name: a 421, which the sender retries
        // (the two rings disagree for a moment while a member joins).
        let stranger = [
            ("Ringside-Forwarded-By", "nobody"),
            ("Forwarded", "for=127.0.9.9"),
        ];
        assert_eq!(
            http(nodes[0], "GET", "/v1/keys/a", &stranger, b"").await.0,
            421
        );
        // A slow client: headers, then a body that never comes.
        let started = std::time::Instant::now();
        let (status, _) = slow_body(nodes[0]).await;
        assert_eq!(status, 408);
        assert!(started.elapsed() < Duration::from_secs(10));

        // A request forwarded by a member to a node that does not own the key (both
        // on rings that disagree): 421 with its epoch, never forwarded again.
        let key = stale_key;
        let from_owner = [
            ("Ringside-Forwarded-By", stale_owner.as_str()),
            ("Forwarded", "for=127.0.9.9"),
        ];
        let (status, body) = http(
            other_addr,
            "GET",
            &format!("/v1/keys/{key}"),
            &from_owner,
            b"",
        )
        .await;
        assert_eq!(status, 421, "{body}");

        let page = ringside_testkit::http::get(nodes[0], "/metrics")
            .await
            .unwrap()
            .1;
        ringside_testkit::prometheus::check_metrics(&page).unwrap();
        for reason in [
            "too_large",
            "bad_key",
            "unknown_route",
            "bad_forwarded",
            "timeout",
        ] {
            let series = format!("ringside_node_rejected_requests_total{{reason=\"{reason}\"}}");
            assert!(metric(&page, &series) >= 1.0, "{series}: {page}");
        }
        let page = ringside_testkit::http::get(other_addr, "/metrics")
            .await
            .unwrap()
            .1;
        let series = "ringside_node_rejected_requests_total{reason=\"misdirected\"}";
        assert_eq!(metric(&page, series), 1.0, "{page}");
    });
    ok(&up.interrupt());
}

/// Sends a PUT whose body never arrives: the node's answer.
async fn slow_body(addr: SocketAddr) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /v1/keys/slow HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\nonly ten b"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    (response[9..12].parse().unwrap_or(0), response)
}

/// The stored events of the ring of a running `up`, decoded.
fn stored_events(up: &Up) -> Vec<(u64, pb::envelope::Body)> {
    let out = up.ringside(&["replay", "events", "--output", "json"]);
    let text = ok(&out);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let envelope: pb::Envelope = serde_json::from_value(e["event"].clone()).ok()?;
            Some((e["seq"].as_u64()?, envelope.body?))
        })
        .collect()
}

#[test]
fn a_join_and_a_leave_hand_off_exactly_the_keys_of_the_moved_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let (up, grpc) = Up::ready(dir.path(), 3, &[]);
    let entry = nodes(&up)["node-1"];
    let keys: Vec<String> = (0..600).map(|i| format!("item:{i}")).collect();
    runtime().block_on(async {
        for key in &keys {
            let path = format!("/v1/keys/{key}");
            assert_eq!(http(entry, "PUT", &path, &[], key.as_bytes()).await.0, 204);
        }
    });
    let before = ringside_events::convert::snapshot_to_ring(&get_ring(&grpc)).unwrap();
    ok(&up.ringside(&["scale", "4", "--wait", "60"]));
    let after = ringside_events::convert::snapshot_to_ring(&get_ring(&grpc)).unwrap();
    // No key whose owner did not change in the ring moved; every one that did is in a
    // moved range of the rebalance (checked in the events below).
    let moved: BTreeMap<(String, String), u64> = keys
        .iter()
        .filter_map(|k| {
            let (a, b) = (
                before.owner(k.as_bytes()).ok()?,
                after.owner(k.as_bytes()).ok()?,
            );
            (a != b).then(|| ((a.to_string(), b.to_string()), 1))
        })
        .fold(BTreeMap::new(), |mut m, (pair, n)| {
            *m.entry(pair).or_insert(0) += n;
            m
        });
    assert!(moved.keys().all(|(_, to)| to == "node-4"), "{moved:?}");
    // The handoffs of that epoch report exactly those keys, pair by pair, and their
    // ranges are the event's moved ranges between the same members.
    wait_for(Duration::from_secs(20), "the handoff reports", || {
        let reported: u64 = stored_events(&up)
            .iter()
            .filter_map(|(_, b)| match b {
                pb::envelope::Body::KeysHandedOff(h) if h.to == "node-4" => Some(h.count),
                _ => None,
            })
            .sum();
        reported == moved.values().sum::<u64>()
    });
    let events = stored_events(&up);
    let rebalance = events
        .iter()
        .rev()
        .find_map(|(_, b)| match b {
            pb::envelope::Body::RingRebalanced(r) if r.joined == ["node-4"] => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    for (_, body) in &events {
        let pb::envelope::Body::KeysHandedOff(h) = body else {
            continue;
        };
        assert_eq!(h.epoch, rebalance.epoch);
        assert_eq!(moved[&(h.from.clone(), h.to.clone())], h.count, "{h:?}");
        let ranges = rebalance.moved_ranges.as_ref().unwrap();
        let index = |id: &str| rebalance.members.iter().position(|m| m.id == id).unwrap() as u32;
        let expected: Vec<(u64, u64)> = (0..ranges.starts.len())
            .filter(|&i| ranges.from[i] == index(&h.from) && ranges.to[i] == index(&h.to))
            .map(|i| (ranges.starts[i], ranges.ends[i]))
            .collect();
        let got: Vec<(u64, u64)> = h
            .range_starts
            .iter()
            .copied()
            .zip(h.range_ends.iter().copied())
            .collect();
        assert_eq!(got, expected, "{h:?}");
    }
    // Key by key, as the nodes answer: a key outside every moved range of the
    // rebalance kept its owner; one inside changed it.
    let ranges = rebalance.moved_ranges.as_ref().unwrap();
    let moved_range = |p: u64| {
        (0..ranges.starts.len()).any(|i| {
            let (s, e) = (ranges.starts[i], ranges.ends[i]);
            if s < e {
                p > s && p <= e
            } else {
                p > s || p <= e
            }
        })
    };
    runtime().block_on(async {
        for key in &keys {
            let (status, body) =
                http(entry, "GET", &format!("/v1/keys/{key}/owner"), &[], b"").await;
            assert_eq!(status, 200, "{body}");
            let owner: serde_json::Value = serde_json::from_str(&body).unwrap();
            let now = owner["owner"]["id"].as_str().unwrap();
            let was = before.owner(key.as_bytes()).unwrap();
            let position = ringside_ring::hash_key(key.as_bytes());
            assert_eq!(now != was, moved_range(position), "{key}: {was} -> {now}");
        }
    });
    // Every key still reads back, through the newcomer too.
    let newcomer = nodes(&up)["node-4"];
    runtime().block_on(async {
        for key in &keys {
            let path = format!("/v1/keys/{key}");
            assert_eq!(
                http(newcomer, "GET", &path, &[], b"").await,
                (200, key.clone())
            );
        }
    });
    // The leave of node-4 hands its keys back.
    ok(&up.ringside(&["scale", "3", "--wait", "60"]));
    wait_for(Duration::from_secs(20), "node-4's handoff", || {
        stored_events(&up)
            .iter()
            .any(|(_, b)| matches!(b, pb::envelope::Body::KeysHandedOff(h) if h.from == "node-4"))
    });
    runtime().block_on(async {
        for key in &keys {
            let path = format!("/v1/keys/{key}");
            assert_eq!(
                http(entry, "GET", &path, &[], b"").await,
                (200, key.clone())
            );
        }
    });
    ok(&up.interrupt());
}

#[test]
fn no_acknowledged_write_is_lost_across_a_join_a_leave_and_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (up, grpc) = Up::ready(dir.path(), 3, &[]);
    let record = dir.path().join("writes.jsonl");
    let load = Command::new(BIN)
        .args(["load", "--state-dir"])
        .arg(&state)
        .args([
            "--duration",
            "25s",
            "--rate",
            "150",
            "--reads",
            "0.3",
            "--keys",
            "400",
        ])
        .args([
            "--clients",
            "7",
            "--timeout",
            "15s",
            "--output",
            "json",
            "--record",
        ])
        .arg(&record)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    ok(&up.ringside(&["scale", "4", "--wait", "60"]));
    std::thread::sleep(Duration::from_secs(3));
    ok(&up.ringside(&["scale", "3", "--wait", "60"]));
    std::thread::sleep(Duration::from_secs(3));
    // SIGKILL a node: `up` starts it again; it fetches its keys back from the other
    // holders before it answers for them.
    let (victim, _) = children_of(up.pid())
        .into_iter()
        .find(|(_, c)| c.contains("ringside node"))
        .unwrap();
    signal(victim, nix::sys::signal::Signal::SIGKILL);
    let summary = load.wait_with_output().unwrap();
    let summary = ok(&summary);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert!(summary["sent"].as_u64().unwrap() > 1000, "{summary}");

    // Each node saw exactly the 7 client addresses (directly or forwarded), in its
    // last report (every 2 s) before anything else asks it.
    std::thread::sleep(Duration::from_secs(3));
    runtime().block_on(async {
        for (id, addr) in nodes(&up) {
            let page = ringside_testkit::http::get(addr, "/metrics")
                .await
                .unwrap()
                .1;
            assert_eq!(
                metric(&page, "ringside_node_unique_client_ips"),
                7.0,
                "{id}"
            );
        }
    });
    // Every acknowledged write reads back, newest value, from the ring as it is.
    assert_nothing_lost(&verify_writes(&up, &record), 100);

    // R copies again: every key is on both of its holders.
    let ring = ringside_events::convert::snapshot_to_ring(&get_ring(&grpc)).unwrap();
    let addrs = nodes(&up);
    runtime().block_on(async {
        for i in (0..400).step_by(7) {
            let key = format!("user:{i}");
            let Ok(holders) = ring.successors(key.as_bytes(), 2) else {
                continue;
            };
            let mut copies = Vec::new();
            for holder in holders {
                let path = format!("/internal/v1/keys/{key}");
                let as_member = [("Ringside-Forwarded-By", holder)];
                copies.push(http(addrs[holder], "GET", &path, &as_member, b"").await.0);
            }
            assert!(
                copies.iter().all(|s| *s == 200) || copies.iter().all(|s| *s == 404),
                "{key}: {copies:?}"
            );
        }
    });
    ok(&up.interrupt());
}
