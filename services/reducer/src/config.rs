//! [`ReducerConfig`]: the reducer's settings, parsed from a map of strings.
//!
//! The binary passes its environment (with command-line flags laid over it) as the map;
//! tests pass a literal map (never `set_var`). Every key is listed in [`KEYS`] with its
//! meaning and default (docs/reducer.md shows the same table), and a misspelled
//! `RINGSIDE_REDUCER_*` key is an error rather than a silently ignored setting. Keys of
//! other services in the same map are ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ringside_events::RingName;
use ringside_events::config::{check_known, get, invalid};
use ringside_ring::{RingConfig, Strategy};

// The ring, NATS and host name keys (and their defaults) are every service's, and the
// error is the one all services' settings share.
pub use ringside_events::config::{
    ConfigError, DEFAULT_NATS_URL, DEFAULT_RING, KEY_HOSTNAME, KEY_NATS_URL, KEY_RING,
};

/// Password of the `reducer` NATS user (`ServiceUser::Reducer.password_env()`).
pub const KEY_NATS_PASSWORD: &str = "RINGSIDE_NATS_PASSWORD_REDUCER";
/// Instance name: suffix of this reducer's durable consumer, and its producer name.
pub const KEY_INSTANCE: &str = "RINGSIDE_REDUCER_INSTANCE";
/// gRPC listen address (RingService and the gRPC health service).
pub const KEY_GRPC_ADDR: &str = "RINGSIDE_REDUCER_GRPC_ADDR";
/// HTTP listen address of `/metrics`, `/healthz` and `/readyz`.
pub const KEY_METRICS_ADDR: &str = "RINGSIDE_REDUCER_METRICS_ADDR";
/// Token strategy of a new ring.
pub const KEY_STRATEGY: &str = "RINGSIDE_REDUCER_STRATEGY";
/// Virtual nodes per unit of weight of a new ring.
pub const KEY_VNODES: &str = "RINGSIDE_REDUCER_VNODES";
/// Write a snapshot every this many epochs.
pub const KEY_SNAPSHOT_EVERY: &str = "RINGSIDE_REDUCER_SNAPSHOT_EVERY";
/// Per-epoch snapshots kept in the bucket.
pub const KEY_SNAPSHOT_KEEP: &str = "RINGSIDE_REDUCER_SNAPSHOT_KEEP";
/// Largest key `Lookup` and `Successors` accept, in bytes.
pub const KEY_MAX_KEY_BYTES: &str = "RINGSIDE_REDUCER_MAX_KEY_BYTES";
/// Epochs a `WatchRing` client may fall behind before its stream is closed.
pub const KEY_WATCH_BUFFER: &str = "RINGSIDE_REDUCER_WATCH_BUFFER";

/// Default gRPC address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:7420";
/// Default metrics address.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9420";
/// Default snapshot interval, in epochs: bounds the cold start.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100;
/// Default number of per-epoch snapshots kept.
pub const DEFAULT_SNAPSHOT_KEEP: usize = 50;
/// Default key size limit: 4 KiB.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4096;
/// Default `WatchRing` buffer, in epochs.
pub const DEFAULT_WATCH_BUFFER: usize = 256;
/// Longest instance name (it becomes part of a consumer name).
pub const MAX_INSTANCE_LEN: usize = 64;

