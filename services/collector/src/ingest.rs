//! The collector's three inputs, each a loop that runs until shutdown and never stops on
//! a bad message: the ring through the client library, the load reports, and the
//! handoff and scale events.
//!
//! Load reports are read by an ordered consumer that starts with the last report of
//! every node still in the stream (so a restarted collector has figures at once) and
//! then takes each new one. A report's age is taken from when the stream stored it, so
//! an old report read at start is already as stale as it really is. Handoff and scale
//! events are read from the collector's start on: their counters begin at 0 with the
//! process, as Prometheus counters do.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ringside_client::{Change, RingClient};
use ringside_events::{Body, Event, RingName, codec, subject};
use ringside_kit::Condition;

use crate::state::State;

/// Wait before opening a consumer again after it failed.
const REOPEN_AFTER: Duration = Duration::from_secs(2);

/// Follows the ring: its figures at each epoch and each rebalance's. `synced` holds
/// once the ring is known.
pub async fn ring(client: RingClient, state: Arc<State>, synced: Condition) {
    let mut changes = client.subscribe(None);
    while let Some(change) = changes.next().await {
        if let Change::Rebalanced { rebalance, .. } = &change {
            state.rebalanced(rebalance.event());
        }
        if let Some(view) = client.ring() {
            state.ring_at(view.epoch(), view.ring());
            synced.set(true);
        }
    }
}

/// Which stored events a consumer reads.
#[derive(Clone, Copy, Debug)]
pub enum Feed {
    /// `ringside.<ring>.load.*` of `RINGSIDE_LOAD`, from each node's last report.
    Loads,
    /// The handoff and scale subjects of `RINGSIDE`, from now on.
    Events,
}

impl Feed {
    fn stream(self) -> &'static str {
        match self {
            Feed::Loads => subject::STREAM_LOAD,
            Feed::Events => subject::STREAM_EVENTS,
        }
    }

    fn config(self, ring: &RingName) -> consumer::pull::OrderedConfig {
        let (filter_subjects, deliver_policy) = match self {
            Feed::Loads => (
                vec![subject::load_any(ring)],
                consumer::DeliverPolicy::LastPerSubject,
            ),
            Feed::Events => (
                vec![subject::handoff(ring), subject::scale(ring)],
                consumer::DeliverPolicy::New,
            ),
        };
        consumer::pull::OrderedConfig {
            filter_subjects,
            deliver_policy,
            ..Default::default()
        }
    }
}

/// Reads `feed` into `state` until the process stops; `open` holds while the consumer
/// is open. A consumer that fails is opened again (a load consumer from each node's
/// last report again, which only refreshes the same figures).
pub async fn consume(
    js: jetstream::Context,
    ring: RingName,
    feed: Feed,
    state: Arc<State>,
    open: Condition,
) {
    loop {
        match read(&js, &ring, feed, &state, &open).await {
            Ok(()) => tracing::warn!(?feed, "The consumer ended; opening it again."),
            Err(e) => tracing::warn!(?feed, error = %e, "The consumer failed; opening it again."),
        }
        open.set(false);
        tokio::time::sleep(REOPEN_AFTER).await;
    }
}

async fn read(
    js: &jetstream::Context,
    ring: &RingName,
    feed: Feed,
    state: &State,
    open: &Condition,
) -> Result<(), async_nats::Error> {
    let stream = js.get_stream(feed.stream()).await?;
    let mut messages = stream
        .create_consumer(feed.config(ring))
        .await?
        .messages()
        .await?;
    open.set(true);
    while let Some(message) = messages.next().await {
        let message = message?;
        let stored = message
            .info()
            .ok()
            .map(|info| SystemTime::from(info.published));
        take(state, feed, &message.subject, &message.payload, stored);
    }
    Ok(())
}

/// Takes one stored message of `feed`: a node's load report (anything else on the load
/// subjects is counted as refused), a handoff or a scale decision.
pub fn take(state: &State, feed: Feed, on: &str, payload: &[u8], stored: Option<SystemTime>) {
    if let Some(stored) = stored {
        state.event_at(stored);
    }
    match (feed, codec::decode_on(on, payload).map(Event::into_body)) {
        (Feed::Loads, Ok(Body::NodeLoadReported(report))) => {
            let age = stored
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            let now = Instant::now();
            state.report(report, now.checked_sub(age).unwrap_or(now));
        }
        (Feed::Events, Ok(Body::KeysHandedOff(handoff))) => state.handed_off(&handoff),
        (Feed::Events, Ok(Body::ScaleDecided(decision))) => state.scaled(&decision),
        (feed, outcome) => {
            if let Feed::Loads = feed {
                state.reports_refused.fetch_add(1, Ordering::Relaxed);
            }
            let why = match outcome {
                Ok(body) => format!(
                    "unexpected {} event",
                    ringside_events::EventKind::of(&body).message_name()
                ),
                Err(e) => e.to_string(),
            };
            tracing::warn!(
                subject = on,
                why,
                "Skipping a message that is not a valid event here."
            );
        }
    }
}
