//! Shared helpers of the reducer tests (also included by the binary's `reducer_*`
//! tests): a provisioned nats-server with `nats/local.conf`, a scripted membership
//! churn, the offline fold of what the stream holds, the stored rebalance events, and
//! small HTTP and gRPC clients.

// Helpers of tests: a failed unwrap is a failed test, which is what we want here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringside_events::{
    Body, Event, Outcome, Publisher, RingLedger, RingName, ServiceUser, codec, pb, subject,
};
use ringside_testkit::NatsServer;

/// The ring every test uses.
pub(crate) fn ring() -> RingName {
    RingName::new("orders").unwrap()
}

/// Virtual nodes of the test rings: small, so debug builds fold quickly.
pub(crate) const VNODES: u32 = 32;

/// A server with `nats/local.conf` and the builtin streams and buckets.
pub(crate) struct Bus {
    /// The server.
    pub(crate) server: NatsServer,
    /// An admin client (provisioning, test traffic).
    pub(crate) admin: async_nats::Client,
    /// Publisher on the admin client.
    pub(crate) publisher: Publisher,
    /// A client of the reducer user, the only one allowed to store rebalance events
    /// (forged or junk ones, in tests).
    pub(crate) reducer: async_nats::Client,
}

impl Bus {
    /// Starts and provisions a server.
    pub(crate) async fn start() -> Bus {
        let server = NatsServer::start_local_conf().await.unwrap();
        let admin = server.connect_provisioned().await.unwrap();
        let publisher = Publisher::new(admin.clone());
        let reducer = server.connect_as(ServiceUser::Reducer).await.unwrap();
        Bus {
            server,
            admin,
            publisher,
            reducer,
        }
    }

