//! [`WatcherConfig`]: the watcher's settings, parsed from a map of strings.
//!
//! The binary passes its environment as the map; tests pass a literal map (never
//! `set_var`). Every key is listed in [`KEYS`] with its meaning and default, and a
//! misspelled `RINGSIDE_WATCHER_*` key is an error rather than a silently ignored
//! setting. Keys of other services in the same map are ignored.

use std::collections::BTreeMap;

use ringside_events::{NameError, RingName};

use crate::member::{DEFAULT_PORT_NAME, DEFAULT_WEIGHT_ANNOTATION, MemberRule, PortSource};

/// Ring whose membership the watcher publishes.
pub const KEY_RING: &str = "RINGSIDE_RING";
/// NATS server URL.
pub const KEY_NATS_URL: &str = "RINGSIDE_NATS_URL";
/// Password of the `watcher` NATS user (`ServiceUser::Watcher.password_env()`).
pub const KEY_NATS_PASSWORD: &str = "RINGSIDE_NATS_PASSWORD_WATCHER";
/// Host name (the pod name in Kubernetes), recorded as the events' producer.
pub const KEY_HOSTNAME: &str = "HOSTNAME";
/// Namespace whose pods are watched.
pub const KEY_NAMESPACE: &str = "RINGSIDE_WATCHER_NAMESPACE";
/// Label selector of the node pods.
pub const KEY_SELECTOR: &str = "RINGSIDE_WATCHER_SELECTOR";
/// Fixed member port (excludes [`KEY_PORT_NAME`]).
pub const KEY_PORT: &str = "RINGSIDE_WATCHER_PORT";
/// Name of the container port carrying the member port.
pub const KEY_PORT_NAME: &str = "RINGSIDE_WATCHER_PORT_NAME";
/// Annotation holding a pod's weight.
pub const KEY_WEIGHT_ANNOTATION: &str = "RINGSIDE_WATCHER_WEIGHT_ANNOTATION";
/// Explicit Kubernetes API URL (skips in-cluster and kubeconfig discovery).
pub const KEY_KUBE_API_URL: &str = "RINGSIDE_WATCHER_KUBE_API_URL";

/// Default ring name.
pub const DEFAULT_RING: &str = "default";
/// Default NATS URL.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default label selector: the node Deployment's pods.
pub const DEFAULT_SELECTOR: &str = "app.kubernetes.io/name=ringside-node";

/// Every key the watcher reads: (key, meaning and default). The docs table is this list.
pub const KEYS: &[(&str, &str)] = &[
    (KEY_RING, "ring name (default `default`)"),
    (
        KEY_NATS_URL,
        "NATS server URL (default `nats://127.0.0.1:4222`)",
    ),
    (
        KEY_NAMESPACE,
        "namespace to watch (default: the service account's, or the kubeconfig context's)",
    ),
    (
        KEY_SELECTOR,
        "label selector of the node pods (default `app.kubernetes.io/name=ringside-node`)",
    ),
    (
        KEY_PORT,
        "member port for every pod (default: use the named port)",
    ),
    (
        KEY_PORT_NAME,
        "container port name carrying the member port (default `ringside`)",
    ),
    (
        KEY_WEIGHT_ANNOTATION,
        "pod annotation with the member weight (default `ringside.io/weight`)",
    ),
    (
        KEY_KUBE_API_URL,
        "Kubernetes API URL, e.g. a test fake (default: in-cluster, then kubeconfig)",
    ),
];

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
    /// A `RINGSIDE_WATCHER_*` key the watcher does not know (probably a typo).
    #[error("unknown watcher setting {key} (known: {known})")]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// The known keys, comma-separated.
        known: String,
    },
    /// Two settings that exclude each other.
    #[error("{0} and {1} exclude each other: set one")]
    Conflict(&'static str, &'static str),
}

/// The watcher's settings.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Ring name: part of subjects and message ids.
    pub ring: RingName,
    /// NATS server URL.
    pub nats_url: String,
    /// Password of the `watcher` NATS user; `None` connects without credentials.
    pub nats_password: Option<String>,
    /// Producer recorded in every event (`watcher/<host name>`).
    pub producer: String,
    /// Namespace to watch; `None` means the client's default namespace.
    pub namespace: Option<String>,
    /// Label selector of the node pods.
    pub label_selector: String,
    /// Port and weight sources of the membership rule.
    pub rule: MemberRule,
    /// Explicit API URL; `None` means in-cluster config, then kubeconfig.
    pub kube_api_url: Option<http::Uri>,
}

impl WatcherConfig {
    /// Parses the settings from `map` (typically the process environment).
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<WatcherConfig, ConfigError> {
        const PREFIX: &str = "RINGSIDE_WATCHER_";
        if let Some(key) = map
            .keys()
            .find(|k| k.starts_with(PREFIX) && !KEYS.iter().any(|(known, _)| known == k))
        {
            return Err(ConfigError::UnknownKey {
                key: key.clone(),
                known: KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "),
            });
        }
        let get = |key: &str| map.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());

        let ring =
            RingName::new(get(KEY_RING).unwrap_or(DEFAULT_RING)).map_err(ConfigError::Ring)?;

