//! The bridge against a real nats-server: the history is stored as the reducer stores
//! it (each membership event, then its epoch's `RingRebalanced` as the reducer user,
//! folded here by the reducer's own `RingLedger`), and real WebSocket clients read it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prost::Message as _;
use ringside_bridge::{BridgeConfig, BridgeService};
use ringside_events::{Event, Outcome, Publisher, RingLedger, RingName, ServiceUser, pb, subject};
use ringside_kit::Service as _;
use ringside_ring::{RingConfig, Strategy};
use ringside_testkit::NatsServer;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WITHIN: Duration = Duration::from_secs(60);
const VNODES: u32 = 64;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ring() -> RingName {
    RingName::new("orders").unwrap()
}

/// A server, the history stored so far, and the fold that made it.
struct History {
    server: NatsServer,
    admin: Publisher,
    reducer: Publisher,
    ledger: RingLedger,
    next_member: usize,
    /// Stream sequence of each stored message, by epoch for rebalances.
    epochs: BTreeMap<u64, u64>,
}

impl History {
    async fn start() -> History {
        let server = NatsServer::start_local_conf().await.unwrap();
        let admin = Publisher::new(server.connect_provisioned().await.unwrap());
        let reducer = Publisher::new(server.connect_as(ServiceUser::Reducer).await.unwrap());
        History {
            server,
            admin,
            reducer,
            ledger: RingLedger::new(ring(), RingConfig::new(Strategy::Balanced, VNODES).unwrap()),
            next_member: 0,
            epochs: BTreeMap::new(),
        }
    }

    /// Stores one membership event and, as the reducer would, its epoch.
    async fn store(&mut self, body: impl Into<ringside_events::Body>) {
        let event = Event::new(ring(), body).unwrap();
        let stored = self.admin.publish(&event).await.unwrap();
        match self.ledger.apply(stored.sequence, event.body()) {
            Outcome::Rebalanced(r) => {
                let epoch = r.epoch;
                let e = Event::new(ring(), *r).unwrap();
                let seq = self.reducer.publish(&e).await.unwrap().sequence;
                self.ledger.record_rebalance_sequence(seq);
                self.epochs.insert(epoch, seq);
            }
            other => panic!("not an epoch: {other:?}"),
        }
    }

    async fn join(&mut self) {
        let id = format!("node-{:03}", self.next_member);
        self.next_member += 1;
        let member = pb::Member {
            id: id.clone(),
            address: format!("127.0.0.1:{}", 7000 + self.next_member),
            weight: 1,
            ..Default::default()
        };
        self.store(pb::MembersJoined {
            members: vec![member],
            source_version: id,
            ..Default::default()
        })
        .await;
    }

    async fn leave(&mut self, id: &str) {
        self.store(pb::MemberLeft {
            member_id: id.to_owned(),
            source_version: format!("{id}-left"),
            ..Default::default()
        })
        .await;
    }

    /// Replaces every member with `count` new ones at once: large epochs.
    async fn replace_all(&mut self, count: usize) {
        let members = (0..count)
            .map(|_| {
                self.next_member += 1;
                pb::Member {
                    id: format!("node-{:03}", self.next_member),
                    address: format!("127.0.0.1:{}", 7000 + self.next_member),
                    weight: 1,
                    ..Default::default()
                }
            })
            .collect();
        let version = format!("sync-{}", self.next_member);
        self.store(pb::MembershipSynced {
            members,
            resource_version: version,
            ..Default::default()
        })
        .await;
    }

    /// Churn: joins, and every third step the oldest member leaves.
    async fn churn(&mut self, steps: usize) {
        for i in 0..steps {
            if i % 3 == 2 {
                let oldest = self.ledger.members().next().unwrap().id.clone();
                self.leave(&oldest).await;
            } else {
                self.join().await;
            }
        }
    }

    /// Writes the ring now as the newest snapshot, as the reducer does.
    async fn snapshot(&self) {
        let snapshot = self.ledger.snapshot().unwrap();
        let kv = async_nats::jetstream::new(self.server.connect_provisioned().await.unwrap())
            .get_key_value(subject::KV_SNAPSHOTS)
            .await
            .unwrap();
        kv.put(
            subject::latest_snapshot_key(&ring()),
            snapshot.encode_to_vec().into(),
        )
        .await
        .unwrap();
    }

    /// A bridge on a free port, with `extra` settings.
    async fn bridge(&self, extra: &[(&str, &str)]) -> Bridge {
        let mut map = ringside_testkit::settings(&[
            ("RINGSIDE_RING", "orders"),
            ("RINGSIDE_BRIDGE_ADDR", "127.0.0.1:0"),
        ]);
        map.insert("RINGSIDE_NATS_URL".into(), self.server.url());
        map.insert(
            "RINGSIDE_NATS_PASSWORD_BRIDGE".into(),
            self.server.password("bridge").unwrap().to_owned(),
        );
        map.extend(ringside_testkit::settings(extra));
        let service = BridgeService::bind(BridgeConfig::from_map(&map).unwrap())
            .await
            .unwrap();
        let addr = service.addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.run(async {
            let _ = stopped.await;
        }));
        let bridge = Bridge {
            addr,
            stop: Some(stop),
            task,
        };
        bridge.ready().await;
        bridge
    }
}

