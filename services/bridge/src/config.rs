//! [`BridgeConfig`]: the bridge's settings, each one [`Setting`] constant in [`SCHEMA`]
//! (key, flag, default, meaning): the flags, docs/bridge.md's table and `ringside up`
//! come from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ringside_events::RingName;
use ringside_kit::settings::{NATS_URL, RING};
use ringside_kit::{ConfigError, Schema, Setting, Settings};

/// Password of the `bridge` NATS user.
pub const NATS_PASSWORD: Setting = Setting::env_only(
    "RINGSIDE_NATS_PASSWORD_BRIDGE",
    "connect without credentials",
    "password of the `bridge` NATS user",
);
/// The one HTTP listener: dashboard, WebSocket, JSON API, probes and metrics.
pub const ADDR: Setting = Setting::new(
    "RINGSIDE_BRIDGE_ADDR",
    "addr",
    "127.0.0.1:9480",
    "HTTP listen address of the dashboard, /ws, /api/*, /metrics, /livez, /readyz (port 0 picks a free port)",
);
/// Serve the dashboard from a folder instead of the files built into the binary.
pub const DASHBOARD_DIR: Setting = Setting::optional(
    "RINGSIDE_BRIDGE_DASHBOARD_DIR",
    "dashboard-dir",
    "the files built into the binary",
    "serve the dashboard from this folder (for working on it without a rebuild)",
);
/// WebSocket clients at once.
pub const MAX_CLIENTS: Setting = Setting::new(
    "RINGSIDE_BRIDGE_MAX_CLIENTS",
    "max-clients",
    "2000",
    "WebSocket clients at once; one more is refused with 503",
);
/// Frames a client may fall behind before it is re-synced.
pub const QUEUE: Setting = Setting::new(
    "RINGSIDE_BRIDGE_QUEUE",
    "queue",
    "1024",
    "frames a client may fall behind the newest before it gets a resync and a fresh snapshot",
);
/// Silence after which a client is closed.
pub const IDLE_TIMEOUT: Setting = Setting::new(
    "RINGSIDE_BRIDGE_IDLE_TIMEOUT",
    "idle-timeout",
    "60s",
    "a client that sends nothing (the dashboard pings every 15 s) for this long is closed",
);
/// Time a frame may take to be written to a client.
pub const SEND_TIMEOUT: Setting = Setting::new(
    "RINGSIDE_BRIDGE_SEND_TIMEOUT",
    "send-timeout",
    "10s",
    "a client that cannot take one frame within this time is closed",
);
/// Origins allowed besides the bridge's own.
pub const ALLOWED_ORIGINS: Setting = Setting::optional(
    "RINGSIDE_BRIDGE_ALLOWED_ORIGINS",
    "allowed-origins",
    "only the page's own origin",
    "comma-separated origins (`https://ops.example`) allowed to open /ws besides the bridge's own",
);
/// Copies of each key, for the key probe.
pub const REPLICAS: Setting = Setting::new(
    "RINGSIDE_BRIDGE_REPLICAS",
    "replicas",
    "2",
    "copies of each key (owner and successors) the key probe names; the nodes' R",
);

/// Every setting of the bridge.
pub const SCHEMA: Schema = Schema {
    service: "bridge",
    prefixes: &["RINGSIDE_BRIDGE_"],
    settings: &[
        &RING,
        &NATS_URL,
        &NATS_PASSWORD,
        &ADDR,
        &DASHBOARD_DIR,
        &MAX_CLIENTS,
        &QUEUE,
        &IDLE_TIMEOUT,
        &SEND_TIMEOUT,
        &ALLOWED_ORIGINS,
        &REPLICAS,
    ],
};

/// Largest frame a browser may send (it only sends pings).
pub const MAX_INBOUND_FRAME: usize = 4096;

/// The bridge's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BridgeConfig {
    /// The ring.
    pub ring: RingName,
    /// NATS server URL.
    pub nats_url: String,
    /// Password of the `bridge` user; `None` connects without credentials.
    pub nats_password: Option<String>,
    /// Listen address.
    pub addr: SocketAddr,
    /// Serve the dashboard from here instead of the built-in files.
    pub dashboard_dir: Option<PathBuf>,
    /// WebSocket clients at once.
    pub max_clients: usize,
    /// Frames a client may fall behind.
    pub queue: usize,
    /// Silence after which a client is closed.
    pub idle_timeout: Duration,
    /// Time one frame may take to write.
    pub send_timeout: Duration,
    /// Origins allowed besides the page's own.
    pub allowed_origins: Vec<String>,
    /// Copies of each key.
    pub replicas: usize,
}

impl BridgeConfig {
    /// Parses the settings from `map`.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<BridgeConfig, ConfigError> {
        let s = Settings::new(&SCHEMA, map)?;
        let allowed_origins = s
            .get(&ALLOWED_ORIGINS)
            .unwrap_or_default()
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect::<Vec<_>>();
        if let Some(bad) = allowed_origins
            .iter()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")))
        {
            return Err(ringside_kit::settings::invalid(
                ALLOWED_ORIGINS.key,
                bad,
                "expected origins such as https://ops.example",
            ));
        }
        Ok(BridgeConfig {
            ring: s.ring()?,
            nats_url: s.parse(&NATS_URL)?,
            nats_password: s.secret(&NATS_PASSWORD),
            addr: s.addr(&ADDR)?,
            dashboard_dir: s.get(&DASHBOARD_DIR).map(PathBuf::from),
            max_clients: s.number(&MAX_CLIENTS, 1..=100_000)?,
            queue: s.number(&QUEUE, 16..=1_000_000)?,
            idle_timeout: s.duration(
                &IDLE_TIMEOUT,
                Duration::from_secs(1)..=Duration::from_secs(3600),
            )?,
            send_timeout: s.duration(
                &SEND_TIMEOUT,
                Duration::from_millis(100)..=Duration::from_secs(600),
            )?,
            allowed_origins,
            replicas: s.number(&REPLICAS, 1..=16)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_testkit::settings as map;

    #[test]
    fn defaults_and_bad_values() {
        let c = BridgeConfig::from_map(&map(&[])).unwrap();
        assert_eq!(c.addr, "127.0.0.1:9480".parse().unwrap());
        assert_eq!((c.max_clients, c.queue, c.replicas), (2000, 1024, 2));
        assert!(c.allowed_origins.is_empty() && c.dashboard_dir.is_none());
        let c = BridgeConfig::from_map(&map(&[(
            ALLOWED_ORIGINS.key,
            "https://a.example/, http://b:8080",
        )]))
        .unwrap();
        assert_eq!(c.allowed_origins, ["https://a.example", "http://b:8080"]);
        for (key, value) in [
            (MAX_CLIENTS.key, "0"),
            (QUEUE.key, "1"),
            (IDLE_TIMEOUT.key, "0s"),
            (ALLOWED_ORIGINS.key, "a.example"),
            (REPLICAS.key, "0"),
            ("RINGSIDE_BRIDGE_ORIGINS", "x"),
        ] {
            let err = BridgeConfig::from_map(&map(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn the_docs_list_every_setting() {
        let docs = include_str!("../../../docs/bridge.md");
        let table = SCHEMA.markdown_table();
        assert!(
            docs.contains(&table),
            "docs/bridge.md must contain:\n{table}"
        );
    }
}