        let port = match (get(KEY_PORT), get(KEY_PORT_NAME)) {
            (Some(_), Some(_)) => return Err(ConfigError::Conflict(KEY_PORT, KEY_PORT_NAME)),
            (Some(raw), None) => match raw.parse::<u16>() {
                Ok(p) if p != 0 => PortSource::Fixed(p),
                _ => return Err(invalid(KEY_PORT, raw, "expected a port number 1..=65535")),
            },
            (None, name) => PortSource::Named(name.unwrap_or(DEFAULT_PORT_NAME).to_owned()),
        };

        let kube_api_url = match get(KEY_KUBE_API_URL) {
            None => None,
            Some(raw) => match raw.parse::<http::Uri>() {
                Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => Some(uri),
                Ok(_) => {
                    return Err(invalid(
                        KEY_KUBE_API_URL,
                        raw,
                        "expected http(s)://host:port",
                    ));
                }
                Err(err) => return Err(invalid(KEY_KUBE_API_URL, raw, &err.to_string())),
            },
        };

        Ok(WatcherConfig {
            ring,
            nats_url: get(KEY_NATS_URL).unwrap_or(DEFAULT_NATS_URL).to_owned(),
            // Not trimmed or filtered like the others: a password is taken as given.
            nats_password: map.get(KEY_NATS_PASSWORD).cloned(),
            producer: match get(KEY_HOSTNAME) {
                Some(host) => format!("watcher/{host}"),
                None => "watcher".to_owned(),
            },
            namespace: get(KEY_NAMESPACE).map(str::to_owned),
            label_selector: get(KEY_SELECTOR).unwrap_or(DEFAULT_SELECTOR).to_owned(),
            rule: MemberRule {
                port,
                weight_annotation: get(KEY_WEIGHT_ANNOTATION)
                    .unwrap_or(DEFAULT_WEIGHT_ANNOTATION)
                    .to_owned(),
            },
            kube_api_url,
        })
    }
}

fn invalid(key: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<WatcherConfig, ConfigError> {
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        WatcherConfig::from_map(&map)
    }

    #[test]
    fn defaults() {
        let c = parse(&[("PATH", "/usr/bin"), ("RINGSIDE_OTHER", "x")]).unwrap();
        assert_eq!(c.ring.as_str(), "default");
        assert_eq!(c.nats_password, None);
        assert_eq!(c.producer, "watcher");
        assert_eq!(c.nats_url, DEFAULT_NATS_URL);
        assert_eq!(c.namespace, None);
        assert_eq!(c.label_selector, DEFAULT_SELECTOR);
        assert_eq!(c.rule, MemberRule::default());
        assert!(c.kube_api_url.is_none());
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(&[
            (KEY_RING, "blue"),
            (KEY_NATS_PASSWORD, " secret "),
            (KEY_HOSTNAME, "pod-7"),
            (KEY_NATS_URL, "nats://10.0.0.1:4222"),
            (KEY_NAMESPACE, "ring"),
            (KEY_SELECTOR, "app=x,tier in (a)"),
            (KEY_PORT, "7000"),
            (KEY_WEIGHT_ANNOTATION, "example.com/w"),
            (KEY_KUBE_API_URL, "http://127.0.0.1:6443"),
        ])
        .unwrap();
        assert_eq!(c.ring.as_str(), "blue");
        assert_eq!(c.nats_password.as_deref(), Some(" secret "));
        assert_eq!(c.producer, "watcher/pod-7");
        assert_eq!(c.nats_url, "nats://10.0.0.1:4222");
        assert_eq!(c.namespace.as_deref(), Some("ring"));
        assert_eq!(c.label_selector, "app=x,tier in (a)");
        assert_eq!(c.rule.port, PortSource::Fixed(7000));
        assert_eq!(c.rule.weight_annotation, "example.com/w");
        assert_eq!(
            c.kube_api_url.map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:6443/")
        );
        let named = parse(&[(KEY_PORT_NAME, "grpc")]).unwrap();
        assert_eq!(named.rule.port, PortSource::Named("grpc".into()));
    }

    #[test]
    fn the_password_key_is_the_one_the_server_configs_use() {
        assert_eq!(
            KEY_NATS_PASSWORD,
            ringside_events::ServiceUser::Watcher.password_env()
        );
    }

    #[test]
    fn bad_values_are_errors() {
        for pairs in [
            &[(KEY_PORT, "0")][..],
            &[(KEY_PORT, "70000")],
            &[(KEY_PORT, "http")],
            &[(KEY_KUBE_API_URL, "not a url")],
            &[(KEY_KUBE_API_URL, "/relative")],
        ] {
            assert!(
                matches!(parse(pairs), Err(ConfigError::Invalid { .. })),
                "{pairs:?}"
            );
        }
        assert!(matches!(
            parse(&[(KEY_RING, "a.b")]),
            Err(ConfigError::Ring(_))
        ));
        assert!(matches!(
            parse(&[(KEY_PORT, "7000"), (KEY_PORT_NAME, "grpc")]),
            Err(ConfigError::Conflict(..))
        ));
        let err = parse(&[("RINGSIDE_WATCHER_SELECTR", "a=b")]).unwrap_err();
        assert!(
            err.to_string().contains("RINGSIDE_WATCHER_SELECTOR"),
            "{err}"
        );
    }
}
