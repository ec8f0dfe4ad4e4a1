//! [`WatcherConfig`]: the Kubernetes watcher's settings, and [`NatsSettings`], what
//! both membership sources need to reach NATS; parsed from a map of strings.
//!
//! The binary passes its environment as the map; tests pass a literal map (never
//! `set_var`). Every key is listed in [`KEYS`] with its meaning and default, and a
//! misspelled `RINGSIDE_WATCHER_*` key is an error rather than a silently ignored
//! setting. Keys of other services in the same map are ignored. The heartbeat source's
//! keys live in [`crate::heartbeat::config`] (prefix `RINGSIDE_HEARTBEAT_`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ringside_events::config::{check_known, get, invalid};
use ringside_events::{RingName, ServiceUser};

use crate::kubernetes::member::{
    DEFAULT_PORT_NAME, DEFAULT_WEIGHT_ANNOTATION, MemberRule, PortSource,
};

// The ring, NATS and host name keys (and their defaults) are every service's, and the
// error is the one all services' settings share.
pub use ringside_events::config::{
    ConfigError, DEFAULT_NATS_URL, DEFAULT_RING, KEY_HOSTNAME, KEY_NATS_URL, KEY_RING,
};

/// Password of the `watcher` NATS user (`ServiceUser::Watcher.password_env()`).
pub const KEY_NATS_PASSWORD: &str = "RINGSIDE_NATS_PASSWORD_WATCHER";
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
/// Address of the binary's health endpoint (`/readyz`, `/livez`), for both sources.
pub const KEY_HEALTH_ADDR: &str = "RINGSIDE_WATCHER_HEALTH_ADDR";

/// Default label selector: the node Deployment's pods.
pub const DEFAULT_SELECTOR: &str = "app.kubernetes.io/name=ringside-node";

/// The keys of [`NatsSettings`]: (key, meaning and default).
pub const NATS_KEYS: &[(&str, &str)] = &[
    (KEY_RING, "ring name (default `default`)"),
    (
        KEY_NATS_URL,
        "NATS server URL (default `nats://127.0.0.1:4222`)",
    ),
    (
        KEY_NATS_PASSWORD,
        "password of the `watcher` NATS user (default: connect without credentials)",
    ),
    (
        KEY_HOSTNAME,
        "host name, recorded as the producer `watcher/<name>` (default `watcher`)",
    ),
];

/// Every `RINGSIDE_WATCHER_*` key the Kubernetes watcher reads: (key, meaning and
/// default). The docs table is this list plus [`NATS_KEYS`].
pub const KEYS: &[(&str, &str)] = &[
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
    (
        KEY_HEALTH_ADDR,
        "address of `ringside watcher`'s `/readyz` and `/livez`, both sources (default: none)",
    ),
];

/// Where the membership events go and who publishes them: the settings both
/// sources share.
#[derive(Clone, Debug)]
pub struct NatsSettings {
    /// Ring name: part of subjects and message ids.
    pub ring: RingName,
    /// NATS server URL.
    pub url: String,
    /// Password of the `watcher` NATS user; `None` connects without credentials.
    pub password: Option<String>,
    /// Producer recorded in every event (`watcher/<host name>`).
    pub producer: String,
}

impl NatsSettings {
    /// Parses [`NATS_KEYS`] from `map`.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<NatsSettings, ConfigError> {
        let ring =
            RingName::new(get(map, KEY_RING).unwrap_or(DEFAULT_RING)).map_err(ConfigError::Ring)?;
        Ok(NatsSettings {
            ring,
            url: get(map, KEY_NATS_URL)
                .unwrap_or(DEFAULT_NATS_URL)
                .to_owned(),
            // Not trimmed or filtered like the others: a password is taken as given.
            password: map.get(KEY_NATS_PASSWORD).cloned(),
            producer: match get(map, KEY_HOSTNAME) {
                Some(host) => format!("watcher/{host}"),
                None => "watcher".to_owned(),
            },
        })
    }

    /// Connect options: the `watcher` user's credentials and inbox prefix when a
    /// password is set.
    pub fn connect_options(&self) -> async_nats::ConnectOptions {
        match &self.password {
            Some(password) => ServiceUser::Watcher.connect_options(password.clone()),
            None => async_nats::ConnectOptions::new().name("ringside-watcher"),
        }
    }
}

/// The Kubernetes watcher's settings.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Ring, NATS server and credentials, producer name.
    pub nats: NatsSettings,
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
        check_known(map, "watcher", "RINGSIDE_WATCHER_", KEYS)?;
        let get = |key: &str| get(map, key);

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
            nats: NatsSettings::from_map(map)?,
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

/// The health endpoint address of `ringside watcher` ([`KEY_HEALTH_ADDR`]), if set.
pub fn health_addr(map: &BTreeMap<String, String>) -> Result<Option<SocketAddr>, ConfigError> {
    get(map, KEY_HEALTH_ADDR)
        .map(|raw| {
            raw.parse().map_err(|_| {
                invalid(
                    KEY_HEALTH_ADDR,
                    raw,
                    "expected ip:port, e.g. 127.0.0.1:9430",
                )
            })
        })
        .transpose()
}

/// Parses a duration written as an integer with a unit: `250ms`, `1s`, `2m`.
pub(crate) fn parse_duration(key: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| invalid(key, raw, "expected an integer with a unit: 250ms, 1s, 2m"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(invalid(key, raw, "expected a unit: ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<WatcherConfig, ConfigError> {
        WatcherConfig::from_map(&ringside_testkit::settings(pairs))
    }

    #[test]
    fn defaults() {
        let c = parse(&[("PATH", "/usr/bin"), ("RINGSIDE_OTHER", "x")]).unwrap();
        assert_eq!(c.nats.ring.as_str(), "default");
        assert_eq!(c.nats.password, None);
        assert_eq!(c.nats.producer, "watcher");
        assert_eq!(c.nats.url, DEFAULT_NATS_URL);
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
        assert_eq!(c.nats.ring.as_str(), "blue");
        assert_eq!(c.nats.password.as_deref(), Some(" secret "));
        assert_eq!(c.nats.producer, "watcher/pod-7");
        assert_eq!(c.nats.url, "nats://10.0.0.1:4222");
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

    #[test]
    fn the_health_address_is_optional_and_checked() {
        let map = |v: &str| BTreeMap::from([(KEY_HEALTH_ADDR.to_owned(), v.to_owned())]);
        assert_eq!(health_addr(&BTreeMap::new()).unwrap(), None);
        assert_eq!(
            health_addr(&map("127.0.0.1:9430")).unwrap(),
            Some("127.0.0.1:9430".parse().unwrap())
        );
        assert!(health_addr(&map("localhost")).is_err());
        // Known to the Kubernetes watcher's key check.
        assert!(WatcherConfig::from_map(&map("127.0.0.1:0")).is_ok());
    }

    #[test]
    fn durations_need_an_integer_and_a_unit() {
        assert_eq!(
            parse_duration("K", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("K", "3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("K", "2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "3", "s", "1.5s", "-1s", "3h", "1 sec"] {
            assert!(
                matches!(
                    parse_duration("K", bad),
                    Err(ConfigError::Invalid { key: "K", .. })
                ),
                "{bad:?}"
            );
        }
    }
}
