//! ringside-bridge: the ring, its events and its load to browsers over WebSocket, the
//! dashboard's files, and time travel through the replay library. docs/bridge.md is
//! the guide.
//!
//! # Layout
//! - `config`: [`BridgeConfig`], its settings.
//! - `hub`: the ring at the bridge's stream position and the fan-out of every later
//!   event; the consumers that feed it (stored events, loads, traffic).
//! - `ws`: one WebSocket client (Origin, limits, queue, resync).
//! - `api`: `/api/ring`, `/api/events`, `/api/key`, `/api/status`.
//! - `assets`: the dashboard's files.
//! - `metrics`: the bridge's metrics.
//!
//! # NATS
//! The `bridge` user reads only: its publishes are JetStream API requests of its own
//! consumers and direct gets (docs/nats.md); it publishes no event.

mod api;
pub mod assets;
pub mod config;
mod hub;
pub mod metrics;
mod ws;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use ringside_events::ServiceUser;
use ringside_kit::service::Started;
use ringside_kit::{Schema, ServiceError};
use ringside_replay::History;
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, Semaphore, watch};

pub use config::BridgeConfig;

use crate::hub::Hub;
use crate::metrics::Metrics;

/// The service's name (`ringside bridge`, the metric prefix).
pub const NAME: &str = "bridge";

/// What every handler shares.
struct App {
    config: BridgeConfig,
    hub: Arc<Hub>,
    nats: async_nats::Client,
    /// The replay library's view of the stream, opened on first use.
    history: OnceCell<History>,
    /// One permit per WebSocket client.
    slots: Arc<Semaphore>,
    /// Turns true when the bridge stops: clients are closed.
    stopping: watch::Receiver<bool>,
}

/// A bridge with its listener bound, not yet running.
#[derive(Debug)]
pub struct BridgeService {
    config: BridgeConfig,
    listener: TcpListener,
    addr: SocketAddr,
}

impl BridgeService {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl ringside_kit::Service for BridgeService {
    const NAME: &'static str = NAME;
    const SCHEMA: &'static Schema = &config::SCHEMA;
    type Config = BridgeConfig;
    type Error = ServiceError;

    fn config(map: &BTreeMap<String, String>) -> Result<BridgeConfig, ringside_kit::ConfigError> {
        BridgeConfig::from_map(map)
    }

    async fn bind(config: BridgeConfig) -> Result<Self, ServiceError> {
        let (listener, addr) = ringside_kit::error::bind("dashboard", config.addr).await?;
        Ok(Self {
            config,
            listener,
            addr,
        })
    }

    fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        // One listener serves the dashboard, the WebSocket, the API and the probes.
        vec![("dashboard", self.addr), ("metrics", self.addr)]
    }

    async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServiceError> {
        let config = self.config;
        let Started {
            telemetry,
            readiness,
            nats,
        } = ringside_kit::service::start(
            NAME,
            ServiceUser::Bridge,
            config.nats_password.clone(),
            &config.nats_url,
        )
        .await?;
        let synced = readiness.condition("ring");
        let loads_open = readiness.condition("loads");
        let hub = Arc::new(Hub::new(
            config.ring.clone(),
            config.queue,
            Metrics::new(&telemetry),
        ));
        let js = async_nats::jetstream::new(nats.clone());
        let tasks = [
            tokio::spawn(hub::run(Arc::clone(&hub), js.clone(), synced)),
            tokio::spawn(hub::loads(Arc::clone(&hub), js, loads_open)),
            tokio::spawn(hub::traffic(Arc::clone(&hub), nats.clone())),
        ];
        let (stop, stopping) = watch::channel(false);
        let app = Arc::new(App {
            slots: Arc::new(Semaphore::new(config.max_clients)),
            config,
            hub,
            nats,
            history: OnceCell::new(),
            stopping,
        });
        let router = Router::new()
            .route("/", get(assets::index))
            .route("/ws", get(ws::upgrade))
            .route("/api/ring", get(api::ring))
            .route("/api/events", get(api::events))
            .route("/api/key", get(api::key))
            .route("/api/status", get(api::status))
            .route("/{*path}", get(assets::asset))
            .with_state(app)
            .merge(ringside_kit::http::router(&readiness, &telemetry));
        tracing::info!(addr = %self.addr, "Bridge listening; the dashboard is at http://{}/", self.addr);
        let served = ringside_kit::http::serve(self.listener, router, async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await;
        for task in tasks {
            task.abort();
        }
        telemetry.shutdown();
        served.map_err(|e| ServiceError::serve("dashboard", e))
    }
}
