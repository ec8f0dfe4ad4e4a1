//! ringside-reducer: the one place where membership becomes a ring.
//!
//! The reducer folds the membership subject of one ring (`ringside.<ring>.membership`
//! in stream `RINGSIDE`) with the shared fold ([`ringside_events::RingLedger`]),
//! publishes one `RingRebalanced` per epoch with the single-writer publish (so two
//! reducers may run for availability: exactly one event per epoch is stored, the loser
//! checks and adopts it), writes snapshots to the KV bucket so a restart resumes near
//! the end of the stream, and serves the ring over gRPC (`RingService`, plus the gRPC
//! health protocol) and HTTP (`/metrics`, `/livez`, `/readyz`, from the service kit).
//! docs/reducer.md is the operator's guide.
//!
//! # Layout
//! - [`config`]: [`ReducerConfig`] parsed from a map of strings.
//! - `engine`: start position, catch-up against the stored history, publish and
//!   conflicts, readiness, snapshot scheduling.
//! - [`snapshots`]: [`SnapshotStore`], the KV side of snapshots.
//! - [`state`]: the served [`View`] and the feed of epochs behind `WatchRing`.
//! - [`grpc`]: [`RingApi`], the `RingService` implementation.
//! - [`metrics`]: the metrics (each described once) as OpenTelemetry instruments.
//!
//! # How it fits
//! Membership sources (the watchers) publish membership events; the reducer is their
//! only reader that writes: rebalance events and snapshots. Nodes, the bridge and the
//! tools read those, or ask the reducer over gRPC. [`run`] is the whole service; the
//! binary (`ringside reducer`) turns signals into its shutdown future.

pub mod config;
mod engine;
pub mod grpc;
pub mod metrics;
pub mod snapshots;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use async_nats::jetstream;
use ringside_events::{Consumer, Publisher, ServiceUser, pb, subject};
use ringside_kit::{Condition, Readiness, ServiceError, Telemetry};
use tokio::net::TcpListener;

pub use config::ReducerConfig;
pub use grpc::RingApi;
pub use ringside_kit::ConfigError;
pub use snapshots::{SnapshotError, SnapshotSlot, SnapshotStore};
pub use state::View;

use crate::metrics::Metrics;
use crate::state::Shared;

