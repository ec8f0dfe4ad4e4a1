//! ringside-watcher: the membership sources, Kubernetes pods and node heartbeats.
//!
//! The Kubernetes source ([`kubernetes`]) watches the node pods of one namespace
//! (label selector, kube-rs watcher) and publishes one ring's membership: a full sync
//! after every list, joins and leaves in between. The heartbeat source ([`heartbeat`])
//! listens to the nodes' core-NATS heartbeats, holds a per-ring lease so that one
//! instance speaks for a ring, and publishes joins, leaves (missed beats, goodbyes) and
//! periodic syncs. Every fact is stored once (its content names it, JetStream drops
//! duplicates), so retries and restarts never store a fact twice.
//!
//! Each source runs as a service of the kit ([`Watcher`]: [`KubernetesWatcher`],
//! [`HeartbeatWatcher`], both named `watcher`): it serves `/livez`, `/readyz` and
//! `/metrics` on its metrics address while it runs. Ready means connected to NATS (`nats`) and, for Kubernetes,
//! the first full sync stored (`synced`), for heartbeats, listening as the lease holder
//! or a standby (`listening`).
//!
//! # Layout
//! - [`kubernetes`]: the Kubernetes source: membership rule, pod tracker, kube edge,
//!   settings and run loop.
//! - [`heartbeat`]: the heartbeat source: tracker, lease, settings and run loop, and
//!   the [`heartbeat::Beacon`] nodes beat with.
//! - [`config`]: the settings both share, [`NatsSettings`].
//! - [`publish`]: the NATS edge both publish through: [`MembershipPublisher`].
//! - [`ids`]: sync fact ids, shared by both sources.
//! - [`metrics`]: the metrics (each described once) as OpenTelemetry instruments.
//! - [`error`]: why a watcher stops, [`WatcherError`].
//! - [`service`]: [`Watcher`], either [`Source`] as a service, serving its metrics
//!   address while the source runs.
//!
//! # How it fits
//! The watchers only produce membership events; the reducer folds them into the ring.
//! The Kubernetes watcher's whole view of Kubernetes is list + watch of pods, so it
//! needs nothing but get/list/watch on pods in its namespace (see `docs/watcher.md`).

pub mod config;
pub mod error;
pub mod heartbeat;
pub mod ids;
pub mod kubernetes;
pub mod metrics;
pub mod publish;
pub mod service;

pub use config::NatsSettings;
pub use error::WatcherError;
pub use heartbeat::HeartbeatWatcher;
pub use kubernetes::KubernetesWatcher;
pub use publish::MembershipPublisher;
pub use ringside_kit::ConfigError;
pub use service::{Source, Watcher};

/// The service name of both sources: `ringside watcher ...`, the metric prefix
/// (`ringside_watcher_*`), the announcement (`watcher listening metrics=...`).
pub const NAME: &str = "watcher";

/// docs/watcher.md, the operator's guide, holds each source's settings table as the
/// settings' definitions make it.
#[cfg(test)]
mod docs {
    #[test]
    fn the_docs_list_every_setting_with_its_default() {
        let docs = include_str!("../../../docs/watcher.md");
        for schema in [
            &crate::kubernetes::config::SCHEMA,
            &crate::heartbeat::config::SCHEMA,
        ] {
            let table = schema.markdown_table();
            assert!(
                docs.contains(&table),
                "docs/watcher.md must contain this table:\n{table}"
            );
        }
    }
}
