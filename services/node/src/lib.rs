//! ringside-node: a ring member. It handles keyed requests (`/v1/keys/{key}`),
//! forwards a request for a key it does not own straight to the owner's address, keeps
//! each key on its owner and R-1 successors, hands keys over when a rebalance moves
//! them, beats for the heartbeat watcher and reports its load (unique client IPs,
//! requests, CPU, keys and bytes held) every few seconds. docs/node.md is the guide.
//!
//! # Layout
//! - [`config`]: [`NodeConfig`], its settings.
//! - [`api`]: the HTTP routes (keys, owner, the other nodes' internal routes).
//! - [`node`]: [`Node`], the state the routes share: store, ring, peers, counters.
//! - [`store`]: the keys, with versions (hybrid logical clock) and tombstones.
//! - [`wire`]: the batch format nodes send entries in.
//! - [`peer`]: HTTP to the other nodes (forward, copy, fetch).
//! - [`handoff`]: what moves where when the ring changes.
//! - [`clients`]: distinct client IPs over the last minute.
//! - [`cpu`]: the process's CPU use.
//! - [`metrics`]: the metrics, each described once.
//! - `server`: the accept loop (header timeout, peer addresses).
//!
//! # How it fits
//! Its only view of the ring is the client library (`ringside-client`): a snapshot
//! and every later rebalance event. Its membership goes through its heartbeats (local
//! mode) or its pod's readiness (Kubernetes). It publishes load reports and
//! `KeysHandedOff` events; the collector and the dashboard read them.

pub mod api;
pub mod clients;
pub mod config;
pub mod cpu;
pub mod handoff;
pub mod metrics;
pub mod node;
pub mod peer;
mod server;
pub mod store;
pub mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use ringside_client::{Change, ClientConfig, KeyRange, RingView, Subscription};
use ringside_events::{Event, Publisher, ServiceUser, pb};
use ringside_kit::service::Started;
use ringside_kit::{Condition, Schema, ServiceError};
use ringside_watcher::heartbeat::{Beacon, new_incarnation};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::NodeConfig;
pub use node::Node;

use crate::cpu::CpuMeter;
use crate::metrics::Metrics;

/// The service's name.
pub const NAME: &str = "node";
/// How long a leaving node waits for the ring to let it go before it stops anyway.
const LEAVE_WITHIN: Duration = Duration::from_secs(30);
/// Epochs a node may fold into one reconcile while more keep coming.
const MAX_COALESCED: usize = 16;

/// A node with its listener bound, not yet running.
#[derive(Debug)]
pub struct NodeService {
    config: NodeConfig,
    listener: TcpListener,
    addr: SocketAddr,
}

impl NodeService {
    /// The address announced in the ring.
    pub fn advertised(&self) -> SocketAddr {
        self.config.advertise.unwrap_or(self.addr)
    }
}

impl ringside_kit::Service for NodeService {
    const NAME: &'static str = NAME;
    const SCHEMA: &'static Schema = &config::SCHEMA;
    type Config = NodeConfig;
    type Error = ServiceError;

    fn config(map: &BTreeMap<String, String>) -> Result<NodeConfig, ringside_kit::ConfigError> {
        NodeConfig::from_map(map)
    }

    async fn bind(config: NodeConfig) -> Result<Self, ServiceError> {
        let (listener, addr) = ringside_kit::error::bind("api", config.addr).await?;
        Ok(Self {
            config,
            listener,
            addr,
        })
    }

    fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        // One listener serves the key API and the probes.
        vec![("api", self.addr), ("metrics", self.addr)]
    }

    async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServiceError> {
        run(self, shutdown).await
    }
}

