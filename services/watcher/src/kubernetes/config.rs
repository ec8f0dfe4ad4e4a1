//! [`KubernetesConfig`]: the Kubernetes source's settings, parsed from a map of strings.
//!
//! Every setting is one [`Setting`] constant in [`SCHEMA`]: the shared ones of
//! [`crate::config`], then the `RINGSIDE_WATCHER_*` ones below. The binary passes its
//! environment with the flags laid over it; tests pass a literal map (never
//! `set_var`). A misspelled `RINGSIDE_WATCHER_*` key is an error rather than a
//! silently ignored setting; keys of other services (and of the heartbeat source) are
//! ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ringside_kit::settings::invalid;
use ringside_kit::{ConfigError, Schema, Setting, Settings};

use super::member::{DEFAULT_PORT_NAME, DEFAULT_WEIGHT_ANNOTATION, MemberRule, PortSource};
use crate::config::{METRICS_ADDR, NatsSettings, source_schema};

/// Namespace whose pods are watched.
pub const NAMESPACE: Setting = Setting::optional(
    "RINGSIDE_WATCHER_NAMESPACE",
    "namespace",
    "the service account's namespace (in a pod), else the kubeconfig context's",
    "namespace to watch",
);
/// Label selector of the node pods.
pub const SELECTOR: Setting = Setting::new(
    "RINGSIDE_WATCHER_SELECTOR",
    "selector",
    "app.kubernetes.io/name=ringside-node",
    "label selector of the node pods",
);
/// Fixed member port (excludes [`PORT_NAME`]).
pub const PORT: Setting = Setting::optional(
    "RINGSIDE_WATCHER_PORT",
    "port",
    "use the named port",
    "member port for every pod (excludes `RINGSIDE_WATCHER_PORT_NAME`)",
);
/// Name of the container port carrying the member port.
pub const PORT_NAME: Setting = Setting::new(
    "RINGSIDE_WATCHER_PORT_NAME",
    "port-name",
    DEFAULT_PORT_NAME,
    "container port name carrying the member port",
);
/// Annotation holding a pod's weight.
pub const WEIGHT_ANNOTATION: Setting = Setting::new(
    "RINGSIDE_WATCHER_WEIGHT_ANNOTATION",
    "weight-annotation",
    DEFAULT_WEIGHT_ANNOTATION,
    "pod annotation holding the member weight",
);
/// Explicit Kubernetes API URL (skips in-cluster and kubeconfig discovery).
pub const KUBE_API_URL: Setting = Setting::optional(
    "RINGSIDE_WATCHER_KUBE_API_URL",
    "kube-api-url",
    "in-cluster config, then kubeconfig",
    "Kubernetes API URL (tests point it at a fake)",
);

/// Every setting of the Kubernetes source, in the order docs/watcher.md lists them.
pub const SCHEMA: Schema = source_schema!(
    "RINGSIDE_WATCHER_",
    [
        &NAMESPACE,
        &SELECTOR,
        &PORT,
        &PORT_NAME,
        &WEIGHT_ANNOTATION,
        &KUBE_API_URL,
    ]
);

/// The Kubernetes source's settings.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// Ring, NATS server and credentials, producer name.
    pub nats: NatsSettings,
    /// HTTP (metrics, health) listen address.
    pub metrics_addr: SocketAddr,
    /// Namespace to watch; `None` means the client's default namespace.
    pub namespace: Option<String>,
    /// Label selector of the node pods.
    pub label_selector: String,
    /// Port and weight sources of the membership rule.
    pub rule: MemberRule,
    /// Explicit API URL; `None` means in-cluster config, then kubeconfig.
    pub kube_api_url: Option<http::Uri>,
}

