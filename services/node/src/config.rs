//! [`NodeConfig`]: the node's settings, each one [`Setting`] constant in [`SCHEMA`]
//! (key, flag, default, meaning): the binary's flags, docs/node.md's table and
//! `ringside up` all come from it. Tests pass a literal map.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ringside_events::{NodeName, RingName};
use ringside_kit::settings::{HOSTNAME, NATS_URL, RING, invalid};
use ringside_kit::{ConfigError, Schema, Setting, Settings};

/// Password of the `node` NATS user.
pub const NATS_PASSWORD: Setting = Setting::env_only(
    "RINGSIDE_NATS_PASSWORD_NODE",
    "connect without credentials",
    "password of the `node` NATS user",
);
/// The node's member id.
pub const ID: Setting = Setting::optional(
    "RINGSIDE_NODE_ID",
    "id",
    "`HOSTNAME` (the pod name)",
    "member id of this node in the ring",
);
/// Where it listens: the key API, the other nodes' internal API, and the probes.
pub const ADDR: Setting = Setting::new(
    "RINGSIDE_NODE_ADDR",
    "addr",
    "127.0.0.1:8080",
    "HTTP listen address of the key API, /livez, /readyz, /metrics (port 0 picks a free port)",
);
/// The address the other nodes and clients reach it at.
pub const ADVERTISE: Setting = Setting::optional(
    "RINGSIDE_NODE_ADVERTISE",
    "advertise",
    "the bound listen address",
    "address announced in the ring (the pod IP and port in Kubernetes)",
);
/// Copies of each key: its owner and the next distinct successors.
pub const REPLICAS: Setting = Setting::new(
    "RINGSIDE_NODE_REPLICAS",
    "replicas",
    "2",
    "copies of each key (owner and R-1 successors); every node of a ring must agree",
);
/// Member weight.
pub const WEIGHT: Setting = Setting::new(
    "RINGSIDE_NODE_WEIGHT",
    "weight",
    "1",
    "ring weight of this node (relative capacity)",
);
/// Heartbeat interval.
pub const HEARTBEAT: Setting = Setting::new(
    "RINGSIDE_NODE_HEARTBEAT",
    "heartbeat",
    "1s",
    "heartbeat interval (membership through the heartbeat watcher)",
);
/// Load report interval.
pub const REPORT: Setting = Setting::new(
    "RINGSIDE_NODE_REPORT",
    "report",
    "2s",
    "interval of the load reports on ringside.<ring>.load.<node>",
);
/// How long a request may take to arrive (headers and body).
pub const REQUEST_TIMEOUT: Setting = Setting::new(
    "RINGSIDE_NODE_REQUEST_TIMEOUT",
    "request-timeout",
    "10s",
    "a client that does not finish sending its request within this is cut off (408)",
);
/// Kubernetes namespace (for the per-pod load series).
pub const NAMESPACE: Setting = Setting::env_only(
    "RINGSIDE_NODE_NAMESPACE",
    "none (outside Kubernetes)",
    "namespace of the pod, from the downward API",
);

/// Every setting of the node.
pub const SCHEMA: Schema = Schema {
    service: "node",
    prefixes: &["RINGSIDE_NODE_"],
    settings: &[
        &RING,
        &NATS_URL,
        &NATS_PASSWORD,
        &HOSTNAME,
        &ID,
        &ADDR,
        &ADVERTISE,
        &REPLICAS,
        &WEIGHT,
        &HEARTBEAT,
        &REPORT,
        &REQUEST_TIMEOUT,
        &NAMESPACE,
    ],
};

/// Largest value a PUT may carry: 1 MiB (larger is 413).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Largest key, in bytes (a longer one is 400).
pub const MAX_KEY_BYTES: usize = 1024;
/// Most copies a ring may ask for.
pub const MAX_REPLICAS: usize = 5;

