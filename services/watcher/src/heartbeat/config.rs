//! [`HeartbeatConfig`]: the heartbeat source's settings, parsed from a map of strings.
//!
//! Same rules as the Kubernetes watcher's [`crate::WatcherConfig`]: the binary passes
//! its environment, tests a literal map; the ring and NATS keys are shared
//! ([`crate::config::NATS_KEYS`]), and a misspelled `RINGSIDE_HEARTBEAT_*` key is an
//! error.

use std::collections::BTreeMap;
use std::time::Duration;

use ringside_events::config::{check_known, get, invalid};

use crate::config::{ConfigError, NatsSettings, parse_duration};

/// Expected beat interval of the nodes (used for beats that do not state theirs, and
/// for the listening window before the first sync).
pub const KEY_INTERVAL: &str = "RINGSIDE_HEARTBEAT_INTERVAL";
/// Beat intervals without a beat after which a member leaves.
pub const KEY_MISSED_BEATS: &str = "RINGSIDE_HEARTBEAT_MISSED_BEATS";
/// How often the lease holder restates the member set.
pub const KEY_SYNC_INTERVAL: &str = "RINGSIDE_HEARTBEAT_SYNC_INTERVAL";
/// How long a lease lasts without renewal.
pub const KEY_LEASE_TTL: &str = "RINGSIDE_HEARTBEAT_LEASE_TTL";

/// Default expected beat interval (the nodes beat every second).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of missed beats that make a leave.
pub const DEFAULT_MISSED_BEATS: u32 = 3;
/// Default period of the restating sync.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Default lease time-to-live.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);

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

/// Every `RINGSIDE_HEARTBEAT_*` key: (key, meaning and default). The docs table is
/// this list plus [`crate::config::NATS_KEYS`].
pub const KEYS: &[(&str, &str)] = &[
    (
        KEY_INTERVAL,
        "expected beat interval, for beats that do not state one and for the listening window (default `1s`)",
    ),
    (
        KEY_MISSED_BEATS,
        "beat intervals without a beat after which a member leaves (default `3`)",
    ),
    (
        KEY_SYNC_INTERVAL,
        "how often the lease holder restates the member set (default `30s`)",
    ),
    (
        KEY_LEASE_TTL,
        "lease time-to-live, renewed every third of it, at most `10s` (default `6s`)",
    ),
];

/// The heartbeat source's settings.
#[derive(Clone, Debug)]
pub struct HeartbeatConfig {
    /// Ring, NATS server and credentials, producer name.
    pub nats: NatsSettings,
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
        // Its errors name the watcher: the heartbeat source is one of its two sources.
        check_known(map, "watcher", "RINGSIDE_HEARTBEAT_", KEYS)?;
        let duration = |key: &'static str, default: Duration, min: Duration, max: Duration| {
            let Some(raw) = get(map, key) else {
                return Ok(default);
            };
            let d = parse_duration(key, raw)?;
            if d < min || d > max {
                return Err(invalid(
                    key,
                    raw,
                    &format!("expected between {min:?} and {max:?}"),
                ));
            }
            Ok(d)
        };
        let missed_beats = match get(map, KEY_MISSED_BEATS) {
            None => DEFAULT_MISSED_BEATS,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_MISSED_BEATS).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        KEY_MISSED_BEATS,
                        raw,
                        &format!("expected an integer 1..={MAX_MISSED_BEATS}"),
                    ));
                }
            },
        };
        Ok(HeartbeatConfig {
            nats: NatsSettings::from_map(map)?,
            interval: duration(KEY_INTERVAL, DEFAULT_INTERVAL, MIN_INTERVAL, MAX_INTERVAL)?,
            missed_beats,
            sync_interval: duration(
                KEY_SYNC_INTERVAL,
                DEFAULT_SYNC_INTERVAL,
                MIN_SYNC_INTERVAL,
                Duration::MAX,
            )?,
            lease_ttl: duration(
                KEY_LEASE_TTL,
                DEFAULT_LEASE_TTL,
                MIN_LEASE_TTL,
                MAX_LEASE_TTL,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KEY_HOSTNAME, KEY_RING};

    fn parse(pairs: &[(&str, &str)]) -> Result<HeartbeatConfig, ConfigError> {
        HeartbeatConfig::from_map(&ringside_testkit::settings(pairs))
    }

    #[test]
    fn defaults() {
        let c = parse(&[("RINGSIDE_WATCHER_NAMESPACE", "ignored here")]).unwrap();
        assert_eq!(c.nats.ring.as_str(), "default");
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert_eq!(c.missed_beats, 3);
        assert_eq!(c.sync_interval, Duration::from_secs(30));
        assert_eq!(c.lease_ttl, DEFAULT_LEASE_TTL);
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(&[
            (KEY_RING, "blue"),
            (KEY_HOSTNAME, "vm-3"),
            (KEY_INTERVAL, "100ms"),
            (KEY_MISSED_BEATS, "5"),
            (KEY_SYNC_INTERVAL, "2m"),
            (KEY_LEASE_TTL, "900ms"),
        ])
        .unwrap();
        assert_eq!(c.nats.ring.as_str(), "blue");
        assert_eq!(c.nats.producer, "watcher/vm-3");
        assert_eq!(c.interval, Duration::from_millis(100));
        assert_eq!(c.missed_beats, 5);
        assert_eq!(c.sync_interval, Duration::from_secs(120));
        assert_eq!(c.lease_ttl, Duration::from_millis(900));
    }

    #[test]
    fn bad_values_are_errors() {
        for pairs in [
            &[(KEY_INTERVAL, "1ms")][..],
            &[(KEY_INTERVAL, "2m")],
            &[(KEY_INTERVAL, "1")],
            &[(KEY_MISSED_BEATS, "0")],
            &[(KEY_MISSED_BEATS, "101")],
            &[(KEY_MISSED_BEATS, "three")],
            &[(KEY_SYNC_INTERVAL, "10ms")],
            &[(KEY_LEASE_TTL, "11s")],
            &[(KEY_LEASE_TTL, "100ms")],
        ] {
            assert!(
                matches!(parse(pairs), Err(ConfigError::Invalid { .. })),
                "{pairs:?}"
            );
        }
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
