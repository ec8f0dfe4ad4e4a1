//! The NATS edge: membership changes become `ringside-events` events, stored through
//! its [`Publisher`] (acked, retried with the same message id).
//!
//! The events crate derives each `Nats-Msg-Id` from the event's content, so the
//! watcher makes the content name the fact (see `docs/watcher.md`, "Message ids"):
//! a sync carries the tracker's sync id in `resource_version`, a leave the tracker's
//! leave id in `detail`. At start-up, [`MembershipPublisher::head`] reads the last
//! stored membership event back, in the tracker's id space, so the first sync after a
//! restart dedups against it.

use async_nats::jetstream::stream::DirectGetErrorKind;
use ringside_events::subject::{self, STREAM_EVENTS};
use ringside_events::{Body, Event, Publisher, RingName, Stored, codec, headers, pb};

use crate::WatcherError;
use crate::member::{Member, NotMember};
use crate::tracker::{Change, MembershipChange};

/// Publishes one ring's membership changes.
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

    /// The id of the last stored change on the ring's membership subject, in the
    /// tracker's id space (`None` if the subject is empty).
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
        // leave, another producer's event, even an undecodable one) is just "the last
        // fact", which its message id identifies.
        if let Ok(event) = codec::decode(&last.payload)
            && let Body::MembershipSynced(sync) = event.body()
            && sync.resource_version.starts_with("sync:")
        {
            return Ok(Some(sync.resource_version.clone()));
        }
        Ok(last
            .headers
            .get(headers::MSG_ID)
            .map(|id| id.as_str().to_owned())
            .or_else(|| Some(format!("seq:{}", last.sequence))))
    }

    /// The event a change is published as.
    pub fn event(&self, change: &MembershipChange) -> Result<Event, WatcherError> {
        let source = pb::MembershipSource::Kubernetes as i32;
        let body = match &change.change {
            Change::Joined(m) => Body::from(pb::MembersJoined {
                members: vec![to_pb(m)],
                source,
            }),
            Change::Left { member, reason } => Body::from(pb::MemberLeft {
                member_id: member.id.clone(),
                uid: Some(member.uid.clone()),
                reason: leave_reason(*reason) as i32,
                source,
                // The leave id holds the pod resourceVersion of the transition: two
                // leaves of the same pod are two facts, and must not share an id.
                detail: format!("{reason} ({})", change.msg_id),
            }),
            Change::Synced { members, .. } => Body::from(pb::MembershipSynced {
                members: members.iter().map(to_pb).collect(),
                source,
                resource_version: change.msg_id.clone(),
            }),
        };
        Ok(Event::new(self.ring.clone(), body)?
            .with_producer(self.producer.clone())
            .with_occurred_at(std::time::SystemTime::now()))
    }

    /// Stores a change (the events publisher retries with the same message id).
    pub async fn publish(&self, change: &MembershipChange) -> Result<Stored, WatcherError> {
        let event = self.event(change)?;
        Ok(self.publisher.publish(&event).await?)
    }
}

fn to_pb(m: &Member) -> pb::Member {
    pb::Member {
        id: m.id.clone(),
        address: m.address.to_string(),
        weight: m.weight,
        uid: Some(m.uid.clone()),
        ..pb::Member::default()
    }
}

fn leave_reason(reason: NotMember) -> pb::LeaveReason {
    match reason {
        NotMember::NotReady => pb::LeaveReason::NotReady,
        NotMember::Terminating => pb::LeaveReason::Terminating,
        NotMember::Deleted => pb::LeaveReason::Deleted,
        // No contract value for these; the detail says which.
        NotMember::NoAddress
        | NotMember::NoPort
        | NotMember::Malformed
        | NotMember::UnusableName => pb::LeaveReason::Unspecified,
    }
}
