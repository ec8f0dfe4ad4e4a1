//! The Kubernetes edge: client construction and the stream of membership changes.
//!
//! [`pod_events`] runs kube's watcher (list, then watch; re-list after a 410 Gone or a
//! desync; bookmarks on; `default_backoff` between failed attempts); the caller feeds
//! the events to a [`super::PodTracker`]. API errors never end the stream: the watcher
//! recovers by itself, and each error is counted and logged at a level saying who must
//! act.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::config::KubernetesConfig;
use crate::WatcherError;
use crate::metrics::{KubernetesMetrics, WatchError};

/// Builds the API client: the configured URL if any, else the in-cluster service
/// account, else the kubeconfig. (kube's `Client::try_default` tries the kubeconfig
/// first; a pod must never pick up a stray kubeconfig over its own service account.)
pub async fn kube_client(config: &KubernetesConfig) -> Result<Client, WatcherError> {
    // kube talks TLS through rustls; with more than one crypto backend in the tree,
    // rustls refuses to pick one by itself. Installing twice is a harmless no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube_config = match &config.kube_api_url {
        Some(url) => kube::Config::new(url.clone()),
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(in_cluster) => {
                kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(|kubeconfig| WatcherError::NoKubeConfig {
                        in_cluster: in_cluster.to_string(),
                        kubeconfig,
                    })?
            }
        },
    };
    Client::try_from(kube_config).map_err(WatcherError::KubeClient)
}

/// The pod API the watcher uses: the configured namespace, else the client's default.
pub fn pod_api(client: Client, config: &KubernetesConfig) -> Api<Pod> {
    match &config.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::default_namespaced(client),
    }
}

/// Watches the pods matching `label_selector`: kube's watcher events, forever (the
/// stream ends only when dropped). Errors are counted on `metrics`, logged here and
/// retried with backoff, so the caller sees only events.
pub fn pod_events(
    pods: Api<Pod>,
    label_selector: &str,
    metrics: KubernetesMetrics,
) -> impl Stream<Item = watcher::Event<Pod>> + Send + use<> {
    // MostRecent (kube's default) makes every list a quorum read: a sync must never
    // be older than a join already published.
    let watch_config = watcher::Config::default().labels(label_selector);
    watcher(pods, watch_config)
        .default_backoff()
        .filter_map(move |event| {
            futures::future::ready(match event {
                Ok(event) => Some(event),
                Err(err) => {
                    metrics.watch_error(log_watch_error(&err));
                    None
                }
            })
        })
}

/// Logs a watch error at the level that says who must act; returns its kind.
fn log_watch_error(err: &watcher::Error) -> WatchError {
    let status = match err {
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    };
    match status {
        Some(410) => {
            tracing::info!(error = %err, "Watch expired, re-listing pods.");
            WatchError::Expired
        }
        Some(401 | 403) => {
            tracing::error!(
                error = %err,
                "Kubernetes API refused the watcher: check its RBAC (get, list, watch pods)."
            );
            WatchError::Refused
        }
        _ => {
            tracing::warn!(error = %err, "Kubernetes API error, retrying with backoff.");
            WatchError::Other
        }
    }
}