    /// The reducer's settings for this server (reducer user), as a config map;
    /// listeners on 127.0.0.1:0.
    pub(crate) fn reducer_map(&self, instance: &str) -> BTreeMap<String, String> {
        [
            ("RINGSIDE_RING", ring().to_string()),
            ("RINGSIDE_NATS_URL", self.server.url()),
            (
                "RINGSIDE_NATS_PASSWORD_REDUCER",
                self.server.password("reducer").unwrap().to_string(),
            ),
            ("RINGSIDE_REDUCER_INSTANCE", instance.to_string()),
            ("RINGSIDE_REDUCER_GRPC_ADDR", "127.0.0.1:0".to_string()),
            ("RINGSIDE_REDUCER_METRICS_ADDR", "127.0.0.1:0".to_string()),
            ("RINGSIDE_REDUCER_VNODES", VNODES.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// [`Bus::reducer_map`] with `settings` laid over it.
    pub(crate) fn reducer_map_with(
        &self,
        instance: &str,
        settings: &[(&str, &str)],
    ) -> BTreeMap<String, String> {
        let mut map = self.reducer_map(instance);
        map.extend(ringside_testkit::settings(settings));
        map
    }

    /// The `RINGSIDE` stream.
    pub(crate) async fn stream(&self) -> jetstream::stream::Stream {
        jetstream::new(self.admin.clone())
            .get_stream(subject::STREAM_EVENTS)
            .await
            .unwrap()
    }

    /// Publishes membership events in order (atomic batches).
    pub(crate) async fn publish(&self, events: &[Event]) {
        self.publisher.publish_batch(events).await.unwrap();
    }

    /// Stores raw bytes on the membership subject (malformed messages).
    pub(crate) async fn publish_raw(&self, payload: &'static [u8]) -> u64 {
        jetstream::new(self.admin.clone())
            .publish(subject::membership(&ring()), payload.into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    /// Every message stored on `subject` (of stream `RINGSIDE`), in order:
    /// (sequence, payload).
    pub(crate) async fn read_subject(&self, subject: String) -> Vec<(u64, bytes::Bytes)> {
        self.read_stream(subject::STREAM_EVENTS, subject).await
    }

    /// Every message stored on `subject` of `stream`, in order: (sequence, payload).
    pub(crate) async fn read_stream(
        &self,
        stream: &str,
        subject: String,
    ) -> Vec<(u64, bytes::Bytes)> {
        let stream = jetstream::new(self.admin.clone())
            .get_stream(stream)
            .await
            .unwrap();
        let last = stream.get_info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        if last == 0 {
            return out;
        }
        let mut messages = ordered(&stream, subject, consumer::DeliverPolicy::All).await;
        loop {
            let more = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
            let Ok(Some(m)) = more else { break };
            let m = m.unwrap();
            let info = m.info().unwrap();
            let (sequence, pending) = (info.stream_sequence, info.pending);
            out.push((sequence, m.payload.clone()));
            if pending == 0 {
                break;
            }
        }
        out
    }

    /// Stores raw bytes on the rebalance subject, as the reducer user (a buggy or
    /// hostile writer), without a message id.
    pub(crate) async fn publish_raw_rebalance(&self, payload: bytes::Bytes) -> u64 {
        jetstream::new(self.reducer.clone())
            .publish(subject::rebalance(&ring()), payload)
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    /// Every stored rebalance event of the test ring: (sequence, event).
    pub(crate) async fn rebalances(&self) -> Vec<(u64, pb::RingRebalanced)> {
        self.rebalances_but(&[]).await
    }

    /// Every stored rebalance event of the test ring but those at `junk` sequences.
    pub(crate) async fn rebalances_but(&self, junk: &[u64]) -> Vec<(u64, pb::RingRebalanced)> {
        self.read_subject(subject::rebalance(&ring()))
            .await
            .into_iter()
            .filter(|(seq, _)| !junk.contains(seq))
            .map(
                |(seq, payload)| match codec::decode(&payload).unwrap().into_body() {
                    Body::RingRebalanced(r) => (seq, r),
                    other => panic!("not a rebalance event at {seq}: {other:?}"),
                },
            )
            .collect()
    }

    /// The offline fold of every membership message in the stream.
    pub(crate) async fn offline_fold(&self) -> Folded {
        let config =
            ringside_ring::RingConfig::new(ringside_ring::Strategy::Balanced, VNODES).unwrap();
        let mut ledger = RingLedger::new(ring(), config);
        let mut epochs = Vec::new();
        for (seq, payload) in self.read_subject(subject::membership(&ring())).await {
            // Undecodable messages, and events that do not belong on the subject, are
            // skipped by every reader alike.
            let Ok(event) = codec::decode_on(&subject::membership(&ring()), &payload) else {
                continue;
            };
            if let Outcome::Rebalanced(r) = ledger.apply(seq, event.body()) {
                epochs.push(*r);
            }
        }
        Folded { ledger, epochs }
    }

    /// Stores a forged epoch 1 (the offline fold's true one with a flipped checksum): a
    /// reducer that catches up must refuse to build on it.
    pub(crate) async fn publish_forged_first_epoch(&self) {
        let mut forged = self.offline_fold().await.epochs[0].clone();
        forged.checksum ^= 1;
        Publisher::new(self.reducer.clone())
            .publish(&Event::new(ring(), forged).unwrap())
            .await
            .unwrap();
    }

    /// Waits until the stored epochs reach `epoch`.
    pub(crate) async fn wait_for_epoch(
        &self,
        epoch: u64,
        within: Duration,
    ) -> Vec<(u64, pb::RingRebalanced)> {
        let deadline = Instant::now() + within;
        loop {
            let stored = self.rebalances().await;
            if stored.last().map_or(0, |(_, r)| r.epoch) >= epoch {
                return stored;
            }
            assert!(
                Instant::now() < deadline,
                "epoch {epoch} not stored within {within:?} (have {})",
                stored.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The result of the offline fold.
pub(crate) struct Folded {
    /// The ledger after every event.
    pub(crate) ledger: RingLedger,
    /// Every epoch's event, in order.
    pub(crate) epochs: Vec<pb::RingRebalanced>,
}

/// The messages of `subject` in `stream` from `deliver`, through an ordered consumer.
pub(crate) async fn ordered(
    stream: &jetstream::stream::Stream,
    subject: String,
    deliver: consumer::DeliverPolicy,
) -> consumer::pull::Ordered {
    stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .unwrap()
        .messages()
        .await
        .unwrap()
}

/// Checks the stored history: epochs 1..N without gap or duplicate, each equal to the
/// offline fold's event for that epoch.
pub(crate) fn assert_history(stored: &[(u64, pb::RingRebalanced)], folded: &Folded) {
    let epochs: Vec<u64> = stored.iter().map(|(_, r)| r.epoch).collect();
    let expected: Vec<u64> = (1..=folded.epochs.len() as u64).collect();
    assert_eq!(epochs, expected, "stored epochs are not 1..N");
    for ((seq, stored), ours) in stored.iter().zip(&folded.epochs) {
        assert_eq!(
            stored, ours,
            "stored epoch {} (sequence {seq}) differs from the offline fold",
            ours.epoch
        );
    }
}

/// Checks that the reducer at `metrics` started right after a snapshot of everything in
/// `folded`: its first sequence follows the last folded one, its first epoch is the last
/// folded epoch.
pub(crate) async fn assert_resumed_after(metrics: SocketAddr, folded: &Folded) {
    assert_eq!(
        metric(metrics, ringside_reducer::metrics::START_SEQUENCE.name).await,
        (folded.ledger.membership_sequence() + 1) as f64
    );
    assert_eq!(
        metric(metrics, ringside_reducer::metrics::START_EPOCH.name).await,
        folded.epochs.len() as f64
    );
}

fn member(i: usize, weight: u32, incarnation: usize) -> pb::Member {
    pb::Member {
        id: format!("node-{i:02}"),
        address: format!("10.0.{}.{}:7000", i / 200, i % 200 + 1),
        weight,
        uid: Some(format!("uid-{i}-{incarnation}")),
        ..Default::default()
    }
}

/// A scripted churn of `n` membership events over a pool of `pool` member ids: joins
/// (some re-weights and restarts), leaves (some of stale incarnations, some of absent
/// members), and full syncs (15 %). Deterministic for a seed; every event is a
/// distinct fact (distinct message id), so all of them are stored.
pub(crate) fn churn(seed: u64, n: usize, pool: usize) -> Vec<Event> {
    churn_with(seed, n, pool, 15)
}

/// [`churn`] with `sync_percent` % of full syncs (the rest: 9 joins for 8 leaves).
pub(crate) fn churn_with(seed: u64, n: usize, pool: usize, sync_percent: u32) -> Vec<Event> {
    let joins = (100 - sync_percent.min(100)) * 9 / 17;
    let mut rng = StdRng::seed_from_u64(seed);
    // What the script believes is present: id -> (weight, incarnation).
    let mut present: BTreeMap<usize, (u32, usize)> = BTreeMap::new();
    let mut out = Vec::with_capacity(n);
    for step in 0..n {
        let roll = rng.random_range(0..100);
        let body: Body = if roll < joins || present.len() < 2 {
            let count = rng.random_range(1..=3);
            let members = (0..count)
                .map(|_| rng.random_range(0..pool))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|i| {
                    let weight = rng.random_range(1..=3);
                    // A restart (new incarnation) now and then, else the known one.
                    let incarnation = match present.get(&i) {
                        Some((_, inc)) if rng.random_range(0..4) > 0 => *inc,
                        _ => step,
                    };
                    present.insert(i, (weight, incarnation));
                    member(i, weight, incarnation)
                })
                .collect();
            Body::MembersJoined(pb::MembersJoined {
                members,
                source: pb::MembershipSource::Manual as i32,
                // The same join can repeat word for word; its step keeps it a new fact.
                source_version: step.to_string(),
            })
        } else if roll < 100 - sync_percent {
            let i = rng.random_range(0..pool);
            let uid = match present.remove(&i) {
                // A late leave of an earlier incarnation now and then: ignored by the fold.
                Some((w, inc)) if rng.random_range(0..5) == 0 => {
                    present.insert(i, (w, inc));
                    Some(format!("uid-{i}-stale"))
                }
                Some((_, inc)) => Some(format!("uid-{i}-{inc}")),
                None => None,
            };
            Body::MemberLeft(pb::MemberLeft {
                member_id: member(i, 1, 0).id,
                uid,
                reason: pb::LeaveReason::Manual as i32,
                source: pb::MembershipSource::Manual as i32,
                detail: format!("churn step {step}"),
                ..Default::default()
            })
        } else {
            // The truth: a random subset of the pool.
            present = (0..pool)
                .filter_map(|i| {
                    let keep = rng.random_range(0..3) > 0;
                    keep.then(|| (i, (rng.random_range(1..=2), step)))
                })
                .collect();
            Body::MembershipSynced(pb::MembershipSynced {
                members: present
                    .iter()
                    .map(|(i, (w, inc))| member(*i, *w, *inc))
                    .collect(),
                source: pb::MembershipSource::Manual as i32,
                resource_version: step.to_string(),
            })
        };
        out.push(Event::new(ring(), body).unwrap());
    }
    out
}

/// `GET http://addr/path` over a plain TCP connection: (status, body).
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    ringside_testkit::http::get(addr, path)
        .await
        .unwrap_or_else(|| panic!("no HTTP answer from {addr}{path}"))
}

/// The `/metrics` page.
pub(crate) async fn metrics(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").await.1
}

/// One sample of `/metrics` (0 when absent).
pub(crate) async fn metric(addr: SocketAddr, name_and_labels: &str) -> f64 {
    ringside_reducer::metrics::sample(&metrics(addr).await, name_and_labels).unwrap_or(0.0)
}

/// Waits until `/readyz` answers `status`.
pub(crate) async fn wait_readyz(addr: SocketAddr, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = http_get(addr, "/readyz").await.0;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz of {addr} still {got}, not {status}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `/readyz` says ready.
pub(crate) async fn wait_ready(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(conn) = tokio::net::TcpStream::connect(addr).await {
            drop(conn);
            if http_get(addr, "/readyz").await.0 == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "reducer at {addr} not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the reducer at `metrics_addr` has folded up to membership sequence `seq`.
pub(crate) async fn wait_folded(metrics_addr: SocketAddr, seq: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let at = metric(
            metrics_addr,
            ringside_reducer::metrics::MEMBERSHIP_SEQUENCE.name,
        )
        .await;
        if at >= seq as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reducer did not fold to sequence {seq} within {within:?} (at {at})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The ring the reducer at `addr` serves (`GetRing`).
pub(crate) async fn get_ring(addr: SocketAddr) -> pb::RingSnapshot {
    ring_client(addr)
        .await
        .get_ring(pb::GetRingRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
}

/// A gRPC client of the reducer at `addr`.
pub(crate) async fn ring_client(
    addr: SocketAddr,
) -> pb::ring_service_client::RingServiceClient<tonic::transport::Channel> {
    pb::ring_service_client::RingServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// A reducer running in this process.
pub(crate) struct Running {
    /// Bound gRPC address.
    pub(crate) grpc: SocketAddr,
    /// Bound metrics address.
    pub(crate) metrics: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ringside_reducer::ReducerError>>,
}

impl Running {
    /// Binds and starts a reducer with the config map.
    pub(crate) async fn start(map: &BTreeMap<String, String>) -> Running {
        init_logs();
        let config = ringside_reducer::ReducerConfig::from_map(map).unwrap();
        let reducer = ringside_reducer::Reducer::bind(config).await.unwrap();
        let (grpc, metrics) = (reducer.grpc_addr(), reducer.metrics_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reducer.run(async {
            let _ = stopped.await;
        }));
        Running {
            grpc,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// Starts a reducer and waits until it serves.
    pub(crate) async fn ready(map: &BTreeMap<String, String>) -> Running {
        let running = Running::start(map).await;
        wait_ready(running.metrics, Duration::from_secs(120)).await;
        running
    }

    /// Asks it to stop and waits for its result.
    pub(crate) async fn stop(mut self) -> Result<(), ringside_reducer::ReducerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("reducer did not stop within 30 s")
            .unwrap()
    }

    /// Whether it has ended by itself.
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for it to end by itself (a fatal error).
    pub(crate) async fn ended(mut self) -> Result<(), ringside_reducer::ReducerError> {
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("reducer did not end within 30 s")
            .unwrap()
    }

    /// Starts a reducer that must refuse to go on: the error it stops with.
    pub(crate) async fn refused(map: &BTreeMap<String, String>) -> ringside_reducer::ReducerError {
        Running::start(map)
            .await
            .ended()
            .await
            .expect_err("the reducer should have stopped with an error")
    }
}

/// Logs to the test's output (shown for failing tests); `RUST_LOG` filters.
pub(crate) fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
}
