//! ringside-watcher: the Kubernetes membership source.
//!
//! Watches the node pods of one namespace (label selector, kube-rs watcher) and turns
//! them into membership changes for one ring: a full sync after every list, joins and
//! leaves in between, each under a deterministic message id so that retries and
//! restarts never store a fact twice.
//!
//! # Layout
//! - [`member`]: the membership rule (pod -> [`Member`] or why not). Pure.
//! - [`tracker`]: [`PodTracker`], watcher events -> [`MembershipChange`]s with their
//!   message ids. Pure, synchronous, unit-tested without any server.
//! - [`config`]: [`WatcherConfig`] parsed from a map of strings.
//! - [`source`]: the Kubernetes edge: client discovery and [`membership_changes`].
//!
//! # How it fits
//! The watcher only produces membership events; the reducer folds them into the ring.
//! Its whole view of Kubernetes is list + watch of pods, so it needs nothing but
//! get/list/watch on pods in its namespace (see `docs/watcher.md`).

pub mod config;
pub mod member;
pub mod source;
pub mod tracker;

pub use config::{ConfigError, WatcherConfig};
pub use member::{Member, MemberRule, NotMember, PodState, PortSource};
pub use source::{kube_client, membership_changes, pod_api};
pub use tracker::{Change, MembershipChange, PodTracker, SyncCause};

/// Errors that stop the watcher. Kubernetes API errors after start-up are not among
/// them: the watch recovers with backoff and logs them.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// The configuration map was rejected.
    #[error("watcher configuration: {0}")]
    Config(#[from] ConfigError),
    /// Neither an in-cluster service account nor a kubeconfig was found.
    #[error("no Kubernetes configuration (in-cluster: {in_cluster}; kubeconfig: {kubeconfig})")]
    NoKubeConfig {
        /// Why the in-cluster configuration failed.
        in_cluster: String,
        /// Why the kubeconfig failed.
        #[source]
        kubeconfig: kube::config::KubeconfigError,
    },
    /// The Kubernetes client could not be built from its configuration.
    #[error("building the Kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),
}
