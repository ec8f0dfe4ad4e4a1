//! Service settings from a map of strings: the keys every service shares, the one
//! [`ConfigError`], and the helpers each service's `from_map` is built from.
//!
//! # How it fits
//! Every service parses its settings from a map (the binary passes its environment,
//! tests a literal map; never `set_var`). The reducer and the membership sources read
//! the same ring and NATS keys and refuse a misspelled key of their own prefix the
//! same way, so the rules live here once; each service's `config` module keeps its
//! own keys, defaults and `from_map`, and re-exports what it uses from here.

use std::collections::BTreeMap;

use crate::names::NameError;

/// Ring a service works on (shared by every service).
pub const KEY_RING: &str = "RINGSIDE_RING";
/// NATS server URL (shared by every service).
pub const KEY_NATS_URL: &str = "RINGSIDE_NATS_URL";
/// Host name (the pod name in Kubernetes).
pub const KEY_HOSTNAME: &str = "HOSTNAME";

/// Default ring name.
pub const DEFAULT_RING: &str = "default";
/// Default NATS URL.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Why a configuration map was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The ring name is not valid.
    #[error("invalid {KEY_RING}")]
    Ring(#[source] NameError),
    /// A value that does not parse or is out of range.
    #[error("invalid {key}={value:?}: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key with the service's prefix that the service does not know (probably a typo).
    #[error("unknown {service} setting {key} (known: {known})")]
    UnknownKey {
        /// The service that refused it (`reducer`, `watcher`).
        service: &'static str,
        /// The unknown key.
        key: String,
        /// The known keys, comma-separated.
        known: String,
    },
    /// Two settings that exclude each other.
    #[error("{0} and {1} exclude each other: set one")]
    Conflict(&'static str, &'static str),
}

/// A trimmed, non-empty value of `key`: an empty setting means the default.
pub fn get<'a>(map: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    map.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// Refuses keys with `prefix` that are not in `keys` (key, meaning): a typo must not
/// silently fall back to a default. `service` names the refusing service in the error.
pub fn check_known(
    map: &BTreeMap<String, String>,
    service: &'static str,
    prefix: &str,
    keys: &[(&str, &str)],
) -> Result<(), ConfigError> {
    match map
        .keys()
        .find(|k| k.starts_with(prefix) && !keys.iter().any(|(known, _)| known == k))
    {
        Some(key) => Err(ConfigError::UnknownKey {
            service,
            key: key.clone(),
            known: keys.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "),
        }),
        None => Ok(()),
    }
}

/// A [`ConfigError::Invalid`].
pub fn invalid(key: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_testkit::settings as map;

    #[test]
    fn get_trims_and_treats_blank_as_unset() {
        let m = map(&[("A", " x "), ("B", "  ")]);
        assert_eq!(get(&m, "A"), Some("x"));
        assert_eq!(get(&m, "B"), None);
        assert_eq!(get(&m, "C"), None);
    }

    #[test]
    fn unknown_keys_of_the_prefix_are_refused_with_the_known_ones() {
        const KEYS: &[(&str, &str)] = &[("X_A", "a"), ("X_B", "b")];
        assert!(check_known(&map(&[("X_A", "1"), ("Y_C", "2")]), "x", "X_", KEYS).is_ok());
        let err = check_known(&map(&[("X_C", "1")]), "x", "X_", KEYS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown x setting X_C (known: X_A, X_B)",
            "{err:?}"
        );
    }
}