struct Bridge {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ringside_kit::ServiceError>>,
}

impl Bridge {
    async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + WITHIN;
        while ringside_testkit::http::get(self.addr, "/readyz")
            .await
            .map(|r| r.0)
            != Some(200)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bridge is not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        ringside_testkit::http::get(self.addr, path).await.unwrap()
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// A sample of its `/metrics` page.
    async fn metric(&self, name_and_labels: &str) -> f64 {
        let page = self.get("/metrics").await.1;
        ringside_kit::telemetry::sample(&page, name_and_labels).unwrap_or(0.0)
    }

    async fn connect(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .unwrap();
        ws
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WITHIN, &mut self.task)
            .await
            .expect("the bridge did not stop")
            .unwrap()
            .unwrap();
    }
}

/// The next JSON frame (pongs and pings of the transport skipped).
async fn frame(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(WITHIN, ws.next())
            .await
            .expect("no frame in time")
            .expect("the connection ended")
            .expect("a broken frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn epoch_of(v: &Value) -> Option<u64> {
    let r = v.get("event")?.get("ringRebalanced")?;
    r.get("epoch").and_then(Value::as_str)?.parse().ok()
}

fn snapshot_epoch(v: &Value) -> u64 {
    v["snapshot"]["epoch"]
        .as_str()
        .map_or(0, |e| e.parse().unwrap())
}

/// Reads `ws` until the ring is at `last`: the epochs that came, in order, and the
/// sequences of every event frame.
async fn read_until(ws: &mut Ws, mut epoch: u64, last: u64) -> (Vec<u64>, Vec<u64>, usize) {
    let (mut epochs, mut seqs, mut resyncs) = (Vec::new(), Vec::new(), 0);
    while epoch < last {
        let f = frame(ws).await;
        match f["type"].as_str() {
            Some("event") => {
                seqs.push(f["seq"].as_u64().unwrap());
                if let Some(e) = epoch_of(&f) {
                    epochs.push(e);
                    epoch = e;
                }
            }
            Some("resync") => resyncs += 1,
            Some("snapshot") => epoch = snapshot_epoch(&f),
            _ => {}
        }
    }
    (epochs, seqs, resyncs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_clients_see_every_epoch_once_through_a_burst() {
    let mut history = History::start().await;
    history.churn(6).await;
    history.snapshot().await;
    history.churn(3).await;
    let before = history.ledger.epoch();
    let bridge = history.bridge(&[]).await;
    let mut clients = Vec::new();
    for _ in 0..200 {
        let mut ws = bridge.connect().await;
        let hello = frame(&mut ws).await;
        assert_eq!(
            (hello["type"].as_str(), hello["ring"].as_str()),
            (Some("hello"), Some("orders"))
        );
        assert_eq!(hello["replicas"], 2);
        let snapshot = frame(&mut ws).await;
        assert_eq!(snapshot["type"], "snapshot");
        // Started from the stored snapshot, then the epochs after it.
        assert_eq!(snapshot_epoch(&snapshot), before, "{snapshot}");
        let seq = snapshot["seq"].as_u64().unwrap();
        assert_eq!(seq, history.epochs[&before]);
        clients.push((ws, seq));
    }
    history.churn(30).await;
    let last = history.ledger.epoch();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(mut ws, seq)| {
            tokio::spawn(async move {
                let seen = read_until(&mut ws, before, last).await;
                (seen, seq)
            })
        })
        .collect();
    for reader in readers {
        let ((epochs, seqs, resyncs), snapshot_seq) = reader.await.unwrap();
        assert_eq!(resyncs, 0);
        assert_eq!(
            epochs,
            ((before + 1)..=last).collect::<Vec<_>>(),
            "every epoch, once, in order"
        );
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in stream order");
        assert!(seqs[0] > snapshot_seq, "nothing at or before the snapshot");
    }
    // The ring the bridge shows is the reducer's fold.
    let (_, status) = bridge.json("/api/status").await;
    assert_eq!(status["epoch"], last.to_string());
    let mut ws = bridge.connect().await;
    frame(&mut ws).await;
    let snapshot = frame(&mut ws).await;
    assert_eq!(
        snapshot["snapshot"]["checksum"],
        history.ledger.checksum().to_string()
    );
    // The 200 readers have gone (dropped without a close handshake): only this one
    // stays counted, once the bridge has noticed.
    let deadline = tokio::time::Instant::now() + WITHIN;
    while bridge.metric("ringside_bridge_clients").await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clients still counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_gets_a_resync_and_the_others_do_not_wait() {
    let mut history = History::start().await;
    history.churn(3).await;
    let bridge = history
        .bridge(&[
            ("RINGSIDE_BRIDGE_QUEUE", "16"),
            ("RINGSIDE_BRIDGE_SEND_TIMEOUT", "60s"),
        ])
        .await;
    // The stalled client: a tiny receive buffer, so the bridge's writes block soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(bridge.addr).await.unwrap();
    let request = format!("ws://{}/ws", bridge.addr)
        .into_client_request()
        .unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let mut reader = bridge.connect().await;
    frame(&mut reader).await;
    let start = snapshot_epoch(&frame(&mut reader).await);
    // Megabytes of epochs: more than the sockets' buffers hold.
    for _ in 0..60 {
        history.replace_all(40).await;
    }
    let last = history.ledger.epoch();
    let (epochs, _, resyncs) = tokio::time::timeout(WITHIN, read_until(&mut reader, start, last))
        .await
        .expect("the reader waited for the stalled client");
    assert_eq!(resyncs, 0);
    assert_eq!(epochs.len() as u64, last - start);
    // Now the stalled client reads: it was told it fell behind, and got a fresh ring.
    let (_, _, resyncs) = read_until(&mut stalled, 0, last).await;
    assert!(resyncs >= 1, "no resync");
    assert!(
        bridge
            .metric("ringside_bridge_client_resyncs_total{reason=\"behind\"}")
            .await
            >= 1.0
    );
    bridge.stop().await;
}

#[tokio::test]
async fn bad_origins_bad_frames_and_oversized_frames_are_refused_and_counted() {
    let mut history = History::start().await;
    history.churn(2).await;
    let bridge = history.bridge(&[]).await;
    let url = format!("ws://{}/ws", bridge.addr);
    let with_origin = |origin: &str| {
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    match tokio_tungstenite::connect_async(with_origin("http://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("a foreign origin got in: {:?}", other.map(|_| ())),
    }
    let (mut ws, _) =
        tokio_tungstenite::connect_async(with_origin(&format!("http://{}", bridge.addr)))
            .await
            .expect("the page's own origin is let in");
    frame(&mut ws).await;
    frame(&mut ws).await;
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(frame(&mut ws).await["type"], "pong");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(frame(&mut ws).await["type"], "error");
    ws.send(Message::text("x".repeat(8 * 1024))).await.unwrap();
    let closed = tokio::time::timeout(WITHIN, async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(frame) = m {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(1009), "closed for the oversized frame");
    assert_eq!(
        bridge
            .metric("ringside_bridge_clients_refused_total{reason=\"origin\"}")
            .await,
        1.0
    );
    assert_eq!(
        bridge
            .metric("ringside_bridge_frames_refused_total{reason=\"bad\"}")
            .await,
        1.0
    );
    assert_eq!(
        bridge
            .metric("ringside_bridge_frames_refused_total{reason=\"oversized\"}")
            .await,
        1.0
    );
    bridge.stop().await;
}

#[tokio::test]
async fn the_api_answers_time_travel_and_the_key_probe() {
    let mut history = History::start().await;
    history.churn(8).await;
    let bridge = history.bridge(&[]).await;
    // The ring at each epoch's sequence is the fold's at that epoch.
    let (&epoch, &seq) = history.epochs.iter().nth(3).unwrap();
    let (status, at) = bridge.json(&format!("/api/ring?seq={seq}")).await;
    assert_eq!(status, 200, "{at}");
    assert_eq!(at["seq"], seq);
    assert_eq!(at["snapshot"]["epoch"], epoch.to_string());
    let (status, err) = bridge.json("/api/ring?seq=abc").await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = bridge.json("/api/ring").await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("give seq or time"))
    );
    // Events in pages.
    let (status, page) = bridge.json("/api/events?from=1&limit=3").await;
    assert_eq!(status, 200);
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(page["next"], 4);
    let (_, rest) = bridge.json("/api/events?from=4").await;
    assert_eq!(rest["next"], Value::Null);
    assert_eq!(
        rest["events"].as_array().unwrap().len() as u64,
        history.epochs.values().last().unwrap() - 3
    );
    // The probe names the owner and replicas of the fold, and the key's moves end at
    // its owner.
    let (status, probe) = bridge.json("/api/key?key=user:42").await;
    assert_eq!(status, 200, "{probe}");
    let ring_now = history.ledger.ring();
    assert_eq!(probe["owner"], ring_now.owner(b"user:42").unwrap());
    let replicas: Vec<&str> = ring_now.successors(b"user:42", 2).unwrap();
    assert_eq!(probe["replicas"], serde_json::json!(replicas));
    assert_eq!(
        probe["position"],
        ringside_ring::hash_key(b"user:42").to_string()
    );
    let moves = probe["history"].as_array().unwrap();
    assert!(!moves.is_empty());
    assert_eq!(moves.last().unwrap()["owner"], probe["owner"]);
    let (status, _) = bridge.json("/api/key?key=").await;
    assert_eq!(status, 400);
    assert_eq!(
        bridge
            .metric("ringside_bridge_api_requests_total{endpoint=\"key\",outcome=\"error\"}")
            .await,
        1.0
    );
    bridge.stop().await;
}
