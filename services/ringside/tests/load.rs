//! End-to-end tests of `ringside load`: the real binary against fake nodes (axum on
//! 127.0.0.1:0 that store values, answer with the node headers and note each request's
//! peer address) and a fake RingService. Bounds are loose and seeds fixed: these test
//! behaviour, not speed.

// A test fails loudly on a broken expectation; unwrap is how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use ringside_events::{RingName, convert, pb};
use ringside_ring::{Member, Ring, RingConfig, Strategy};
use serde_json::Value;

/// What a fake node does and saw.
#[derive(Default)]
struct Fake {
    id: String,
    /// Answer 503 (storing nothing) to every Nth write.
    fail_every: Option<u64>,
    /// The stored values.
    store: Mutex<HashMap<String, Bytes>>,
    /// Every value stored per key, oldest first (to play a stale value back).
    history: Mutex<HashMap<String, Vec<Bytes>>>,
    /// Peer address of every request.
    peers: Mutex<HashSet<IpAddr>>,
    /// Requests per key.
    per_key: Mutex<HashMap<String, u64>>,
    requests: AtomicU64,
    gets: AtomicU64,
    puts: AtomicU64,
    failed: AtomicU64,
}

impl Fake {
    fn new(id: &str, fail_every: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            fail_every,
            ..Self::default()
        })
    }

    fn peers(&self) -> HashSet<IpAddr> {
        self.peers.lock().unwrap().clone()
    }

    fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    /// The node headers; every other answer says it was forwarded.
    fn headers(&self, n: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "ringside-served-by",
            HeaderValue::from_str(&self.id).unwrap(),
        );
        h.insert("ringside-epoch", HeaderValue::from_static("1"));
        if n.is_multiple_of(2) {
            h.insert("ringside-forwarded", HeaderValue::from_static("1"));
        }
        h
    }

    fn note(&self, peer: SocketAddr, key: &str) -> u64 {
        self.peers.lock().unwrap().insert(peer.ip());
        *self.per_key.lock().unwrap().entry(key.into()).or_default() += 1;
        self.requests.fetch_add(1, Ordering::SeqCst) + 1
    }
}

async fn get_key(
    State(fake): State<Arc<Fake>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(key): UrlPath<String>,
) -> impl IntoResponse {
    let n = fake.note(peer, &key);
    fake.gets.fetch_add(1, Ordering::SeqCst);
    let value = fake.store.lock().unwrap().get(&key).cloned();
    match value {
        Some(v) => (StatusCode::OK, fake.headers(n), v),
        None => (StatusCode::NOT_FOUND, fake.headers(n), Bytes::new()),
    }
}

async fn put_key(
    State(fake): State<Arc<Fake>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(key): UrlPath<String>,
    body: Bytes,
) -> impl IntoResponse {
    let n = fake.note(peer, &key);
    let puts = fake.puts.fetch_add(1, Ordering::SeqCst) + 1;
    if fake
        .fail_every
        .is_some_and(|every| puts.is_multiple_of(every))
    {
        fake.failed.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, fake.headers(n));
    }
    fake.store.lock().unwrap().insert(key.clone(), body.clone());
    fake.history
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .push(body);
    (StatusCode::NO_CONTENT, fake.headers(n))
}

/// Serves `fake` on 127.0.0.1:0; returns its address.
async fn serve(fake: Arc<Fake>) -> SocketAddr {
    let app = Router::new()
        .route("/v1/keys/{key}", get(get_key).put(put_key))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// A fake RingService serving one snapshot.
struct FakeRing(pb::RingSnapshot);

#[tonic::async_trait]
impl pb::ring_service_server::RingService for FakeRing {
    async fn get_ring(
        &self,
        _: tonic::Request<pb::GetRingRequest>,
    ) -> Result<tonic::Response<pb::GetRingResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::GetRingResponse {
            snapshot: Some(self.0.clone()),
        }))
    }

    async fn lookup(
        &self,
        _: tonic::Request<pb::LookupRequest>,
    ) -> Result<tonic::Response<pb::LookupResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake"))
    }

    async fn successors(
        &self,
        _: tonic::Request<pb::SuccessorsRequest>,
    ) -> Result<tonic::Response<pb::SuccessorsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake"))
    }

    type WatchRingStream = futures::stream::Empty<Result<pb::WatchRingResponse, tonic::Status>>;

    async fn watch_ring(
        &self,
        _: tonic::Request<pb::WatchRingRequest>,
    ) -> Result<tonic::Response<Self::WatchRingStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake"))
    }
}

