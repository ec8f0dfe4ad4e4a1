//! [`ReducerConfig`]: the reducer's settings, parsed from a map of strings.
//!
//! Every setting is one [`Setting`] constant in [`SCHEMA`] (key, flag, default,
//! meaning): the binary's flags, docs/reducer.md's table and `ringside up` all come
//! from it. The binary passes its environment with the flags laid over it; tests pass
//! a literal map (never `set_var`). A misspelled `RINGSIDE_REDUCER_*` key is an error
//! rather than a silently ignored setting; keys of other services are ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ringside_events::RingName;
use ringside_kit::settings::{HOSTNAME, NATS_URL, RING, invalid};
use ringside_kit::{ConfigError, Schema, Setting, Settings};
use ringside_ring::{RingConfig, Strategy};

/// Password of the `reducer` NATS user (`ServiceUser::Reducer.password_env()`).
pub const NATS_PASSWORD: Setting = Setting::env_only(
    "RINGSIDE_NATS_PASSWORD_REDUCER",
    "connect without credentials",
    "password of the `reducer` NATS user",
);
/// Instance name: suffix of this reducer's durable consumer, and its producer name.
pub const INSTANCE: Setting = Setting::optional(
    "RINGSIDE_REDUCER_INSTANCE",
    "instance",
    "`HOSTNAME` if it is a valid instance name, else random",
    "instance name, `A-Z a-z 0-9 _ -`, unique per running reducer",
);
/// gRPC listen address (RingService and the gRPC health service).
pub const GRPC_ADDR: Setting = Setting::new(
    "RINGSIDE_REDUCER_GRPC_ADDR",
    "grpc-addr",
    "127.0.0.1:7420",
    "gRPC listen address (port 0 picks a free port)",
);
/// HTTP listen address of `/metrics`, `/livez` and `/readyz`.
pub const METRICS_ADDR: Setting = Setting::new(
    "RINGSIDE_REDUCER_METRICS_ADDR",
    "metrics-addr",
    "127.0.0.1:9420",
    "HTTP listen address of /metrics, /livez, /readyz",
);
/// Both listeners on free loopback ports: what a test or benchmark that runs the
/// reducer in its own process passes (with the NATS settings).
pub const FREE_LOOPBACK_PORTS: [(&str, &str); 2] = [
    (GRPC_ADDR.key, "127.0.0.1:0"),
    (METRICS_ADDR.key, "127.0.0.1:0"),
];
/// Token strategy of a new ring.
pub const STRATEGY: Setting = Setting::new(
    "RINGSIDE_REDUCER_STRATEGY",
    "strategy",
    "balanced",
    "token strategy of a new ring: `balanced` or `random`",
);
/// Virtual nodes per unit of weight of a new ring.
pub const VNODES: Setting = Setting::new(
    "RINGSIDE_REDUCER_VNODES",
    "vnodes",
    "160",
    "virtual nodes per unit of weight of a new ring",
);
/// Write a snapshot every this many epochs (bounds the cold start).
pub const SNAPSHOT_EVERY: Setting = Setting::new(
    "RINGSIDE_REDUCER_SNAPSHOT_EVERY",
    "snapshot-every",
    "100",
    "write a snapshot every N epochs",
);
/// Per-epoch snapshots kept in the bucket.
pub const SNAPSHOT_KEEP: Setting = Setting::new(
    "RINGSIDE_REDUCER_SNAPSHOT_KEEP",
    "snapshot-keep",
    "50",
    "per-epoch snapshots kept in the bucket (with a snapshot every 100 epochs, replay of the last 5,000 epochs starts near its point)",
);
/// Largest key `Lookup` and `Successors` accept, in bytes.
pub const MAX_KEY_BYTES: Setting = Setting::new(
    "RINGSIDE_REDUCER_MAX_KEY_BYTES",
    "max-key-bytes",
    "4096",
    "largest key Lookup and Successors accept, in bytes",
);
/// Epochs a `WatchRing` client may fall behind before its stream is closed.
pub const WATCH_BUFFER: Setting = Setting::new(
    "RINGSIDE_REDUCER_WATCH_BUFFER",
    "watch-buffer",
    "256",
    "epochs a WatchRing client may lag before its stream is closed",
);