/// Errors that stop the reducer. Transient NATS trouble after start is not among them:
/// the reducer waits and retries, in order.
#[derive(Debug, thiserror::Error)]
pub enum ReducerError {
    /// Binding, serving, NATS or metrics failed (as for any service).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The `RINGSIDE` stream could not be opened (not provisioned: run `ringside up` or
    /// provision as in docs/nats.md).
    #[error("opening stream {}", subject::STREAM_EVENTS)]
    Stream(#[source] jetstream::context::GetStreamError),
    /// Reading or opening snapshots failed.
    #[error("snapshot store")]
    Snapshots(#[from] SnapshotError),
    /// A snapshot decoded but is not a valid ring (checksum, tokens).
    #[error(
        "snapshot {key} is not a valid ring; delete it (docs/reducer.md) to fold from an older one"
    )]
    BadSnapshot {
        /// The KV key.
        key: String,
        /// Why.
        #[source]
        source: ringside_events::FoldError,
    },
    /// The configured ring configuration differs from the one the ring was built with.
    #[error(
        "the ring was built with {stored}, the configuration says {configured}: a ring's configuration cannot change (use a new ring name)"
    )]
    ConfigMismatch {
        /// The stored configuration and where it was found.
        stored: String,
        /// The configured one.
        configured: String,
    },
    /// The newest snapshot is further along than the stored rebalance events: the
    /// stream lost events, or the snapshot belongs to another stream.
    #[error(
        "the snapshot is at epoch {snapshot_epoch} but the stream's last rebalance event is epoch {stored_epoch}"
    )]
    SnapshotAhead {
        /// The snapshot's epoch.
        snapshot_epoch: u64,
        /// The last stored epoch.
        stored_epoch: u64,
    },
    /// Reading the last stored rebalance event failed.
    #[error("reading the last stored rebalance event")]
    Head(#[source] jetstream::stream::LastRawMessageError),
    /// Creating or deleting a consumer failed.
    #[error("creating the membership consumer")]
    Consumer(#[source] jetstream::stream::ConsumerError),
    /// The message stream of a consumer failed.
    #[error("consuming messages: {0}")]
    Messages(Box<dyn std::error::Error + Send + Sync>),
    /// A stored message of the rebalance subject does not decode as an event of this
    /// ring (skipped, not fatal).
    #[error(
        "the stored message at sequence {sequence} on the rebalance subject is not an event of this ring"
    )]
    StoredUnreadable {
        /// Its stream sequence.
        sequence: u64,
        /// The codec's error.
        #[source]
        source: ringside_events::DecodeError,
    },
    /// A message on the rebalance subject is not a `RingRebalanced`.
    #[error("the message at sequence {sequence} on the rebalance subject is a {kind:?}")]
    StoredNotRebalance {
        /// Its stream sequence.
        sequence: u64,
        /// What it is.
        kind: ringside_events::EventKind,
    },
    /// A stored rebalance event of the ring whose epoch is not the one due next.
    #[error("the rebalance event at sequence {sequence} is epoch {epoch}, but epoch {due} is due")]
    OutOfTurn {
        /// Its stream sequence.
        sequence: u64,
        /// Its epoch.
        epoch: u64,
        /// The epoch due.
        due: u64,
    },
    /// Reading the rebalance subject forward (to skip messages that are not an epoch)
    /// failed.
    #[error("reading the rebalance subject")]
    Scan(#[source] jetstream::stream::LastRawMessageError),
    /// A conflict said another reducer stored an epoch, but it could not be read.
    #[error(
        "no stored rebalance event after sequence {after}, though a conflict said there is one"
    )]
    StoredMissing {
        /// The sequence we expected to be the last.
        after: u64,
    },
    /// The stored history differs from this fold: a determinism bug. Nothing is
    /// written; an operator must act (docs/reducer.md).
    #[error("divergence at epoch {epoch} (stored sequence {stored_sequence}): {detail}")]
    Divergence {
        /// The epoch.
        epoch: u64,
        /// The stored event's sequence (0: none).
        stored_sequence: u64,
        /// What differs.
        detail: String,
    },
    /// Publishing failed for a reason retrying cannot fix (refused, too large).
    #[error("publishing a rebalance event")]
    Publish(#[source] ringside_events::PublishError),
    /// The fold produced an event that breaks the contract (a bug).
    #[error("the fold produced an invalid event")]
    InvalidEvent(#[from] ringside_events::InvalidEvent),
    /// Stopped while an epoch was being stored (internal: not returned by [`run`]).
    #[error("stopped while storing an epoch")]
    Interrupted,
}

pub(crate) use ringside_events::error_chain;

/// A reducer with its listeners bound, not yet running.
#[derive(Debug)]
pub struct Reducer {
    config: Arc<ReducerConfig>,
    grpc: TcpListener,
    http: TcpListener,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
}

impl Reducer {
    /// Binds the gRPC and metrics addresses (port 0 picks a free one).
    pub async fn bind(config: ReducerConfig) -> Result<Self, ReducerError> {
        let (grpc, grpc_addr) = ringside_kit::error::bind("gRPC", config.grpc_addr).await?;
        let (http, metrics_addr) =
            ringside_kit::error::bind("metrics", config.metrics_addr).await?;
        Ok(Self {
            config: Arc::new(config),
            grpc,
            http,
            grpc_addr,
            metrics_addr,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Runs until `shutdown` completes (then finishes the event in hand, writes a
    /// snapshot and returns `Ok`) or a fatal error.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ReducerError> {
        let telemetry = Telemetry::new("reducer").map_err(ServiceError::from)?;
        let readiness = Readiness::new();
        telemetry.export_readiness(&readiness);
        let shared = Arc::new(Shared::new(
            self.config.watch_buffer,
            Metrics::new(&telemetry),
        ));
        let work = std::pin::pin!(self.serve(Arc::clone(&shared), telemetry, readiness));
        let mut work = work;
        let shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            result = &mut work => return result,
            () = shutdown => {
                tracing::info!("Shutdown requested; finishing the event in hand.");
                shared.stop();
            }
        }
        work.await
    }

    async fn serve(
        self,
        shared: Arc<Shared>,
        telemetry: Telemetry,
        readiness: Readiness,
    ) -> Result<(), ReducerError> {
        let caught_up = readiness.condition("caught_up");
        let (health, health_service) = tonic_health::server::health_reporter();
        let health = tokio::spawn(mirror_health(readiness.clone(), health, shared.stopping()));
        let api = RingApi::new(
            Arc::clone(&shared),
            self.config.ring.clone(),
            self.config.max_key_bytes,
        );
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServiceError::serve("gRPC reflection", e))?;
        let grpc = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(reflection)
                .add_service(
                    pb::ring_service_server::RingServiceServer::new(api)
                        .max_decoding_message_size(MAX_REQUEST_BYTES),
                )
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(self.grpc),
                    engine::wait_for(shared.stopping()),
                ),
        );
        let http = tokio::spawn(ringside_kit::http::serve(
            self.http,
            ringside_kit::http::router(&readiness, &telemetry),
            engine::wait_for(shared.stopping()),
        ));
        tracing::info!(grpc = %self.grpc_addr, metrics = %self.metrics_addr, ring = %self.config.ring, instance = %self.config.instance, "Reducer listening.");

        let folded = fold(
            Arc::clone(&self.config),
            Arc::clone(&shared),
            &readiness,
            caught_up,
        )
        .await;
        // Whatever ended the fold, stop serving: a reducer that no longer folds must not
        // answer with a ring that silently stops moving.
        shared.stop();
        let grpc = grpc.await;
        let http = http.await;
        if let Err(e) = health.await {
            tracing::warn!(error = %e, "The health mirror failed.");
        }
        folded?;
        let failed = |what, source: Box<dyn std::error::Error + Send + Sync>| {
            Err(ServiceError::serve(what, source).into())
        };
        match grpc {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return failed("gRPC", Box::new(e)),
            Err(e) => return failed("gRPC", Box::new(e)),
        }
        match http {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => failed("metrics", Box::new(e)),
            Err(e) => failed("metrics", Box::new(e)),
        }
    }
}

