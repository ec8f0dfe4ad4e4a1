//! The collector, the real Prometheus `ringside up` runs, the rules, and the local
//! autoscaler: what Prometheus stores is what the load and the ring are, and the
//! autoscaler scales the nodes up under load and back down after its window, every
//! decision stored as an event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod up_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringside_kit::promql::{Sample, query};
use up_support::{Up, get_ring, ok, wait_for};

/// Prometheus's address, from `up.json`.
fn prometheus(up: &Up) -> SocketAddr {
    up.record()["endpoints"]["prometheus.web"]
        .as_str()
        .expect("up.json names Prometheus")
        .parse()
        .unwrap()
}

fn promql(addr: SocketAddr, promql: &str) -> Vec<Sample> {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(query(addr, promql, Duration::from_secs(5)))
        .unwrap()
}

/// The one sample of `promql` once it satisfies `done` (within a minute).
fn value_when(addr: SocketAddr, promql_text: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let samples = promql(addr, promql_text);
        if let [sample] = samples.as_slice()
            && done(sample.value)
        {
            return sample.value;
        }
        assert!(
            Instant::now() < deadline,
            "{promql_text} answers {samples:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn prometheus_stores_what_the_load_and_the_ring_are() {
    const CLIENTS: f64 = 40.0;
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start_args(
        &dir.path().join("state"),
        3,
        &[],
        &["--no-autoscale", "--scrape-interval", "1s"],
    );
    let grpc = up.record()["grpc"].as_str().unwrap().to_owned();
    wait_for(Duration::from_secs(30), "3 members", || {
        get_ring(&grpc).members.len() == 3
    });
    let prometheus = prometheus(&up);
    ok(&up.ringside(&[
        "load",
        "--clients",
        &CLIENTS.to_string(),
        "--duration",
        "6s",
        "--rate",
        "200",
    ]));

    // The distinct clients of the whole ring, as Prometheus stored them: the union of
    // the nodes' sketches counts each client once, though each reached every node.
    let ring_ips = value_when(
        prometheus,
        "ringside_collector_ring_unique_client_ips",
        |v| v > 0.0,
    );
    assert!(
        (ring_ips - CLIENTS).abs() <= 1.0,
        "{ring_ips} distinct clients, {CLIENTS} sent"
    );
    let per_node = promql(
        prometheus,
        r#"ringside_collector_node_unique_client_ips{namespace="local"}"#,
    );
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    for sample in &per_node {
        assert!(sample.value <= CLIENTS, "{sample:?}");
        assert_eq!(sample.labels["pod"], sample.labels["node"], "{sample:?}");
    }

    // The imbalance series is the ring's own figure at the same epoch.
    let snapshot = get_ring(&grpc);
    let ring = ringside_events::convert::snapshot_to_ring(&snapshot).unwrap();
    value_when(prometheus, "ringside_collector_ring_epoch", |e| {
        e == snapshot.epoch as f64
    });
    let imbalance = value_when(prometheus, "ringside_collector_ring_imbalance", |_| true);
    assert_eq!(Some(imbalance), ring.imbalance());
    let shares = promql(prometheus, "ringside_collector_node_share");
    for share in ring.ownership() {
        let stored = shares
            .iter()
            .find(|s| s.labels["node"] == share.id)
            .unwrap_or_else(|| panic!("no share of {}: {shares:?}", share.id));
        assert_eq!(stored.value, share.fraction);
    }

    // Prometheus loaded the rules and evaluates them without error.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, rules) = runtime
        .block_on(ringside_testkit::http::get(prometheus, "/api/v1/rules"))
        .unwrap();
    assert_eq!(status, 200, "{rules}");
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let groups = rules["data"]["groups"].as_array().unwrap();
    let mut names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ringside.alerts", "ringside.recording"]);
    wait_for(Duration::from_secs(30), "every rule evaluated", || {
        let (_, rules) = runtime
            .block_on(ringside_testkit::http::get(prometheus, "/api/v1/rules"))
            .unwrap();
        let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
        rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .all(|r| r["health"] == "ok")
    });
    ok(&up.interrupt());
}

#[test]
fn the_autoscaler_scales_up_under_load_and_down_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start_args(
        &dir.path().join("state"),
        1,
        &[],
        &[
            "--scrape-interval",
            "1s",
            "--autoscale-every",
            "2s",
            "--scale-down-window",
            "10s",
            "--max-nodes",
            "4",
        ],
    );
    let grpc = up.record()["grpc"].as_str().unwrap().to_owned();
    wait_for(Duration::from_secs(30), "1 member", || {
        get_ring(&grpc).members.len() == 1
    });
    // 250 distinct clients, 100 per node at most: 3 nodes.
    ok(&up.ringside(&[
        "load",
        "--clients",
        "250",
        "--duration",
        "20s",
        "--rate",
        "250",
    ]));
    wait_for(Duration::from_secs(30), "3 members", || {
        get_ring(&grpc).members.len() == 3
    });
    // The clients leave the nodes' last minute, then the window passes: 1 node.
    wait_for(Duration::from_secs(150), "1 member again", || {
        get_ring(&grpc).members.len() == 1
    });

    let events = ok(&up.ringside(&["replay", "events", "--type", "ScaleDecided"]));
    let decisions: Vec<&str> = events.lines().filter(|l| l.contains("scale ")).collect();
    assert!(
        decisions
            .first()
            .is_some_and(|d| d.contains("scale 1 -> 3") && d.contains("ringside_unique_client_ips")),
        "{events}"
    );
    assert!(
        decisions.last().is_some_and(|d| d.contains("scale 3 -> 1")
            && d.contains("scale down 3 -> 1")
            && d.contains("0 per replica")),
        "{events}"
    );
    ok(&up.interrupt());
}