/// Every setting of the reducer, in the order docs/reducer.md lists them.
pub const SCHEMA: Schema = Schema {
    service: "reducer",
    prefixes: &["RINGSIDE_REDUCER_"],
    settings: &[
        &RING,
        &NATS_URL,
        &NATS_PASSWORD,
        &HOSTNAME,
        &INSTANCE,
        &GRPC_ADDR,
        &METRICS_ADDR,
        &STRATEGY,
        &VNODES,
        &SNAPSHOT_EVERY,
        &SNAPSHOT_KEEP,
        &MAX_KEY_BYTES,
        &WATCH_BUFFER,
    ],
};

/// Longest instance name (it becomes part of a consumer name).
pub const MAX_INSTANCE_LEN: usize = 64;

/// The reducer's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReducerConfig {
    /// The ring this reducer folds.
    pub ring: RingName,
    /// NATS server URL.
    pub nats_url: String,
    /// Password of the `reducer` NATS user; `None` connects without credentials.
    pub nats_password: Option<String>,
    /// Instance name: `reducer-<ring>-<instance>` is this reducer's durable consumer.
    pub instance: String,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP (metrics, health) listen address.
    pub metrics_addr: SocketAddr,
    /// Configuration of a new ring; a stored ring must have the same one.
    pub ring_config: RingConfig,
    /// Snapshot every this many epochs (at least 1).
    pub snapshot_every: u64,
    /// Per-epoch snapshots kept (at least 1).
    pub snapshot_keep: usize,
    /// Largest accepted key, in bytes (at least 1).
    pub max_key_bytes: usize,
    /// `WatchRing` buffer, in epochs (at least 1).
    pub watch_buffer: usize,
}

impl ReducerConfig {
    /// Parses the settings from `map` (typically the process environment).
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<ReducerConfig, ConfigError> {
        let s = Settings::new(&SCHEMA, map)?;
        let instance = match s.given(&INSTANCE) {
            Some(raw) => check_instance(INSTANCE.key, raw)?,
            // A pod name is a valid DNS label, so a valid instance name when short
            // enough; anything else falls back to a random name.
            None => match s
                .given(&HOSTNAME)
                .and_then(|h| check_instance(HOSTNAME.key, h).ok())
            {
                Some(host) => host,
                None => format!("{:08x}", rand::random::<u32>()),
            },
        };
        let strategy: Strategy = s.parse(&STRATEGY)?;
        let vnodes: u32 = s.parse(&VNODES)?;
        let ring_config = RingConfig::new(strategy, vnodes)
            .map_err(|e| invalid(VNODES.key, &vnodes.to_string(), e.to_string()))?;
        Ok(ReducerConfig {
            ring: s.ring()?,
            nats_url: s.parse(&NATS_URL)?,
            nats_password: s.secret(&NATS_PASSWORD),
            instance,
            grpc_addr: s.addr(&GRPC_ADDR)?,
            metrics_addr: s.addr(&METRICS_ADDR)?,
            ring_config,
            snapshot_every: s.number(&SNAPSHOT_EVERY, 1..=u64::MAX)?,
            snapshot_keep: s.number(&SNAPSHOT_KEEP, 1..=usize::MAX)?,
            max_key_bytes: s.number(&MAX_KEY_BYTES, 1..=usize::MAX)?,
            watch_buffer: s.number(&WATCH_BUFFER, 1..=usize::MAX)?,
        })
    }

    /// The name of this reducer's durable consumer: `reducer-<ring>-<instance>`.
    pub fn durable_name(&self) -> String {
        format!(
            "{}-{}",
            ringside_events::subject::durable_name("reducer", &self.ring),
            self.instance
        )
    }

    /// The producer recorded in the rebalance events this reducer writes.
    pub fn producer(&self) -> String {
        format!("reducer/{}", self.instance)
    }
}

