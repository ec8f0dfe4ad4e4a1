//! ringside-collector: the metrics service. It reads the nodes' load reports, follows
//! the ring and its rebalances, counts handoffs and scale decisions, and exports all of
//! it as OpenTelemetry metrics on a Prometheus page: the series Prometheus stores, the
//! rules alert on, the autoscaler (and on Kubernetes prometheus-adapter and the HPA)
//! scales on. docs/metrics.md is the guide.
//!
//! # Layout
//! - [`config`]: [`CollectorConfig`], its settings.
//! - [`state`]: [`State`], what it knows (each node's last report, the ring's figures,
//!   the counters).
//! - [`ingest`]: the loops that fill it from NATS.
//! - [`metrics`]: the metrics, each described once, read from the state at each scrape.
//!
//! # How it fits
//! It only reads, as the `collector` NATS user: the `RINGSIDE_LOAD` stream, the
//! handoff and scale subjects and the ring (through `ringside-client`). Nothing
//! depends on it but Prometheus; a collector that restarts has every node's figures
//! again from the nodes' last stored reports.

pub mod config;
pub mod ingest;
pub mod metrics;
pub mod state;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use ringside_client::ClientConfig;
use ringside_events::ServiceUser;
use ringside_kit::service::Started;
use ringside_kit::{Schema, ServiceError};
use tokio::net::TcpListener;

pub use config::CollectorConfig;
pub use state::State;

use crate::ingest::Feed;

/// The service's name.
pub const NAME: &str = "collector";

/// A collector with its listener bound, not yet running.
#[derive(Debug)]
pub struct CollectorService {
    config: CollectorConfig,
    listener: TcpListener,
    addr: SocketAddr,
}

impl ringside_kit::Service for CollectorService {
    const NAME: &'static str = NAME;
    const SCHEMA: &'static Schema = &config::SCHEMA;
    type Config = CollectorConfig;
    type Error = ServiceError;

    fn config(
        map: &BTreeMap<String, String>,
    ) -> Result<CollectorConfig, ringside_kit::ConfigError> {
        CollectorConfig::from_map(map)
    }

    async fn bind(config: CollectorConfig) -> Result<Self, ServiceError> {
        let (listener, addr) = ringside_kit::error::bind("metrics", config.metrics_addr).await?;
        Ok(Self {
            config,
            listener,
            addr,
        })
    }

    fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![("metrics", self.addr)]
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
            ServiceUser::Collector,
            config.nats_password.clone(),
            &config.nats_url,
        )
        .await?;
        let ring_known = readiness.condition("ring");
        let loads_open = readiness.condition("loads");
        let events_open = readiness.condition("events");
        let state = Arc::new(State::new(config.stale_after, config.cpu_threshold));
        metrics::register(&telemetry, &state);

        let (follower, client) = ringside_client::follow(
            nats.clone(),
            ClientConfig::new(config.ring.clone()).label(NAME),
        );
        let js = async_nats::jetstream::new(nats);
        let tasks = [
            tokio::spawn(follower.run(std::future::pending())),
            tokio::spawn(ingest::ring(client, Arc::clone(&state), ring_known)),
            tokio::spawn(ingest::consume(
                js.clone(),
                config.ring.clone(),
                Feed::Loads,
                Arc::clone(&state),
                loads_open,
            )),
            tokio::spawn(ingest::consume(
                js,
                config.ring,
                Feed::Events,
                Arc::clone(&state),
                events_open,
            )),
        ];
        let router = ringside_kit::http::router(&readiness, &telemetry);
        let served = ringside_kit::http::serve(self.listener, router, shutdown).await;
        for task in tasks {
            task.abort();
        }
        telemetry.shutdown();
        served.map_err(|e| ServiceError::serve("metrics", e))
    }
}
