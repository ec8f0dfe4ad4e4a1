//! [`WatcherError`]: why a watcher stops, whichever the source.

use ringside_events::PublishError;
use ringside_kit::ServiceError;

/// Errors that stop the watcher. Kubernetes API errors after start-up are not among
/// them: the watch recovers with backoff and logs them.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// Binding, serving, NATS or metrics failed (as for any service).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Neither an in-cluster service account nor a kubeconfig was found.
    #[error(
        "no Kubernetes configuration: not in a cluster ({in_cluster}), and no usable kubeconfig"
    )]
    NoKubeConfig {
        /// Why the in-cluster configuration failed.
        in_cluster: String,
        /// Why the kubeconfig failed.
        #[source]
        kubeconfig: kube::config::KubeconfigError,
    },
    /// The Kubernetes client could not be built from its configuration.
    #[error("building the Kubernetes client")]
    KubeClient(#[source] kube::Error),
    /// Opening the events stream to read the last membership event failed.
    #[error("opening the events stream")]
    HeadStream(#[source] async_nats::jetstream::context::GetStreamError),
    /// Reading the last stored membership event (the head) failed.
    #[error("reading the last membership event")]
    HeadRead(#[source] async_nats::jetstream::stream::DirectGetError),
    /// kube's pod watch ended, which it never does by design.
    #[error("the pod watch ended")]
    WatchEnded,
    /// A change could not be turned into a valid event (a bug, not bad luck).
    #[error("membership change is not a valid event")]
    InvalidEvent(#[from] ringside_events::InvalidEvent),
    /// Publishing failed for a reason retrying cannot fix.
    #[error("publishing a membership event")]
    Publish(#[from] PublishError),
    /// Subscribing to the heartbeat subject failed.
    #[error("subscribing to heartbeats")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// The heartbeat subscription ended (the client was closed).
    #[error("the heartbeat subscription ended")]
    SubscriptionEnded,
    /// The lease bucket could not be opened (not provisioned, or no permission).
    #[error(
        "opening the lease bucket {bucket} (provision the streams and buckets first)",
        bucket = ringside_events::subject::KV_LEASES
    )]
    LeaseBucket(#[source] async_nats::jetstream::context::KeyValueError),
    /// The lease value could not be encoded (a bug).
    #[error("encoding the lease value")]
    LeaseValue(#[source] serde_json::Error),
    /// The lease keeper task ended while the watcher ran (it panicked).
    #[error("the lease keeper stopped")]
    LeaseKeeperEnded,
}
