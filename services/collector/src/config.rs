//! [`CollectorConfig`]: the collector's settings, each one [`Setting`] constant in
//! [`SCHEMA`] (key, flag, default, meaning): the flags, docs/metrics.md's table and
//! `ringside up` come from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ringside_events::RingName;
use ringside_kit::settings::{NATS_URL, RING};
use ringside_kit::{ConfigError, Schema, Setting, Settings};

/// Password of the `collector` NATS user.
pub const NATS_PASSWORD: Setting = Setting::env_only(
    "RINGSIDE_NATS_PASSWORD_COLLECTOR",
    "connect without credentials",
    "password of the `collector` NATS user",
);
/// HTTP listen address of `/metrics`, `/livez`, `/readyz`.
pub const METRICS_ADDR: Setting = Setting::new(
    "RINGSIDE_COLLECTOR_METRICS_ADDR",
    "metrics-addr",
    "127.0.0.1:9422",
    "HTTP listen address of /metrics, /livez, /readyz (port 0 picks a free port)",
);
/// How long a node may stay silent before its series leave the page.
pub const STALE_AFTER: Setting = Setting::new(
    "RINGSIDE_COLLECTOR_STALE_AFTER",
    "stale-after",
    "30s",
    "a node that has not reported for this long leaves the per-node series",
);
/// The CPU ratio above which a node counts as busy.
pub const CPU_THRESHOLD: Setting = Setting::new(
    "RINGSIDE_COLLECTOR_CPU_THRESHOLD",
    "cpu-threshold",
    "0.8",
    "CPU, in cores, above which `ringside_collector_node_cpu_over_threshold` is 1",
);

/// Every setting of the collector.
pub const SCHEMA: Schema = Schema {
    service: "collector",
    prefixes: &["RINGSIDE_COLLECTOR_"],
    settings: &[
        &RING,
        &NATS_URL,
        &NATS_PASSWORD,
        &METRICS_ADDR,
        &STALE_AFTER,
        &CPU_THRESHOLD,
    ],
};

/// The collector's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectorConfig {
    /// The ring.
    pub ring: RingName,
    /// NATS server URL.
    pub nats_url: String,
    /// Password of the `collector` user; `None` connects without credentials.
    pub nats_password: Option<String>,
    /// Listen address.
    pub metrics_addr: SocketAddr,
    /// Silence after which a node leaves the series.
    pub stale_after: Duration,
    /// Busy CPU threshold, in cores.
    pub cpu_threshold: f64,
}

impl CollectorConfig {
    /// Parses the settings from `map`.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<CollectorConfig, ConfigError> {
        let s = Settings::new(&SCHEMA, map)?;
        let cpu_threshold: f64 = s.parse(&CPU_THRESHOLD)?;
        if !(cpu_threshold.is_finite() && cpu_threshold > 0.0) {
            return Err(ringside_kit::settings::invalid(
                CPU_THRESHOLD.key,
                &cpu_threshold.to_string(),
                "expected a positive number of cores",
            ));
        }
        Ok(CollectorConfig {
            ring: s.ring()?,
            nats_url: s.parse(&NATS_URL)?,
            nats_password: s.secret(&NATS_PASSWORD),
            metrics_addr: s.addr(&METRICS_ADDR)?,
            stale_after: s.duration(
                &STALE_AFTER,
                Duration::from_secs(1)..=Duration::from_secs(3600),
            )?,
            cpu_threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_testkit::settings as map;

    #[test]
    fn defaults_and_bad_values() {
        let c = CollectorConfig::from_map(&map(&[])).unwrap();
        assert_eq!(c.stale_after, Duration::from_secs(30));
        assert_eq!(c.cpu_threshold, 0.8);
        for (key, value) in [
            (STALE_AFTER.key, "0s"),
            (CPU_THRESHOLD.key, "-1"),
            (CPU_THRESHOLD.key, "NaN"),
            ("RINGSIDE_COLLECTOR_STALE", "1s"),
        ] {
            let err = CollectorConfig::from_map(&map(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn the_docs_list_every_setting() {
        let docs = include_str!("../../../docs/metrics.md");
        let table = SCHEMA.markdown_table();
        assert!(
            docs.contains(&table),
            "docs/metrics.md must contain:\n{table}"
        );
    }
}