impl ringside_kit::Service for Reducer {
    const NAME: &'static str = "reducer";
    const SCHEMA: &'static ringside_kit::Schema = &config::SCHEMA;
    type Config = ReducerConfig;
    type Error = ReducerError;

    fn config(
        map: &std::collections::BTreeMap<String, String>,
    ) -> Result<ReducerConfig, ConfigError> {
        ReducerConfig::from_map(map)
    }

    async fn bind(config: ReducerConfig) -> Result<Self, ReducerError> {
        Reducer::bind(config).await
    }

    fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![("grpc", self.grpc_addr), ("metrics", self.metrics_addr)]
    }

    async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ReducerError> {
        Reducer::run(self, shutdown).await
    }
}

/// Keeps the gRPC health status equal to the readiness (`/readyz`) until the reducer
/// stops, then says `NOT_SERVING`.
async fn mirror_health(
    readiness: Readiness,
    health: tonic_health::server::HealthReporter,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = readiness.changed();
    let stop = engine::wait_for(stopping);
    tokio::pin!(stop);
    loop {
        let status = if *changes.borrow_and_update() {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        set_health(&health, status).await;
        tokio::select! {
            () = &mut stop => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    set_health(&health, tonic_health::ServingStatus::NotServing).await;
}

/// Largest gRPC request the RingService reads (the transport refuses larger ones with
/// `OUT_OF_RANGE`). As large as any NATS message: a key too long for
/// `RINGSIDE_REDUCER_MAX_KEY_BYTES` but under this gets the documented
/// `INVALID_ARGUMENT` from the service, not the transport's refusal at tonic's 4 MiB.
pub const MAX_REQUEST_BYTES: usize = ringside_events::codec::MAX_PAYLOAD_BYTES;

pub(crate) async fn set_health(
    health: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    health
        .set_service_status(
            <pb::ring_service_server::RingServiceServer<RingApi> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health.set_service_status("", status).await;
}

/// Connects, loads the start state and folds until stopped; the snapshot writer
/// finishes before this returns.
async fn fold(
    config: Arc<ReducerConfig>,
    shared: Arc<Shared>,
    readiness: &Readiness,
    caught_up: Condition,
) -> Result<(), ReducerError> {
    // Readiness follows the connection: a reducer that cannot reach NATS cannot store
    // an epoch, so it says so (`/readyz`, gRPC health, `ringside_reducer_ready`).
    let client = ringside_kit::nats::connect(
        ServiceUser::Reducer,
        config.nats_password.clone(),
        &config.nats_url,
        readiness,
    )
    .await
    .map_err(ServiceError::from)?;
    let publisher = Publisher::new(client);
    let stream = publisher
        .jetstream()
        .get_stream(subject::STREAM_EVENTS)
        .await
        .map_err(ReducerError::Stream)?;
    let mut store = SnapshotStore::open(
        publisher.jetstream(),
        config.ring.clone(),
        config.snapshot_keep,
    )
    .await?;
    let loaded = store.load_newest().await?;
    let snapshots = Arc::new(SnapshotSlot::default());
    let writer = tokio::spawn(write_snapshots(
        store,
        Arc::clone(&snapshots),
        Arc::clone(&shared.metrics),
    ));
    let consumer = Consumer::new("reducer", config.ring.clone(), publisher.clone());
    shared.metrics.attach_consumer(consumer.stats());
    let engine = engine::Engine::start(
        config,
        publisher,
        stream,
        loaded,
        Arc::clone(&shared),
        caught_up,
        Arc::clone(&snapshots),
        shared.stopping(),
    )
    .await;
    let result = match engine {
        Ok(engine) => engine.run(consumer).await,
        Err(e) => Err(e),
    };
    // The writer stores what is waiting, then ends.
    snapshots.close();
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "The snapshot writer failed.");
    }
    result
}

/// Writes the snapshots the engine hands over; only the newest pending one matters.
async fn write_snapshots(mut store: SnapshotStore, slot: Arc<SnapshotSlot>, metrics: Arc<Metrics>) {
    while let Some(view) = slot.take().await {
        let (epoch, membership_sequence) = (view.epoch, view.membership_sequence);
        let snapshot = view.snapshot_to_store_blocking().await;
        // The view is not needed for the round trips (it may be an old one nobody serves).
        drop(view);
        let written = match snapshot {
            Ok(snapshot) => store.write(snapshot).await,
            Err(e) => Err(SnapshotError::Describe(e)),
        };
        match written {
            Ok(()) => {
                metrics.snapshot_written(std::time::SystemTime::now());
                tracing::info!(epoch, membership_sequence, "Snapshot written.");
            }
            Err(e) => {
                metrics.snapshot_failed();
                tracing::warn!(epoch, error = %error_chain(&e), "Writing a snapshot failed; the next one will try again.");
            }
        }
    }
}

/// Runs the reducer: binds its addresses, then [`Reducer::run`].
pub async fn run(
    config: ReducerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ReducerError> {
    Reducer::bind(config).await?.run(shutdown).await
}
