//! The settings both membership sources share, and [`NatsSettings`]: where the
//! membership events go and who publishes them.
//!
//! Every setting is one [`Setting`] constant (key, flag, default, meaning): each
//! source's schema ([`crate::kubernetes::config::SCHEMA`],
//! [`crate::heartbeat::config::SCHEMA`], made by `source_schema!`) lists the shared
//! ones first, then its own; the binary's flags, docs/watcher.md's tables and
//! `ringside up` all come from them.

use ringside_events::RingName;
use ringside_kit::settings::{HOSTNAME, NATS_URL};
use ringside_kit::{ConfigError, Setting, Settings};

/// Password of the `watcher` NATS user (`ServiceUser::Watcher.password_env()`).
pub const NATS_PASSWORD: Setting = Setting::env_only(
    "RINGSIDE_NATS_PASSWORD_WATCHER",
    "connect without credentials",
    "password of the `watcher` NATS user",
);
/// HTTP listen address of `/metrics`, `/livez` and `/readyz`, whichever the source.
pub const METRICS_ADDR: Setting = Setting::new(
    "RINGSIDE_WATCHER_METRICS_ADDR",
    "metrics-addr",
    "127.0.0.1:9421",
    "HTTP listen address of /metrics, /livez, /readyz (port 0 picks a free port)",
);

/// A source's [`ringside_kit::Schema`]: the settings both sources share, then the
/// source's own, which have the key prefix given. Errors name the watcher, whichever
/// the source.
macro_rules! source_schema {
    ($prefix:literal, [$($own:expr),* $(,)?]) => {
        ringside_kit::Schema {
            service: "watcher",
            prefixes: &[$prefix],
            settings: &[
                &ringside_kit::settings::RING,
                &ringside_kit::settings::NATS_URL,
                &$crate::config::NATS_PASSWORD,
                &ringside_kit::settings::HOSTNAME,
                &$crate::config::METRICS_ADDR,
                $($own),*
            ],
        }
    };
}
pub(crate) use source_schema;

/// Where the membership events go and who publishes them: the settings both
/// sources share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSettings {
    /// Ring name: part of subjects and message ids.
    pub ring: RingName,
    /// NATS server URL.
    pub url: String,
    /// Password of the `watcher` NATS user; `None` connects without credentials.
    pub password: Option<String>,
    /// Producer recorded in every event: `watcher/<host name>`, or `watcher` without
    /// one.
    pub producer: String,
}

impl NatsSettings {
    /// Reads the ring, NATS and host name settings.
    pub fn from_settings(s: &Settings<'_>) -> Result<NatsSettings, ConfigError> {
        Ok(NatsSettings {
            ring: s.ring()?,
            url: s.parse(&NATS_URL)?,
            password: s.secret(&NATS_PASSWORD),
            producer: match s.given(&HOSTNAME) {
                Some(host) => format!("watcher/{host}"),
                None => "watcher".to_owned(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_key_is_the_one_the_server_configs_use() {
        assert_eq!(
            NATS_PASSWORD.key,
            ringside_events::ServiceUser::Watcher.password_env()
        );
    }
}
