//! ringside-watcher: the membership sources, Kubernetes pods and node heartbeats.
//!
//! The Kubernetes source watches the node pods of one namespace (label selector,
//! kube-rs watcher) and publishes one ring's membership: a full sync after every
//! list, joins and leaves in between. The heartbeat source ([`heartbeat`]) listens to
//! the nodes' core-NATS heartbeats, holds a per-ring lease so that one instance
//! speaks for a ring, and publishes joins, leaves (missed beats, goodbyes) and
//! periodic syncs. Every fact is stored once (its content names it, JetStream drops
//! duplicates), so retries and restarts never store a fact twice.
//!
//! # Layout
//! - [`kubernetes`]: the Kubernetes source (membership rule, pod tracker, kube edge,
//!   run loop).
//! - [`heartbeat`]: the heartbeat source (tracker, lease, run loop) and the
//!   [`heartbeat::Beacon`] nodes beat with.
//! - [`ids`]: sync fact ids, shared by both sources.
//! - [`config`]: [`WatcherConfig`] and [`NatsSettings`], parsed from a map of strings.
//! - [`publish`]: the NATS edge: [`MembershipPublisher`].
//!
//! # How it fits
//! The watchers only produce membership events; the reducer folds them into the ring.
//! The Kubernetes watcher's whole view of Kubernetes is list + watch of pods, so it
//! needs nothing but get/list/watch on pods in its namespace (see `docs/watcher.md`).

pub mod config;
pub mod heartbeat;
pub mod ids;
pub mod kubernetes;
pub mod publish;

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use ringside_events::{Event, PublishError, Publisher, Stored};

pub use config::{ConfigError, NatsSettings, WatcherConfig};
pub use publish::MembershipPublisher;

/// Pause before trying again a change the publisher gave up on (it already retried
/// with backoff for about 20 s).
const REPUBLISH_PAUSE: Duration = Duration::from_secs(2);

/// Errors that stop the watcher. Kubernetes API errors after start-up are not among
/// them: the watch recovers with backoff and logs them.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// The configuration map was rejected.
    #[error("watcher configuration")]
    Config(#[from] ConfigError),
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
    /// Connecting to NATS failed.
    #[error("connecting to NATS at {url}")]
    Nats {
        /// The server URL.
        url: String,
        /// The connection error.
        #[source]
        source: async_nats::ConnectError,
    },
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

/// Connects as the `watcher` user and wraps the connection in a publisher for the ring.
pub(crate) async fn connect(nats: &NatsSettings) -> Result<MembershipPublisher, WatcherError> {
    let client = connect_client(nats).await?;
    Ok(MembershipPublisher::new(
        Publisher::new(client),
        nats.ring.clone(),
        nats.producer.clone(),
    ))
}

/// Connects as the `watcher` user.
pub(crate) async fn connect_client(
    nats: &NatsSettings,
) -> Result<async_nats::Client, WatcherError> {
    nats.connect_options()
        .connect(&nats.url)
        .await
        .map_err(|source| WatcherError::Nats {
            url: nats.url.clone(),
            source,
        })
}

/// Stores `event`, trying again (forever, with a pause) while the server is
/// unreachable: later facts must not overtake it. `Err(why)` (in `Ok`) if `stop`
/// completed first with `why`.
pub(crate) async fn store<T>(
    publisher: &MembershipPublisher,
    event: &Event,
    what: &(dyn Display + Sync),
    stop: impl Future<Output = T>,
) -> Result<Result<Stored, T>, WatcherError> {
    let mut stop = std::pin::pin!(stop);
    loop {
        let result = tokio::select! {
            why = stop.as_mut() => return Ok(Err(why)),
            r = publisher.publish(event) => r,
        };
        match result {
            Ok(stored) => {
                tracing::info!(change = %what, msg_id = %event.msg_id(), sequence = stored.sequence, duplicate = stored.duplicate, "Membership change stored.");
                return Ok(Ok(stored));
            }
            Err(WatcherError::Publish(err @ PublishError::GaveUp { .. })) => {
                tracing::error!(error = %err, change = %what, "NATS unreachable; the change waits, later ones queue behind it.");
                tokio::select! {
                    why = stop.as_mut() => return Ok(Err(why)),
                    () = tokio::time::sleep(REPUBLISH_PAUSE) => {}
                }
            }
            Err(err) => return Err(err),
        }
    }
}