/// An instance name: it ends up in a JetStream consumer name, which allows fewer
/// characters than a NATS token.
fn check_instance(key: &'static str, raw: &str) -> Result<String, ConfigError> {
    if raw.len() > MAX_INSTANCE_LEN {
        return Err(invalid(
            key,
            raw,
            format!("at most {MAX_INSTANCE_LEN} characters"),
        ));
    }
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(key, raw, "use only A-Z a-z 0-9 _ -"));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_testkit::settings as map;

    #[test]
    fn defaults() {
        let c = ReducerConfig::from_map(&map(&[(HOSTNAME.key, "reducer-0")])).unwrap();
        assert_eq!(c.ring.as_str(), "default");
        assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(c.nats_password, None);
        assert_eq!(c.instance, "reducer-0");
        assert_eq!(c.durable_name(), "reducer-default-reducer-0");
        assert_eq!(c.producer(), "reducer/reducer-0");
        assert_eq!(c.grpc_addr, "127.0.0.1:7420".parse().unwrap());
        assert_eq!(c.metrics_addr, "127.0.0.1:9420".parse().unwrap());
        assert_eq!(c.ring_config, RingConfig::default());
        assert_eq!(c.snapshot_every, 100);
        assert_eq!(c.snapshot_keep, 50);
        assert_eq!(c.max_key_bytes, 4096);
        assert_eq!(c.watch_buffer, 256);
    }

    #[test]
    fn every_key_is_read() {
        let c = ReducerConfig::from_map(&map(&[
            (RING.key, "orders"),
            (NATS_URL.key, "nats://10.0.0.1:4222"),
            (NATS_PASSWORD.key, " secret "),
            (INSTANCE.key, "a_1"),
            (GRPC_ADDR.key, "127.0.0.1:0"),
            (METRICS_ADDR.key, "0.0.0.0:9000"),
            (STRATEGY.key, "random"),
            (VNODES.key, "16"),
            (SNAPSHOT_EVERY.key, "7"),
            (SNAPSHOT_KEEP.key, "2"),
            (MAX_KEY_BYTES.key, "10"),
            (WATCH_BUFFER.key, "3"),
        ]))
        .unwrap();
        assert_eq!(c.ring.as_str(), "orders");
        assert_eq!(c.nats_url, "nats://10.0.0.1:4222");
        assert_eq!(c.nats_password.as_deref(), Some(" secret "));
        assert_eq!(c.durable_name(), "reducer-orders-a_1");
        assert_eq!(c.grpc_addr.port(), 0);
        assert_eq!(c.metrics_addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(
            c.ring_config,
            RingConfig::new(Strategy::Random, 16).unwrap()
        );
        assert_eq!(
            (
                c.snapshot_every,
                c.snapshot_keep,
                c.max_key_bytes,
                c.watch_buffer
            ),
            (7, 2, 10, 3)
        );
    }

    #[test]
    fn random_instance_without_hostname() {
        let a = ReducerConfig::from_map(&map(&[])).unwrap();
        assert_eq!(a.instance.len(), 8);
        // A host name that is no valid instance name falls back to a random one.
        let b = ReducerConfig::from_map(&map(&[(HOSTNAME.key, "host.example")])).unwrap();
        assert_eq!(b.instance.len(), 8);
    }

    #[test]
    fn bad_values_are_refused() {
        for (key, value) in [
            (RING.key, "a.b"),
            (INSTANCE.key, "a.b"),
            (INSTANCE.key, &"x".repeat(65)),
            (GRPC_ADDR.key, "localhost:1"),
            (METRICS_ADDR.key, "127.0.0.1"),
            (STRATEGY.key, "jump"),
            (VNODES.key, "0"),
            (VNODES.key, "5000"),
            (VNODES.key, "-1"),
            (SNAPSHOT_EVERY.key, "0"),
            (SNAPSHOT_KEEP.key, "0"),
            (MAX_KEY_BYTES.key, "lots"),
            (WATCH_BUFFER.key, "0"),
        ] {
            let err = ReducerConfig::from_map(&map(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn the_docs_list_every_setting_with_its_default() {
        let docs = include_str!("../../../docs/reducer.md");
        let table = SCHEMA.markdown_table();
        assert!(
            docs.contains(&table),
            "docs/reducer.md must contain this table:\n{table}"
        );
    }

    #[test]
    fn misspelled_keys_are_refused_and_foreign_keys_ignored() {
        let err =
            ReducerConfig::from_map(&map(&[("RINGSIDE_REDUCER_SNAPSHOT_EVRY", "5")])).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
        ReducerConfig::from_map(&map(&[("RINGSIDE_WATCHER_PORT", "80")])).unwrap();
    }
}