/// The node's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The ring.
    pub ring: RingName,
    /// NATS server URL.
    pub nats_url: String,
    /// Password of the `node` user; `None` connects without credentials.
    pub nats_password: Option<String>,
    /// Member id.
    pub id: NodeName,
    /// Listen address.
    pub addr: SocketAddr,
    /// Announced address, when it differs from the bound one.
    pub advertise: Option<SocketAddr>,
    /// Copies of each key.
    pub replicas: usize,
    /// Ring weight.
    pub weight: u32,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Load report interval.
    pub report: Duration,
    /// Request arrival timeout.
    pub request_timeout: Duration,
    /// Kubernetes pod (the id in Kubernetes) and namespace, if any.
    pub namespace: Option<String>,
}

impl NodeConfig {
    /// Parses the settings from `map`.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<NodeConfig, ConfigError> {
        let s = Settings::new(&SCHEMA, map)?;
        let raw_id = s
            .given(&ID)
            .or_else(|| s.given(&HOSTNAME))
            .ok_or_else(|| invalid(ID.key, "", "set the node's id (or HOSTNAME)"))?;
        let id = NodeName::new(raw_id).map_err(|e| invalid(ID.key, raw_id, e.to_string()))?;
        let advertise = s
            .given(&ADVERTISE)
            .map(|raw| {
                raw.parse::<SocketAddr>()
                    .map_err(|_| invalid(ADVERTISE.key, raw, "expected IP:PORT"))
            })
            .transpose()?;
        let seconds = Duration::from_millis(50)..=Duration::from_secs(3600);
        Ok(NodeConfig {
            ring: s.ring()?,
            nats_url: s.parse(&NATS_URL)?,
            nats_password: s.secret(&NATS_PASSWORD),
            id,
            addr: s.addr(&ADDR)?,
            advertise,
            replicas: s.number(&REPLICAS, 1..=MAX_REPLICAS)?,
            weight: s.number(&WEIGHT, 1..=1000)?,
            heartbeat: s.duration(&HEARTBEAT, seconds.clone())?,
            report: s.duration(&REPORT, seconds.clone())?,
            request_timeout: s.duration(&REQUEST_TIMEOUT, seconds)?,
            namespace: s.given(&NAMESPACE).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_testkit::settings as map;

    #[test]
    fn defaults_and_every_key() {
        let c = NodeConfig::from_map(&map(&[("HOSTNAME", "node-0")])).unwrap();
        assert_eq!(c.id.as_str(), "node-0");
        assert_eq!(c.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((c.replicas, c.weight), (2, 1));
        assert_eq!(c.heartbeat, Duration::from_secs(1));
        assert_eq!(c.advertise, None);
        let c = NodeConfig::from_map(&map(&[
            (ID.key, "n1"),
            (ADDR.key, "127.0.0.1:0"),
            (ADVERTISE.key, "10.0.0.7:8080"),
            (REPLICAS.key, "3"),
            (WEIGHT.key, "2"),
            (HEARTBEAT.key, "200ms"),
            (REPORT.key, "1s"),
            (REQUEST_TIMEOUT.key, "2s"),
            (NAMESPACE.key, "ring"),
        ]))
        .unwrap();
        assert_eq!(c.id.as_str(), "n1");
        assert_eq!(c.advertise, Some("10.0.0.7:8080".parse().unwrap()));
        assert_eq!((c.replicas, c.weight), (3, 2));
        assert_eq!(c.namespace.as_deref(), Some("ring"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(NodeConfig::from_map(&map(&[])).is_err(), "no id");
        for (key, value) in [
            (ID.key, "a.b"),
            (REPLICAS.key, "0"),
            (REPLICAS.key, "9"),
            (WEIGHT.key, "0"),
            (ADVERTISE.key, "host"),
            (HEARTBEAT.key, "0s"),
            ("RINGSIDE_NODE_REPLICA", "2"),
        ] {
            let err = NodeConfig::from_map(&map(&[(ID.key, "n"), (key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn the_docs_list_every_setting() {
        let docs = include_str!("../../../docs/node.md");
        let table = SCHEMA.markdown_table();
        assert!(docs.contains(&table), "docs/node.md must contain:\n{table}");
    }
}
