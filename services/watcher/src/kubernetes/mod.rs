//! The Kubernetes source: membership from the node pods of one namespace.
//!
//! The source watches the pods matching a label selector (kube-rs watcher) and
//! publishes one ring's membership: a full sync after every list, joins and leaves in
//! between.
//!
//! # Layout
//! - [`member`]: the membership rule (pod -> [`PodMember`] or why not). Pure.
//! - [`tracker`]: [`PodTracker`], watcher events -> [`MembershipChange`]s with their
//!   ids. Pure, synchronous, unit-tested without any server.
//! - [`source`]: the Kubernetes edge: client discovery and [`pod_events`].
//! - [`run`] / [`run_with_readiness`]: the loop joining them.

pub mod member;
pub mod source;
pub mod tracker;

use std::future::Future;

use futures::StreamExt;
use tokio::sync::watch;

pub use member::{MemberRule, NotMember, PodMember, PodState, PortSource};
pub use source::{kube_client, pod_api, pod_events};
pub use tracker::{Change, MembershipChange, PodTracker, SyncCause};

use crate::{WatcherConfig, WatcherError, connect, store};

/// Runs the Kubernetes watcher until `shutdown` completes.
pub async fn run(
    config: WatcherConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WatcherError> {
    run_with_readiness(config, watch::Sender::new(false), shutdown).await
}

/// Runs the Kubernetes watcher until `shutdown` completes; `ready` turns true once the
/// first full sync is stored (the ring has seen the truth at least once) and stays true.
pub async fn run_with_readiness(
    config: WatcherConfig,
    ready: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WatcherError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let publisher = tokio::select! {
        () = &mut shutdown => return Ok(()),
        p = connect(&config.nats) => p?,
    };
    // The head makes the first sync of a restart that sees nothing new a duplicate.
    let head = publisher.head().await?;
    let client = kube_client(&config).await?;
    let mut tracker =
        PodTracker::new(config.nats.ring.as_str(), config.rule.clone()).with_head(head);
    let mut events = std::pin::pin!(pod_events(pod_api(client, &config), &config.label_selector));
    tracing::info!(
        ring = %config.nats.ring,
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
        let event = publisher.event(change.body())?;
        if store(&publisher, &event, &change, shutdown.as_mut())
            .await?
            .is_err()
        {
            return Ok(());
        }
        if matches!(change.change, Change::Synced { .. }) {
            ready.send_replace(true);
        }
    }
}
