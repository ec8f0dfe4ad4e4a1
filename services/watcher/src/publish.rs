//! The NATS edge: membership bodies become `ringside-events` events, stored through
//! its [`Publisher`] (acked, retried with the same message id).
//!
//! The events crate derives each `Nats-Msg-Id` from the event's content; the sources
//! make the content name the fact through `source_version` (joins, leaves) and
//! `resource_version` (syncs), see `docs/watcher.md`, "Message ids". At start-up (and,
//! for the heartbeat source, before every sync), [`MembershipPublisher::head`] reads
//! the last stored membership event back as a fact id, so that a sync of an unchanged
//! set dedups against it.

use async_nats::jetstream::stream::DirectGetErrorKind;
use ringside_events::subject::{self, STREAM_EVENTS};
use ringside_events::{Body, Event, Publisher, RingName, Stored, codec, headers};

use crate::WatcherError;
use crate::ids::SYNC_PREFIX;

/// Publishes one ring's membership facts.
#[derive(Clone, Debug)]
pub struct MembershipPublisher {
    publisher: Publisher,
    ring: RingName,
    producer: String,
}

impl MembershipPublisher {
    /// A publisher for `ring`, naming itself `producer` in every event.
    pub fn new(publisher: Publisher, ring: RingName, producer: String) -> Self {
        MembershipPublisher {
            publisher,
            ring,
            producer,
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
    pub async fn publish(&self, event: &Event) -> Result<Stored, WatcherError> {
        Ok(self.publisher.publish(event).await?)
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
