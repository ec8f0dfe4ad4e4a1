//! [`HeartbeatConfig`]: the heartbeat source's settings, parsed from a map of strings.
//!
//! Same rules as the Kubernetes source's
//! ([`crate::kubernetes::config::KubernetesConfig`]): every setting is one [`Setting`]
//! constant in [`SCHEMA`], the shared ones of [`crate::config`] first; the binary passes
//! its environment, tests a literal map; a misspelled `RINGSIDE_HEARTBEAT_*` key is an
//! error. Durations are a whole number and a unit: `250ms`, `1s`, `2m`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ringside_kit::{ConfigError, Schema, Setting, Settings};

use crate::config::{METRICS_ADDR, NatsSettings, source_schema};

/// Expected beat interval of the nodes (used for beats that do not state theirs, and
/// for the listening window before the first sync).
pub const INTERVAL: Setting = Setting::new(
    "RINGSIDE_HEARTBEAT_INTERVAL",
    "interval",
    "1s",
    "expected beat interval, for beats that state none and for the listening window (10ms..60s)",
);
/// Beat intervals without a beat after which a member leaves.
pub const MISSED_BEATS: Setting = Setting::new(
    "RINGSIDE_HEARTBEAT_MISSED_BEATS",
    "missed-beats",
    "3",
    "beat intervals without a beat after which a member leaves (1..100)",
);
/// How often the lease holder restates the member set.
pub const SYNC_INTERVAL: Setting = Setting::new(
    "RINGSIDE_HEARTBEAT_SYNC_INTERVAL",
    "sync-interval",
    "30s",
    "how often the lease holder checks and restates the member set (at least 100ms)",
);
/// How long a lease lasts without renewal.
pub const LEASE_TTL: Setting = Setting::new(
    "RINGSIDE_HEARTBEAT_LEASE_TTL",
    "lease-ttl",
    "6s",
    "lease time-to-live, renewed every third of it (150ms..10s)",
);

/// Every setting of the heartbeat source, in the order docs/watcher.md lists them.
pub const SCHEMA: Schema = source_schema!(
    "RINGSIDE_HEARTBEAT_",
    [&INTERVAL, &MISSED_BEATS, &SYNC_INTERVAL, &LEASE_TTL]
);

/// Shortest beat interval taken from a node or the configuration.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest beat interval taken from a node or the configuration: a node cannot make
/// the watcher wait for ever before it notices the node is gone.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Largest accepted number of missed beats.
pub const MAX_MISSED_BEATS: u32 = 100;
/// Shortest lease TTL (renewals run every third of it).
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(150);
/// Longest lease TTL: entries of the lease bucket (`nats/kv/RINGSIDE_LEASES.json`)
/// expire after 10 s (`max_age`), so a longer lease would vanish between renewals.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(10);
/// Shortest sync period.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The heartbeat source's settings.
#[derive(Clone, Debug)]
pub struct HeartbeatConfig {
    /// Ring, NATS server and credentials, producer name.
    pub nats: NatsSettings,
    /// HTTP (metrics, health) listen address.
    pub metrics_addr: SocketAddr,
    /// Expected beat interval (beats that state their own interval use theirs).
    pub interval: Duration,
    /// Beat intervals without a beat after which a member leaves.
    pub missed_beats: u32,
    /// How often the lease holder restates the member set.
    pub sync_interval: Duration,
    /// Lease time-to-live.
    pub lease_ttl: Duration,
}

impl HeartbeatConfig {
    /// Parses the settings from `map` (typically the process environment).
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<HeartbeatConfig, ConfigError> {
        let s = Settings::new(&SCHEMA, map)?;
        Ok(HeartbeatConfig {
            nats: NatsSettings::from_settings(&s)?,
            metrics_addr: s.addr(&METRICS_ADDR)?,
            interval: s.duration(&INTERVAL, MIN_INTERVAL..=MAX_INTERVAL)?,
            missed_beats: s.number(&MISSED_BEATS, 1..=MAX_MISSED_BEATS)?,
            sync_interval: s.duration(&SYNC_INTERVAL, MIN_SYNC_INTERVAL..=Duration::MAX)?,
            lease_ttl: s.duration(&LEASE_TTL, MIN_LEASE_TTL..=MAX_LEASE_TTL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_kit::settings::{HOSTNAME, RING};
    use ringside_testkit::settings as map;

    fn parse(pairs: &[(&str, &str)]) -> Result<HeartbeatConfig, ConfigError> {
        HeartbeatConfig::from_map(&map(pairs))
    }

    #[test]
    fn defaults() {
        let c = parse(&[("RINGSIDE_WATCHER_NAMESPACE", "ignored here")]).unwrap();
        assert_eq!(c.nats.ring.as_str(), "default");
        assert_eq!(c.nats.producer, "watcher");
        assert_eq!(c.metrics_addr, "127.0.0.1:9421".parse().unwrap());
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.missed_beats, 3);
        assert_eq!(c.sync_interval, Duration::from_secs(30));
        assert_eq!(c.lease_ttl, Duration::from_secs(6));
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(&[
            (RING.key, "blue"),
            (HOSTNAME.key, "vm-3"),
            (METRICS_ADDR.key, "127.0.0.1:0"),
            (INTERVAL.key, "100ms"),
            (MISSED_BEATS.key, "5"),
            (SYNC_INTERVAL.key, "2m"),
            (LEASE_TTL.key, "900ms"),
        ])
        .unwrap();
        assert_eq!(c.nats.ring.as_str(), "blue");
        assert_eq!(c.nats.producer, "watcher/vm-3");
        assert_eq!(c.metrics_addr.port(), 0);
        assert_eq!(c.interval, Duration::from_millis(100));
        assert_eq!(c.missed_beats, 5);
        assert_eq!(c.sync_interval, Duration::from_secs(120));
        assert_eq!(c.lease_ttl, Duration::from_millis(900));
    }

    #[test]
    fn bad_values_are_errors() {
        crate::service::assert_invalid::<crate::heartbeat::Heartbeats>(&[
            (INTERVAL.key, "1ms"),
            (INTERVAL.key, "2m"),
            (INTERVAL.key, "1"),
            (MISSED_BEATS.key, "0"),
            (MISSED_BEATS.key, "101"),
            (MISSED_BEATS.key, "three"),
            (SYNC_INTERVAL.key, "10ms"),
            (LEASE_TTL.key, "11s"),
            (LEASE_TTL.key, "100ms"),
            (METRICS_ADDR.key, "127.0.0.1"),
        ]);
        assert!(matches!(
            parse(&[("RINGSIDE_HEARTBEAT_TTL", "1s")]),
            Err(ConfigError::UnknownKey { .. })
        ));
    }

    /// The lease bucket must keep an entry at least as long as the longest lease.
    #[test]
    fn the_longest_lease_fits_the_bucket_max_age() {
        let defs = ringside_events::Definitions::builtin().unwrap();
        let bucket = defs
            .get(&format!("KV_{}", ringside_events::subject::KV_LEASES))
            .unwrap();
        assert!(
            bucket.config.max_age >= MAX_LEASE_TTL,
            "{:?}",
            bucket.config.max_age
        );
    }
}
