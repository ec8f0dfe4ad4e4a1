//! The Kubernetes source: membership from the node pods of one namespace.
//!
//! The source watches the pods matching a label selector (kube-rs watcher) and
//! publishes one ring's membership: a full sync after every list, joins and leaves in
//! between.
//!
//! # Layout
//! - [`member`]: the membership rule (pod -> [`PodMember`] or why not). Pure.
//! - [`tracker`]: [`PodTracker`], watcher events -> [`MembershipChange`]s with their
//!   ids. Pure, synchronous, unit-tested without any server.
//! - [`source`]: the Kubernetes edge: client discovery and [`pod_events`].
//! - [`config`]: [`KubernetesConfig`] and its settings.
//! - [`Pods`]: the source as the service runs it ([`KubernetesWatcher`]): its
//!   readiness (`synced`: the first full sync is stored), its metrics, and the loop
//!   joining the parts.

pub mod config;
pub mod member;
pub mod source;
pub mod tracker;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use futures::StreamExt;
use kube::runtime::watcher;
use ringside_kit::{Condition, ConfigError, Readiness, Schema, Telemetry};

pub use config::KubernetesConfig;
pub use member::{MemberRule, NotMember, PodMember, PodState, PortSource};
pub use source::{kube_client, pod_api, pod_events};
pub use tracker::{Change, MembershipChange, PodTracker, SyncCause};

use crate::WatcherError;
use crate::metrics::{KubernetesMetrics, Metrics};
use crate::publish::{MembershipPublisher, connect, store};
use crate::service::{Source, Watcher};

/// The Kubernetes watcher: `ringside watcher kubernetes`.
pub type KubernetesWatcher = Watcher<Pods>;

/// The Kubernetes source, set up and not yet running.
#[derive(Debug)]
pub struct Pods {
    config: KubernetesConfig,
    readiness: Readiness,
    synced: Condition,
    metrics: Metrics,
    pod_metrics: KubernetesMetrics,
}

impl Source for Pods {
    const SCHEMA: &'static Schema = &config::SCHEMA;
    type Config = KubernetesConfig;

    fn config(map: &BTreeMap<String, String>) -> Result<KubernetesConfig, ConfigError> {
        KubernetesConfig::from_map(map)
    }

    fn metrics_addr(config: &KubernetesConfig) -> SocketAddr {
        config.metrics_addr
    }

    fn new(config: KubernetesConfig, readiness: &Readiness, telemetry: &Telemetry) -> Pods {
        Pods {
            config,
            readiness: readiness.clone(),
            synced: readiness.condition("synced"),
            metrics: Metrics::new(telemetry),
            pod_metrics: KubernetesMetrics::new(telemetry),
        }
    }

    /// Connects, reads the head, lists and watches; each change is stored before the
    /// next event is looked at. `synced` holds once the first full sync is stored (the
    /// ring has seen the truth at least once) and stays.
    async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), WatcherError> {
        let Pods {
            config,
            readiness,
            synced,
            metrics,
            pod_metrics,
        } = self;
        let mut shutdown = std::pin::pin!(shutdown);
        let client = tokio::select! {
            () = &mut shutdown => return Ok(()),
            c = connect(&config.nats, &readiness) => c?,
        };
        let publisher = MembershipPublisher::new(client, &config.nats, metrics);
        // The head makes the first sync of a restart that sees nothing new a duplicate.
        let head = publisher.head().await?;
        let client = kube_client(&config).await?;
        let mut tracker =
            PodTracker::new(config.nats.ring.as_str(), config.rule.clone()).with_head(head);
        let mut events = std::pin::pin!(pod_events(
            pod_api(client, &config),
            &config.label_selector,
            pod_metrics.clone()
        ));
        tracing::info!(
            ring = %config.nats.ring,
            selector = %config.label_selector,
            namespace = config.namespace.as_deref().unwrap_or("(client default)"),
            "Watching pods."
        );
        loop {
            let event = tokio::select! {
                () = &mut shutdown => return Ok(()),
                event = events.next() => match event {
                    Some(event) => event,
                    // kube's watcher stream is endless; ending is a bug worth a loud exit.
                    None => return Err(WatcherError::WatchEnded),
                },
            };
            if matches!(event, watcher::Event::InitDone) {
                pod_metrics.listed();
            }
            let Some(change) = tracker.apply(event) else {
                continue;
            };
            let event = publisher.event(change.body())?;
            if store(&publisher, &event, &change, shutdown.as_mut())
                .await?
                .is_err()
            {
                return Ok(());
            }
            if matches!(change.change, Change::Synced { .. }) && !synced.holds() {
                tracing::info!("First full sync stored; ready.");
                synced.set(true);
            }
        }
    }
}
