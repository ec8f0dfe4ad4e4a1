//! The services of the binary, one list (in the way of Loki's `-target`):
//! `ringside <service>` runs one as it runs in a pod, and `ringside up` supervises
//! them all locally ([`Target`]), each as its own process and NATS user.

use clap::Subcommand;
use ringside_bridge::BridgeService;
use ringside_collector::CollectorService;
use ringside_events::ServiceUser;
use ringside_kit::{Flags, Service};
use ringside_node::NodeService;
use ringside_reducer::Reducer;
use ringside_watcher::{HeartbeatWatcher, KubernetesWatcher};

/// `ringside <service>`: every long-running service.
#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// The ring reducer: folds membership into the ring, serves RingService.
    Reducer(Flags<Reducer>),
    /// A membership source: `kubernetes` (pods) or `heartbeat` (node heartbeats).
    // The usage line names the sources, so an unknown one's error lists them.
    #[command(subcommand, subcommand_value_name = "kubernetes|heartbeat")]
    Watcher(WatcherSource),
    /// A ring member: keyed requests, forwarding to the owner, replicas, handoff.
    Node(Flags<NodeService>),
    /// The metrics collector: node load, the ring, handoffs and scale decisions as
    /// Prometheus series.
    Collector(Flags<CollectorService>),
    /// The WebSocket bridge: the live dashboard, its events and time travel.
    Bridge(Flags<BridgeService>),
}

/// `ringside watcher <source>`: the membership sources.
#[derive(Debug, Subcommand)]
pub(crate) enum WatcherSource {
    /// Kubernetes pods: members are the Ready node pods of one namespace.
    Kubernetes(Flags<KubernetesWatcher>),
    /// Node heartbeats on NATS: members are the nodes that beat (local mode, VMs).
    Heartbeat(Flags<HeartbeatWatcher>),
}

impl ServiceCommand {
    /// Runs the service until SIGTERM or SIGINT.
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Reducer(flags) => main::<Reducer>(&flags),
            Self::Watcher(WatcherSource::Kubernetes(flags)) => main::<KubernetesWatcher>(&flags),
            Self::Watcher(WatcherSource::Heartbeat(flags)) => main::<HeartbeatWatcher>(&flags),
            Self::Node(flags) => main::<NodeService>(&flags),
            Self::Collector(flags) => main::<CollectorService>(&flags),
            Self::Bridge(flags) => main::<BridgeService>(&flags),
        }
    }
}

fn main<S: Service>(flags: &Flags<S>) -> anyhow::Result<()> {
    Ok(ringside_kit::service::main::<S>(&flags.config_map())?)
}

/// A service `ringside up` runs, as `ringside <argv>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `ringside reducer`.
    Reducer,
    /// `ringside watcher heartbeat`.
    HeartbeatWatcher,
    /// `ringside collector`.
    Collector,
    /// `ringside bridge`.
    Bridge,
    /// `ringside node`, the n-th (`node-<n>`, from 1).
    Node(u32),
}

impl Target {
    /// Its name in messages (`reducer`, `node-2`).
    pub(crate) fn name(self) -> String {
        match self {
            Self::Reducer => "reducer".to_owned(),
            Self::HeartbeatWatcher => "heartbeat watcher".to_owned(),
            Self::Collector => "collector".to_owned(),
            Self::Bridge => "bridge".to_owned(),
            Self::Node(n) => format!("node-{n}"),
        }
    }

    /// The arguments after `ringside`.
    pub(crate) fn argv(self) -> &'static [&'static str] {
        match self {
            Self::Reducer => &["reducer"],
            Self::HeartbeatWatcher => &["watcher", "heartbeat"],
            Self::Collector => &["collector"],
            Self::Bridge => &["bridge"],
            Self::Node(_) => &["node"],
        }
    }

    /// The announcement's first word (`<service> listening ...`).
    pub(crate) fn service(self) -> &'static str {
        match self {
            Self::Reducer => Reducer::NAME,
            Self::HeartbeatWatcher => ringside_watcher::NAME,
            Self::Collector => CollectorService::NAME,
            Self::Bridge => BridgeService::NAME,
            Self::Node(_) => NodeService::NAME,
        }
    }

    /// Its settings.
    pub(crate) fn schema(self) -> &'static ringside_kit::Schema {
        match self {
            Self::Reducer => Reducer::SCHEMA,
            Self::HeartbeatWatcher => HeartbeatWatcher::SCHEMA,
            Self::Collector => CollectorService::SCHEMA,
            Self::Bridge => BridgeService::SCHEMA,
            Self::Node(_) => NodeService::SCHEMA,
        }
    }

    /// Its NATS user: it gets that user's password, and only that one.
    pub(crate) fn user(self) -> ServiceUser {
        match self {
            Self::Reducer => ServiceUser::Reducer,
            Self::HeartbeatWatcher => ServiceUser::Watcher,
            Self::Collector => ServiceUser::Collector,
            Self::Bridge => ServiceUser::Bridge,
            Self::Node(_) => ServiceUser::Node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `up` gives each target its user's password under `password_env()`: that key must
    /// be a setting the service reads.
    #[test]
    fn each_target_reads_its_users_password() {
        for (target, schema) in [
            (Target::Reducer, Reducer::SCHEMA),
            (
                Target::HeartbeatWatcher,
                <ringside_watcher::HeartbeatWatcher as Service>::SCHEMA,
            ),
            (Target::Node(1), NodeService::SCHEMA),
            (Target::Collector, CollectorService::SCHEMA),
            (Target::Bridge, BridgeService::SCHEMA),
        ] {
            let key = target.user().password_env();
            assert!(schema.knows(&key), "{target:?} does not read {key}");
        }
    }
}