/// Serves a ring of `members` (id, API address) at epoch 7; returns the gRPC address.
async fn serve_ring(members: &[(&str, String)]) -> SocketAddr {
    let mut ring = Ring::new(RingConfig::new(Strategy::Random, 64).unwrap());
    let details: Vec<pb::Member> = members
        .iter()
        .map(|(id, address)| {
            ring.add(Member::new(*id, 1)).unwrap();
            pb::Member {
                id: (*id).into(),
                address: address.clone(),
                weight: 1,
                ..Default::default()
            }
        })
        .collect();
    let name = RingName::new("default").unwrap();
    let snapshot = convert::ring_to_snapshot(&name, &ring, &details, 7, 1, 1).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::ring_service_server::RingServiceServer::new(FakeRing(
                snapshot,
            )))
            .serve_with_incoming(incoming),
    );
    addr
}

/// Runs `ringside load ARGS`: exit success, stdout, stderr.
async fn load(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringside"))
        .arg("load")
        .args(args)
        .output()
        .await
        .expect("run ringside load");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// Runs `ringside load ARGS --output json`, which must succeed.
async fn load_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let (ok, stdout, stderr) = load(&all).await;
    assert!(ok, "ringside load {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn k_clients_are_k_source_addresses_and_the_mix_is_kept() {
    let fake = Fake::new("a", None);
    let addr = serve(fake.clone()).await.to_string();
    let summary = load_json(&[
        "--nodes",
        &addr,
        "--clients",
        "5",
        "--requests",
        "600",
        "--rate",
        "2000",
        "--reads",
        "0.7",
        "--keys",
        "50",
        "--seed",
        "1",
    ])
    .await;

    let peers = fake.peers();
    assert_eq!(peers.len(), 5, "{peers:?}");
    for ip in &peers {
        let IpAddr::V4(v4) = ip else {
            panic!("{ip} is not IPv4")
        };
        assert!(v4.is_loopback() && v4.octets()[..3] == [127, 0, 1], "{ip}");
    }
    let (gets, puts) = (Fake::count(&fake.gets), Fake::count(&fake.puts));
    assert_eq!(gets + puts, 600);
    let reads = gets as f64 / 600.0;
    assert!((0.6..0.8).contains(&reads), "read fraction {reads}");

    assert_eq!(summary["sent"], 600);
    assert_eq!(summary["ops"]["all"]["requests"], 600);
    assert_eq!(summary["ops"]["get"]["requests"], gets);
    assert_eq!(summary["ops"]["put"]["ok"], puts);
    assert_eq!(summary["seed"], 1);
    assert!(summary["ops"]["all"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["errors"], serde_json::json!({}));
    // The fake marks every other answer forwarded.
    let forwarded = summary["forwarded_fraction"].as_f64().unwrap();
    assert!((0.4..0.6).contains(&forwarded), "{forwarded}");
    let nodes = summary["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (&nodes[0]["node"], &nodes[0]["served_share"]),
        (&"a".into(), &1.0.into())
    );
    assert_eq!(nodes[0]["ring_share"], Value::Null);
}

/// Requests per key index (`user:i`) the fake saw.
fn per_key(fake: &Fake, keys: usize) -> Vec<u64> {
    let seen = fake.per_key.lock().unwrap();
    (0..keys)
        .map(|i| seen.get(&format!("user:{i}")).copied().unwrap_or(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn zipf_keys_are_skewed_and_uniform_keys_are_not() {
    let common = [
        "--requests",
        "1000",
        "--rate",
        "2000",
        "--keys",
        "100",
        "--seed",
        "3",
    ];
    let zipf = Fake::new("z", None);
    let addr = serve(zipf.clone()).await.to_string();
    let mut args = vec!["--nodes", &addr, "--zipf", "1.2"];
    args.extend(common);
    load_json(&args).await;
    let counts = per_key(&zipf, 100);
    assert_eq!(counts.iter().sum::<u64>(), 1000);
    // P(user:0) = 1 / H(100, 1.2), about 0.27.
    assert!(counts[0] > 180, "{counts:?}");
    assert!(counts[0] > counts[9] * 5, "{counts:?}");

    let uniform = Fake::new("u", None);
    let addr = serve(uniform.clone()).await.to_string();
    let mut args = vec!["--nodes", &addr];
    args.extend(common);
    load_json(&args).await;
    let counts = per_key(&uniform, 100);
    assert!(counts.iter().all(|&c| c < 40), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_outside_loopback_is_refused() {
    for nodes in ["10.0.0.1:80", "127.0.0.1:9,192.168.1.1:80", "[::1]:80"] {
        let (ok, _, stderr) = load(&["--nodes", nodes, "--requests", "1"]).await;
        assert!(!ok, "{nodes} was accepted");
        assert!(
            stderr.contains("127.0.0.0/8") || stderr.contains("IPv4"),
            "{stderr}"
        );
    }
    // A ring whose member is outside loopback.
    let grpc = serve_ring(&[("far", "10.1.2.3:8080".into())])
        .await
        .to_string();
    let (ok, _, stderr) = load(&["--grpc", &grpc, "--requests", "1"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("ring member far") && stderr.contains("loopback"),
        "{stderr}"
    );
    // No running system and no targets.
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    let (ok, _, stderr) = load(&["--state-dir", dir, "--requests", "1"]).await;
    assert!(!ok);
    assert!(stderr.contains("no ringside up is running"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_counted_by_kind() {
    let fake = Fake::new("a", Some(4));
    let addr = serve(fake.clone()).await.to_string();
    // A port nothing listens on: bind, note it, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let nodes = format!("{addr},{dead_addr}");
    let summary = load_json(&[
        "--nodes",
        &nodes,
        "--requests",
        "400",
        "--rate",
        "2000",
        "--reads",
        "0.5",
        "--seed",
        "5",
        "--clients",
        "3",
    ])
    .await;
    let errors = summary["errors"].as_object().unwrap();
    assert!(Fake::count(&fake.failed) > 0);
    assert_eq!(errors["HTTP 503"], Fake::count(&fake.failed), "{errors:?}");
    let refused = errors["connect: connection refused"].as_u64().unwrap();
    assert_eq!(Fake::count(&fake.requests) + refused, 400, "{errors:?}");
    assert_eq!(
        summary["ops"]["all"]["errors"].as_u64().unwrap(),
        refused + Fake::count(&fake.failed)
    );
    // Reads of keys never written are not errors.
    assert!(summary["ops"]["get"]["not_found"].as_u64().unwrap() > 0);
}

fn record_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A key with two acknowledged writes, the second sent after the first ended, and the
/// first one's seq: playing that value back makes the key stale.
fn superseded(lines: &[Value]) -> (String, u64) {
    let mut acked: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l["ack"] == true) {
        let key = l["key"].as_str().unwrap().to_owned();
        let (seq, done) = (l["seq"].as_u64().unwrap(), l["done"].as_u64().unwrap());
        acked.entry(key).or_default().push((seq, done));
    }
    acked
        .into_iter()
        .find_map(|(key, writes)| {
            let last = writes.iter().map(|w| w.0).max()?;
            let old = writes.iter().find(|w| last > w.1)?;
            Some((key, old.0))
        })
        .expect("a key written twice in sequence")
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_writes_verify_and_lost_ones_are_found() {
    let fake = Fake::new("a", Some(9));
    let addr = serve(fake.clone()).await.to_string();
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("writes.jsonl");
    let record_arg = record.to_str().unwrap();
    let summary = load_json(&[
        "--nodes",
        &addr,
        "--requests",
        "800",
        "--rate",
        "2000",
        "--reads",
        "0.5",
        "--keys",
        "60",
        "--zipf",
        "0.8",
        "--seed",
        "9",
        "--record",
        record_arg,
    ])
    .await;
    let lines = record_lines(&record);
    assert_eq!(lines.len() as u64, Fake::count(&fake.puts));
    let acked = lines.iter().filter(|l| l["ack"] == true).count() as u64;
    assert_eq!(acked, summary["ops"]["put"]["ok"].as_u64().unwrap());
    assert_eq!(
        lines.len() as u64 - acked,
        Fake::count(&fake.failed),
        "failed writes are recorded as not acknowledged"
    );

    let verify = ["--verify", record_arg, "--nodes", &addr];
    let report = load_json(&verify).await;
    let keys = report["keys"].as_u64().unwrap();
    assert!(keys > 20, "{report}");
    assert_eq!(report["ok"], keys, "{report}");
    assert_eq!(report["failed"], 0);

    // Lose one key, and play an older acknowledged value back into another.
    let (stale_key, old_seq) = superseded(&lines);
    let old_value = fake.history.lock().unwrap()[&stale_key]
        .iter()
        .find(|v| String::from_utf8_lossy(v).contains(&format!(" seq={old_seq} ")))
        .cloned()
        .unwrap();
    fake.store
        .lock()
        .unwrap()
        .insert(stale_key.clone(), old_value);
    let lost_key = lines
        .iter()
        .filter(|l| l["ack"] == true)
        .map(|l| l["key"].as_str().unwrap().to_owned())
        .find(|k| *k != stale_key)
        .unwrap();
    fake.store.lock().unwrap().remove(&lost_key);

    let mut args = verify.to_vec();
    args.extend(["--output", "json"]);
    let (ok, stdout, stderr) = load(&args).await;
    assert!(!ok, "verify passed with a lost write");
    assert!(
        stderr.contains("2 of") && stderr.contains("failed verification"),
        "{stderr}"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&report["missing"], &report["stale"]),
        (&1.into(), &1.into()),
        "{report}"
    );
    assert_eq!(report["ok"], keys - 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ring_gives_the_targets_and_the_shares() {
    let (a, b) = (Fake::new("a", None), Fake::new("b", None));
    let members = [
        ("a", serve(a.clone()).await.to_string()),
        ("b", serve(b.clone()).await.to_string()),
    ];
    let grpc = serve_ring(&members).await.to_string();
    let summary = load_json(&[
        "--grpc",
        &grpc,
        "--requests",
        "400",
        "--rate",
        "2000",
        "--seed",
        "2",
    ])
    .await;
    let (to_a, to_b) = (Fake::count(&a.requests), Fake::count(&b.requests));
    assert_eq!(to_a + to_b, 400);
    assert!(to_a > 100 && to_b > 100, "{to_a} {to_b}");
    assert_eq!(summary["ring"]["first_epoch"], 7);
    let nodes = summary["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let mut ring_total = 0.0;
    for (node, (fake, (id, address))) in nodes.iter().zip([&a, &b].iter().zip(&members)) {
        assert_eq!(node["node"], *id);
        assert_eq!(node["address"], address.as_str());
        assert_eq!(node["served"], Fake::count(&fake.requests));
        ring_total += node["ring_share"].as_f64().unwrap();
    }
    assert!((ring_total - 1.0).abs() < 1e-3, "{ring_total}");
    // The table names the columns a person reads.
    let (ok, table, stderr) = load(&["--grpc", &grpc, "--requests", "20", "--rate", "500"]).await;
    assert!(ok, "{stderr}");
    for column in ["P999 MS", "RING SHARE", "forwarded:"] {
        assert!(table.contains(column), "{table}");
    }
}
