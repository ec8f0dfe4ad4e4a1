//! The NATS edge: membership bodies become `ringside-events` events, stored through
//! its [`Publisher`] (acked, retried with the same message id) and counted
//! ([`Metrics`]); [`store`] keeps trying one event while NATS is unreachable.
//!
//! The events crate derives each `Nats-Msg-Id` from the event's content; the sources
//! make the content name the fact through `source_version` (joins, leaves) and
//! `resource_version` (syncs), see `docs/watcher.md`, "Message ids". At start-up (and,
//! for the heartbeat source, before every sync), [`MembershipPublisher::head`] reads
//! the last stored membership event back as a fact id, so that a sync of an unchanged
//! set dedups against it.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;
use ringside_events::subject::{self, STREAM_EVENTS};
use ringside_events::{
    Body, Event, PublishError, Publisher, RingName, ServiceUser, Stored, codec, headers,
};
use ringside_kit::{Readiness, ServiceError};

use crate::WatcherError;
use crate::config::NatsSettings;
use crate::ids::SYNC_PREFIX;
use crate::metrics::Metrics;

/// Pause before trying again a change the publisher gave up on (it already retried
/// with backoff for about 20 s).
const REPUBLISH_PAUSE: Duration = Duration::from_secs(2);

/// Connects as the `watcher` user; registers the `nats` condition on `readiness`,
/// which follows the connection.
pub async fn connect(
    nats: &NatsSettings,
    readiness: &Readiness,
) -> Result<async_nats::Client, WatcherError> {
    let client = ringside_kit::nats::connect(
        ServiceUser::Watcher,
        nats.password.clone(),
        &nats.url,
        readiness,
    )
    .await
    .map_err(ServiceError::from)?;
    Ok(client)
}

/// Publishes one ring's membership facts.
#[derive(Clone, Debug)]
pub struct MembershipPublisher {
    publisher: Publisher,
    ring: RingName,
    producer: String,
    metrics: Metrics,
}

impl MembershipPublisher {
    /// A publisher for the ring of `nats`, naming itself by its producer in every
    /// event, counting on `metrics`.
    pub fn new(client: async_nats::Client, nats: &NatsSettings, metrics: Metrics) -> Self {
        MembershipPublisher {
            publisher: Publisher::new(client),
            ring: nats.ring.clone(),
            producer: nats.producer.clone(),
            metrics,
        }
    }

    /// The ring.
    pub fn ring(&self) -> &RingName {
        &self.ring
    }

    /// The fact id of the last stored event on the ring's membership subject (`None`
    /// if the subject is empty): a sync's `resource_version` if it is one of ours,
    /// else the event's message id.
    pub async fn head(&self) -> Result<Option<String>, WatcherError> {
        let stream = self
            .publisher
            .jetstream()
            .get_stream_no_info(STREAM_EVENTS)
            .await
            .map_err(WatcherError::HeadStream)?;
        let last = match stream
            .direct_get_last_for_subject(subject::membership(&self.ring))
            .await
        {
            Ok(msg) => msg,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(WatcherError::HeadRead(e)),
        };
        // A sync of ours names itself in resource_version; anything else (a join, a
        // leave, another producer's event) is just "the last fact", which its message
        // id identifies; an undecodable one by its stored id or sequence.
        if let Ok(event) = codec::decode(&last.payload) {
            return Ok(Some(fact_name(&event)));
        }
        Ok(last
            .headers
            .get(headers::MSG_ID)
            .map(|id| id.as_str().to_owned())
            .or_else(|| Some(format!("seq:{}", last.sequence))))
    }

    /// The event a membership body is published as: checked, with our producer and
    /// the time of observation.
    pub fn event(&self, body: impl Into<Body>) -> Result<Event, WatcherError> {
        Ok(Event::new(self.ring.clone(), body)?
            .with_producer(self.producer.clone())
            .with_occurred_at(std::time::SystemTime::now()))
    }

    /// Stores an event (the events publisher retries with the same message id).
    pub async fn publish(&self, event: &Event) -> Result<Stored, PublishError> {
        let result = self.publisher.publish(event).await;
        match &result {
            Ok(stored) => self.metrics.stored(event.body(), stored),
            Err(_) => self.metrics.publish_failed(),
        }
        result
    }
}

/// Stores `event`, trying again (forever, with a pause) while the server is
/// unreachable: later facts must not overtake it. `Err(why)` (in `Ok`) if `stop`
/// completed first with `why`.
pub async fn store<T>(
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
            Err(err @ PublishError::GaveUp { .. }) => {
                tracing::error!(error = %err, change = %what, "NATS unreachable; the change waits, later ones queue behind it.");
                tokio::select! {
                    why = stop.as_mut() => return Ok(Err(why)),
                    () = tokio::time::sleep(REPUBLISH_PAUSE) => {}
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// How an event is named as the head of the membership subject: a sync of ours by its
/// fact id (`resource_version`), anything else by its message id.
pub fn fact_name(event: &Event) -> String {
    match event.body() {
        Body::MembershipSynced(sync) if sync.resource_version.starts_with(SYNC_PREFIX) => {
            sync.resource_version.clone()
        }
        _ => event.msg_id().to_string(),
    }
}