/// Runs the node until `shutdown`, then leaves the ring gracefully: a goodbye, the
/// keys handed over once the ring has let it go (bounded), then the server stops.
async fn run(
    service: NodeService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServiceError> {
    let config = service.config.clone();
    let advertised = service.advertised();
    let Started {
        telemetry,
        readiness,
        nats,
    } = ringside_kit::service::start(
        NAME,
        ServiceUser::Node,
        config.nats_password.clone(),
        &config.nats_url,
    )
    .await?;
    let synced = readiness.condition("ring");
    let member = readiness.condition("member");
    let recovered = readiness.condition("keys");
    let (follower, ring) = ringside_client::follow(
        nats.clone(),
        ClientConfig::new(config.ring.clone()).label(format!("node {}", config.id)),
    );
    let node = Arc::new(Node::new(
        config.id.as_str(),
        config.replicas,
        config.request_timeout,
        ring.clone(),
        Metrics::new(&telemetry),
    ));
    let (stop, stopped) = watch::channel(false);
    let stopping = |rx: watch::Receiver<bool>| async move {
        let mut rx = rx;
        let _ = rx.wait_for(|s| *s).await;
    };
    let follower = tokio::spawn(follower.run(stopping(stopped.clone())));
    let router = api::router(
        Arc::clone(&node),
        ringside_kit::http::router(&readiness, &telemetry),
    );
    let server = tokio::spawn(server::serve(
        service.listener,
        router,
        config.request_timeout,
        stopped.clone(),
    ));
    let publisher = Publisher::new(nats.clone());
    let (left_tx, mut left) = watch::channel(false);
    let keeper = tokio::spawn(keep(
        Arc::clone(&node),
        ring.subscribe(Some(config.id.as_str())),
        publisher.clone(),
        config.ring.clone(),
        Conditions {
            synced,
            member,
            recovered,
            left: left_tx,
        },
        stopping(stopped.clone()),
    ));
    let reporter = tokio::spawn(report(
        Arc::clone(&node),
        publisher,
        config.clone(),
        stopping(stopped.clone()),
    ));
    let (goodbye, beat_stopped) = watch::channel(false);
    let beacon = Beacon::new(nats.clone(), config.ring.clone());
    let me = pb::Member {
        id: config.id.to_string(),
        address: advertised.to_string(),
        weight: config.weight,
        uid: Some(new_incarnation()),
        labels: BTreeMap::from([("role".to_owned(), "node".to_owned())]),
        ..Default::default()
    };
    let interval = config.heartbeat;
    let beats = tokio::spawn(async move {
        if let Err(e) = beacon.run(me, interval, stopping(beat_stopped)).await {
            tracing::warn!(error = %e, "The heartbeat beacon failed.");
        }
    });
    tracing::info!(node = %config.id, addr = %advertised, ring = %config.ring, replicas = config.replicas, "Node running.");
    shutdown.await;
    tracing::info!("Leaving the ring: saying goodbye, then handing the keys over.");
    let _ = goodbye.send(true);
    let _ = beats.await;
    // The keeper reconciles the epoch without this node and then says it has left.
    if tokio::time::timeout(LEAVE_WITHIN, left.wait_for(|gone| *gone))
        .await
        .is_err()
    {
        tracing::warn!(within = ?LEAVE_WITHIN, "The ring did not let this node go in time; stopping with its keys.");
    }
    let _ = stop.send(true);
    for task in [keeper, reporter] {
        let _ = task.await;
    }
    let _ = server.await;
    let _ = follower.await;
    nats.flush().await.ok();
    Ok(())
}

/// What the keeper reports.
struct Conditions {
    synced: Condition,
    member: Condition,
    /// Its keys are here (see `handoff::recover`).
    recovered: Condition,
    left: watch::Sender<bool>,
}

/// Follows the ring's changes and keeps the keys where the ring says (the handoff);
/// reports readiness (`ring`: synced; `member`: in the ring) and when the node has left.
async fn keep(
    node: Arc<Node>,
    mut changes: Subscription,
    publisher: Publisher,
    ring_name: ringside_events::RingName,
    conditions: Conditions,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut reconciled: Option<Arc<RingView>> = None;
    // Ranges this node lost to each member since the last reconcile.
    let mut lost: BTreeMap<String, Vec<KeyRange>> = BTreeMap::new();
    let mut coalesced = 0;
    let mut was_member = false;
    loop {
        let change = tokio::select! {
            () = &mut stop => return,
            change = changes.next() => match change {
                Some(change) => change,
                None => return,
            },
        };
        let Some(current) = node.ring.ring() else {
            continue;
        };
        node.remember(&current);
        node.metrics
            .gauges
            .epoch
            .store(current.epoch(), Ordering::Relaxed);
        conditions.synced.set(true);
        if !node.is_recovered() {
            handoff::recover(&node, &current).await;
            conditions.recovered.set(true);
        }
        if let Change::Rebalanced {
            rebalance, gained, ..
        } = &change
        {
            for moved in rebalance.moved() {
                if let (Some(from), Some(to)) = (moved.from, moved.to)
                    && from == node.id
                    && to != node.id
                {
                    lost.entry(to.to_owned()).or_default().push(moved.range);
                }
            }
            if !gained.is_empty()
                && let Some(before) = &reconciled
            {
                node.begin_transition(Arc::clone(before));
            }
            coalesced += 1;
            // More epochs already applied: fold them into one reconcile, bounded.
            if rebalance.epoch() < current.epoch() && coalesced < MAX_COALESCED {
                continue;
            }
        }
        if let Some(before) = &reconciled
            && before.epoch() != current.epoch()
        {
            handoff::reconcile(&node, before, &current, &lost, &publisher, &ring_name).await;
        }
        lost.clear();
        coalesced = 0;
        let is_member = current.member(&node.id).is_some();
        conditions.member.set(is_member);
        if was_member && !is_member {
            conditions.left.send_replace(true);
        }
        was_member |= is_member;
        reconciled = Some(current);
    }
}

/// Every report interval: the load event on `ringside.<ring>.load.<node>` and the
/// gauges of `/metrics`.
async fn report(
    node: Arc<Node>,
    publisher: Publisher,
    config: NodeConfig,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut cpu = CpuMeter::default();
    let mut ticker = tokio::time::interval(config.report);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut window_start = SystemTime::now();
    let mut last = Instant::now();
    let _ = cpu.read(last);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let (clients, sketch) = node.clients();
        let used = cpu.read(now).unwrap_or(0.0);
        let (keys, bytes) = node.store.held();
        let gauges = &node.metrics.gauges;
        gauges.unique_client_ips.store(clients, Ordering::Relaxed);
        gauges
            .cpu_millis
            .store((used * 1000.0).round() as u64, Ordering::Relaxed);
        gauges.keys.store(keys, Ordering::Relaxed);
        gauges.bytes.store(bytes, Ordering::Relaxed);
        let window = now.duration_since(last);
        let body = pb::NodeLoadReported {
            node: config.id.to_string(),
            window_start: Some(ringside_events::event::timestamp(window_start)),
            window: Some(pbjson_types::Duration {
                seconds: i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(window.subsec_nanos()).unwrap_or(0),
            }),
            requests: node.window.requests.swap(0, Ordering::Relaxed),
            forwarded: node.window.forwarded.swap(0, Ordering::Relaxed),
            unique_client_ips_last_minute: clients,
            cpu_ratio: used,
            keys_held: keys,
            epoch: node.epoch().unwrap_or(0),
            bytes_held: bytes,
            pod: if config.namespace.is_some() {
                config.id.to_string()
            } else {
                String::new()
            },
            namespace: config.namespace.clone().unwrap_or_default(),
            client_ip_sketch: sketch.to_bytes(),
        };
        window_start = SystemTime::now();
        last = now;
        let published = match Event::new(config.ring.clone(), body) {
            Ok(event) => publisher
                .publish(&event.with_occurred_at(window_start))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &published {
            tracing::warn!(error = %e, "Could not publish the load report.");
        }
        node.metrics.load_report(published.is_ok());
    }
}