impl KubernetesConfig {
    /// Parses the settings from `map` (typically the process environment).
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<KubernetesConfig, ConfigError> {
        let s = Settings::new(&SCHEMA, map)?;
        // The default port name must not make a given fixed port a conflict: only
        // given values count.
        let port = match (s.given(&PORT), s.given(&PORT_NAME)) {
            (Some(_), Some(_)) => return Err(ConfigError::Conflict(PORT.key, PORT_NAME.key)),
            (Some(_), None) => PortSource::Fixed(s.number(&PORT, 1..=u16::MAX)?),
            (None, _) => PortSource::Named(s.parse(&PORT_NAME)?),
        };
        let kube_api_url = s
            .given(&KUBE_API_URL)
            .map(|raw| match raw.parse::<http::Uri>() {
                Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => Ok(uri),
                Ok(_) => Err(invalid(
                    KUBE_API_URL.key,
                    raw,
                    "expected http(s)://host:port",
                )),
                Err(err) => Err(invalid(KUBE_API_URL.key, raw, err.to_string())),
            })
            .transpose()?;
        Ok(KubernetesConfig {
            nats: NatsSettings::from_settings(&s)?,
            metrics_addr: s.addr(&METRICS_ADDR)?,
            namespace: s.given(&NAMESPACE).map(str::to_owned),
            label_selector: s.parse(&SELECTOR)?,
            rule: MemberRule {
                port,
                weight_annotation: s.parse(&WEIGHT_ANNOTATION)?,
            },
            kube_api_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NATS_PASSWORD;
    use ringside_kit::settings::{HOSTNAME, NATS_URL, RING};
    use ringside_testkit::settings as map;

    fn parse(pairs: &[(&str, &str)]) -> Result<KubernetesConfig, ConfigError> {
        KubernetesConfig::from_map(&map(pairs))
    }

    #[test]
    fn defaults() {
        let c = parse(&[("PATH", "/usr/bin"), ("RINGSIDE_OTHER", "x")]).unwrap();
        assert_eq!(c.nats.ring.as_str(), "default");
        assert_eq!(c.nats.password, None);
        assert_eq!(c.nats.producer, "watcher");
        assert_eq!(c.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(c.metrics_addr, "127.0.0.1:9421".parse().unwrap());
        assert_eq!(c.namespace, None);
        assert_eq!(c.label_selector, "app.kubernetes.io/name=ringside-node");
        assert_eq!(c.rule, MemberRule::default());
        assert!(c.kube_api_url.is_none());
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(&[
            (RING.key, "blue"),
            (NATS_PASSWORD.key, " secret "),
            (HOSTNAME.key, "pod-7"),
            (NATS_URL.key, "nats://10.0.0.1:4222"),
            (METRICS_ADDR.key, "0.0.0.0:9000"),
            (NAMESPACE.key, "ring"),
            (SELECTOR.key, "app=x,tier in (a)"),
            (PORT.key, "7000"),
            (WEIGHT_ANNOTATION.key, "example.com/w"),
            (KUBE_API_URL.key, "http://127.0.0.1:6443"),
        ])
        .unwrap();
        assert_eq!(c.nats.ring.as_str(), "blue");
        assert_eq!(c.nats.password.as_deref(), Some(" secret "));
        assert_eq!(c.nats.producer, "watcher/pod-7");
        assert_eq!(c.nats.url, "nats://10.0.0.1:4222");
        assert_eq!(c.metrics_addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(c.namespace.as_deref(), Some("ring"));
        assert_eq!(c.label_selector, "app=x,tier in (a)");
        assert_eq!(c.rule.port, PortSource::Fixed(7000));
        assert_eq!(c.rule.weight_annotation, "example.com/w");
        assert_eq!(
            c.kube_api_url.map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:6443/")
        );
        let named = parse(&[(PORT_NAME.key, "grpc")]).unwrap();
        assert_eq!(named.rule.port, PortSource::Named("grpc".into()));
    }

    #[test]
    fn bad_values_are_errors() {
        crate::service::assert_invalid::<crate::kubernetes::Pods>(&[
            (PORT.key, "0"),
            (PORT.key, "70000"),
            (PORT.key, "http"),
            (KUBE_API_URL.key, "not a url"),
            (KUBE_API_URL.key, "/relative"),
            (METRICS_ADDR.key, "localhost:1"),
        ]);
        assert!(matches!(
            parse(&[(RING.key, "a.b")]),
            Err(ConfigError::Ring(_))
        ));
        assert!(matches!(
            parse(&[(PORT.key, "7000"), (PORT_NAME.key, "grpc")]),
            Err(ConfigError::Conflict(..))
        ));
    }

    #[test]
    fn misspelled_keys_are_refused_and_the_heartbeat_keys_ignored() {
        let err = parse(&[("RINGSIDE_WATCHER_SELECTR", "a=b")]).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
        assert!(err.to_string().contains(SELECTOR.key), "{err}");
        parse(&[("RINGSIDE_HEARTBEAT_LEASE_TTL", "2s")]).unwrap();
    }
}
