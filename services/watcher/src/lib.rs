//! ringside-watcher: the Kubernetes membership source.
//!
//! Watches the node pods of one namespace (label selector, kube-rs watcher) and
//! publishes one ring's membership: a full sync after every list, joins and leaves in
//! between, each stored once (deterministic message ids, JetStream deduplication), so
//! retries and restarts never store a fact twice.
//!
//! # Layout
//! - [`member`]: the membership rule (pod -> [`Member`] or why not). Pure.
//! - [`tracker`]: [`PodTracker`], watcher events -> [`MembershipChange`]s with their
//!   ids. Pure, synchronous, unit-tested without any server.
//! - [`config`]: [`WatcherConfig`] parsed from a map of strings.
//! - [`source`]: the Kubernetes edge: client discovery and [`pod_events`].
//! - [`publish`]: the NATS edge: [`MembershipPublisher`].
//! - [`run`] / [`run_with_readiness`]: the loop joining them.
//!
//! # How it fits
//! The watcher only produces membership events; the reducer folds them into the ring.
//! Its whole view of Kubernetes is list + watch of pods, so it needs nothing but
//! get/list/watch on pods in its namespace (see `docs/watcher.md`).

pub mod config;
pub mod member;
pub mod publish;
pub mod source;
pub mod tracker;

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use ringside_events::{PublishError, Publisher, ServiceUser};
use tokio::sync::watch;

pub use config::{ConfigError, WatcherConfig};
pub use member::{Member, MemberRule, NotMember, PodState, PortSource};
pub use publish::MembershipPublisher;
pub use source::{kube_client, pod_api, pod_events};
pub use tracker::{Change, MembershipChange, PodTracker, SyncCause};

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
}

/// Runs the watcher until `shutdown` completes.
pub async fn run(
    config: WatcherConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WatcherError> {
    run_with_readiness(config, watch::Sender::new(false), shutdown).await
}

/// Runs the watcher until `shutdown` completes; `ready` turns true once the first
/// full sync is stored (the ring has seen the truth at least once) and stays true.
pub async fn run_with_readiness(
    config: WatcherConfig,
    ready: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WatcherError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let publisher = tokio::select! {
        () = &mut shutdown => return Ok(()),
        p = connect(&config) => p?,
    };
    // The head makes the first sync of a restart that sees nothing new a duplicate.
    let head = publisher.head().await?;
    let client = kube_client(&config).await?;
    let mut tracker = PodTracker::new(config.ring.as_str(), config.rule.clone()).with_head(head);
    let mut events = std::pin::pin!(pod_events(pod_api(client, &config), &config.label_selector));
    tracing::info!(
        ring = %config.ring,
        selector = %config.label_selector,
        namespace = config.namespace.as_deref().unwrap_or("(client default)"),
        "Watching pods."
    );
    loop {
        let event = tokio::select! {
            () = &mut shutdown => return Ok(()),
            event = events.next() => match event {
                Some(event) => event,
                // kube's watcher stream is endless; ending is a bug worth a loud exit.
                None => return Err(WatcherError::WatchEnded),
            },
        };
        let Some(change) = tracker.apply(event) else {
            continue;
        };
        let Some(stored) = publish(&publisher, &change, &mut shutdown).await? else {
            return Ok(());
        };
        if stored.duplicate && !matches!(change.change, Change::Synced { .. }) {
            // The events crate ids are content hashes: a join identical to an earlier
            // one (same pod incarnation re-joining within the duplicate window) was
            // dropped. Restating the set makes the fold see it. After a mere retry
            // duplicate this is a harmless no-op sync.
            let restated = tracker.restate();
            tracing::info!(change = %change, "Join or leave already stored; restating the member set.");
            if publish(&publisher, &restated, &mut shutdown)
                .await?
                .is_none()
            {
                return Ok(());
            }
        }
        if matches!(change.change, Change::Synced { .. }) {
            ready.send_replace(true);
        }
    }
}

async fn connect(config: &WatcherConfig) -> Result<MembershipPublisher, WatcherError> {
    let options = match &config.nats_password {
        Some(password) => ServiceUser::Watcher.connect_options(password.clone()),
        None => async_nats::ConnectOptions::new().name("ringside-watcher"),
    };
    let client = options
        .connect(&config.nats_url)
        .await
        .map_err(|source| WatcherError::Nats {
            url: config.nats_url.clone(),
            source,
        })?;
    Ok(MembershipPublisher::new(
        Publisher::new(client),
        config.ring.clone(),
        config.producer.clone(),
    ))
}

/// Stores `change`, trying again (forever, with a pause) while the server is
/// unreachable: later changes must not overtake it. `None` if shut down meanwhile.
async fn publish(
    publisher: &MembershipPublisher,
    change: &MembershipChange,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<ringside_events::Stored>, WatcherError> {
    loop {
        let result = tokio::select! {
            () = shutdown.as_mut() => return Ok(None),
            r = publisher.publish(change) => r,
        };
        match result {
            Ok(stored) => {
                tracing::info!(change = %change, msg_id = %change.msg_id, sequence = stored.sequence, duplicate = stored.duplicate, "Membership change stored.");
                return Ok(Some(stored));
            }
            Err(WatcherError::Publish(err @ PublishError::GaveUp { .. })) => {
                tracing::error!(error = %err, change = %change, "NATS unreachable; the change waits, later ones queue behind it.");
                tokio::select! {
                    () = shutdown.as_mut() => return Ok(None),
                    () = tokio::time::sleep(REPUBLISH_PAUSE) => {}
                }
            }
            Err(err) => return Err(err),
        }
    }
}