/// Every key the reducer reads: (key, meaning and default). The docs table is this list.
pub const KEYS: &[(&str, &str)] = &[
    (KEY_RING, "ring name (default `default`)"),
    (
        KEY_NATS_URL,
        "NATS server URL (default `nats://127.0.0.1:4222`)",
    ),
    (
        KEY_NATS_PASSWORD,
        "password of the `reducer` NATS user (default: connect without credentials)",
    ),
    (
        KEY_INSTANCE,
        "instance name, `A-Z a-z 0-9 _ -`, unique per running reducer (default: `HOSTNAME`, else random)",
    ),
    (
        KEY_GRPC_ADDR,
        "gRPC listen address (default `127.0.0.1:7420`; port 0 picks a free port)",
    ),
    (
        KEY_METRICS_ADDR,
        "HTTP listen address of /metrics, /healthz, /readyz (default `127.0.0.1:9420`)",
    ),
    (
        KEY_STRATEGY,
        "token strategy of a new ring: `balanced` or `random` (default `balanced`)",
    ),
    (
        KEY_VNODES,
        "virtual nodes per unit of weight of a new ring (default 160)",
    ),
    (
        KEY_SNAPSHOT_EVERY,
        "write a snapshot every N epochs (default 100)",
    ),
    (
        KEY_SNAPSHOT_KEEP,
        "per-epoch snapshots kept in the bucket (default 50: with a snapshot every 100 epochs, replay of the last 5,000 epochs starts near its point)",
    ),
    (
        KEY_MAX_KEY_BYTES,
        "largest key Lookup and Successors accept, in bytes (default 4096)",
    ),
    (
        KEY_WATCH_BUFFER,
        "epochs a WatchRing client may lag before its stream is closed (default 256)",
    ),
];

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
        check_known(map, "reducer", "RINGSIDE_REDUCER_", KEYS)?;
        let get = |key: &str| get(map, key);

        let ring =
            RingName::new(get(KEY_RING).unwrap_or(DEFAULT_RING)).map_err(ConfigError::Ring)?;
        let instance = match get(KEY_INSTANCE) {
            Some(raw) => check_instance(KEY_INSTANCE, raw)?,
            // A pod name is a valid DNS label, so a valid instance name when short
            // enough; anything else falls back to a random name.
            None => match get(KEY_HOSTNAME).and_then(|h| check_instance(KEY_HOSTNAME, h).ok()) {
                Some(host) => host,
                None => format!("{:08x}", rand::random::<u32>()),
            },
        };
        let strategy = match get(KEY_STRATEGY) {
            None => Strategy::Balanced,
            Some(raw) => raw
                .parse::<Strategy>()
                .map_err(|e| invalid(KEY_STRATEGY, raw, &e.to_string()))?,
        };
        let vnodes = parse_number(get(KEY_VNODES), KEY_VNODES, RingConfig::DEFAULT_VNODES)?;
        let ring_config = RingConfig::new(strategy, vnodes)
            .map_err(|e| invalid(KEY_VNODES, &vnodes.to_string(), &e.to_string()))?;

        Ok(ReducerConfig {
            ring,
            nats_url: get(KEY_NATS_URL).unwrap_or(DEFAULT_NATS_URL).to_owned(),
            // Not trimmed or filtered like the others: a password is taken as given.
            nats_password: map.get(KEY_NATS_PASSWORD).cloned(),
            instance,
            grpc_addr: parse_addr(get(KEY_GRPC_ADDR), KEY_GRPC_ADDR, DEFAULT_GRPC_ADDR)?,
            metrics_addr: parse_addr(
                get(KEY_METRICS_ADDR),
                KEY_METRICS_ADDR,
                DEFAULT_METRICS_ADDR,
            )?,
            ring_config,
            snapshot_every: at_least_one(
                get(KEY_SNAPSHOT_EVERY),
                KEY_SNAPSHOT_EVERY,
                DEFAULT_SNAPSHOT_EVERY,
            )?,
            snapshot_keep: at_least_one(
                get(KEY_SNAPSHOT_KEEP),
                KEY_SNAPSHOT_KEEP,
                DEFAULT_SNAPSHOT_KEEP,
            )?,
            max_key_bytes: at_least_one(
                get(KEY_MAX_KEY_BYTES),
                KEY_MAX_KEY_BYTES,
                DEFAULT_MAX_KEY_BYTES,
            )?,
            watch_buffer: at_least_one(
                get(KEY_WATCH_BUFFER),
                KEY_WATCH_BUFFER,
                DEFAULT_WATCH_BUFFER,
            )?,
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
            &format!("at most {MAX_INSTANCE_LEN} characters"),
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

fn parse_number<T: std::str::FromStr>(
    raw: Option<&str>,
    key: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .parse::<T>()
            .map_err(|_| invalid(key, raw, "expected a whole number")),
    }
}

fn at_least_one<T>(raw: Option<&str>, key: &'static str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
{
    let value = parse_number(raw, key, default)?;
    if value < T::from(1) {
        return Err(invalid(key, raw.unwrap_or_default(), "must be at least 1"));
    }
    Ok(value)
}

fn parse_addr(
    raw: Option<&str>,
    key: &'static str,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let raw = raw.unwrap_or(default);
    raw.parse::<SocketAddr>()
        .map_err(|_| invalid(key, raw, "expected IP:PORT, e.g. 127.0.0.1:0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_testkit::settings as map;

    #[test]
    fn defaults() {
        let c = ReducerConfig::from_map(&map(&[(KEY_HOSTNAME, "reducer-0")])).unwrap();
        assert_eq!(c.ring.as_str(), "default");
        assert_eq!(c.nats_url, DEFAULT_NATS_URL);
        assert_eq!(c.nats_password, None);
        assert_eq!(c.instance, "reducer-0");
        assert_eq!(c.durable_name(), "reducer-default-reducer-0");
        assert_eq!(c.producer(), "reducer/reducer-0");
        assert_eq!(c.grpc_addr, DEFAULT_GRPC_ADDR.parse().unwrap());
        assert_eq!(c.metrics_addr, DEFAULT_METRICS_ADDR.parse().unwrap());
        assert_eq!(c.ring_config, RingConfig::default());
        assert_eq!(c.snapshot_every, 100);
        assert_eq!(c.snapshot_keep, 50);
        assert_eq!(c.max_key_bytes, 4096);
        assert_eq!(c.watch_buffer, 256);
    }

    #[test]
    fn every_key_is_read() {
        let c = ReducerConfig::from_map(&map(&[
            (KEY_RING, "orders"),
            (KEY_NATS_URL, "nats://10.0.0.1:4222"),
            (KEY_NATS_PASSWORD, " secret "),
            (KEY_INSTANCE, "a_1"),
            (KEY_GRPC_ADDR, "127.0.0.1:0"),
            (KEY_METRICS_ADDR, "0.0.0.0:9000"),
            (KEY_STRATEGY, "random"),
            (KEY_VNODES, "16"),
            (KEY_SNAPSHOT_EVERY, "7"),
            (KEY_SNAPSHOT_KEEP, "2"),
            (KEY_MAX_KEY_BYTES, "10"),
            (KEY_WATCH_BUFFER, "3"),
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
        let b = ReducerConfig::from_map(&map(&[(KEY_HOSTNAME, "host.example")])).unwrap();
        assert_eq!(b.instance.len(), 8);
    }

    #[test]
    fn bad_values_are_refused() {
        for (key, value) in [
            (KEY_RING, "a.b"),
            (KEY_INSTANCE, "a.b"),
            (KEY_INSTANCE, &"x".repeat(65)),
            (KEY_GRPC_ADDR, "localhost:1"),
            (KEY_METRICS_ADDR, "127.0.0.1"),
            (KEY_STRATEGY, "jump"),
            (KEY_VNODES, "0"),
            (KEY_VNODES, "5000"),
            (KEY_VNODES, "-1"),
            (KEY_SNAPSHOT_EVERY, "0"),
            (KEY_SNAPSHOT_KEEP, "0"),
            (KEY_MAX_KEY_BYTES, "lots"),
            (KEY_WATCH_BUFFER, "0"),
        ] {
            let err = ReducerConfig::from_map(&map(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn misspelled_keys_are_refused_and_foreign_keys_ignored() {
        let err =
            ReducerConfig::from_map(&map(&[("RINGSIDE_REDUCER_SNAPSHOT_EVRY", "5")])).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
        ReducerConfig::from_map(&map(&[("RINGSIDE_WATCHER_PORT", "80")])).unwrap();
    }
}
