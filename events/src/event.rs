//! [`Event`]: a checked envelope. Everything that leaves or enters NATS passes
//! through it, so the rest of the system never sees a malformed fact.
//!
//! # How it fits
//! Producers build an [`Event`] from a ring name and a [`Body`]; the event knows its
//! subject ([`Event::subject`]), its deterministic message id ([`Event::msg_id`]) and
//! its one-line summary ([`Event::summary`]). Consumers get one from bytes through
//! [`crate::codec`], which runs the same checks ([`Event::try_from`] a `pb::Envelope`).

use std::fmt::Write as _;
use std::time::SystemTime;

use prost::Message as _;

use crate::codec::DecodeError;
use crate::names::{NameError, NodeName, RingName};
use crate::pb;
use crate::subject::{self, SubjectKind};
use crate::timestamp::Timestamp;

pub use crate::pb::envelope::Body;

/// Version of the contract this crate writes and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Protobuf package of every event message (`ce-type` is `<package>.<Message>`).
pub const PACKAGE: &str = "ringside.v1";

/// Declares [`EventKind`] and everything that lists every kind: the enum,
/// [`EventKind::ALL`], [`EventKind::of`], the message and id names, `From<pb::X> for
/// Body` and the body's encoding. One list of the `oneof body` variants (field-number
/// order, each with its id label) feeds them all, so a new kind is added in one place.
macro_rules! event_kinds {
    ($($kind:ident => $label:literal),* $(,)?) => {
        /// The kind of fact an event carries (the `oneof body` variant).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $(
                #[doc = concat!("[`pb::", stringify!($kind), "`]")]
                $kind,
            )*
        }

        /// How many kinds there are.
        const KIND_COUNT: usize = [$(stringify!($kind)),*].len();

        impl EventKind {
            /// Every kind, in field-number order.
            pub const ALL: [EventKind; KIND_COUNT] = [$(Self::$kind),*];

            /// The kind of a body.
            pub fn of(body: &Body) -> Self {
                match body {
                    $(Body::$kind(_) => Self::$kind,)*
                }
            }

            /// The message name without package (`RingRebalanced`).
            pub fn message_name(self) -> &'static str {
                match self {
                    $(Self::$kind => stringify!($kind),)*
                }
            }

            /// Short lowercase label used inside message ids (`rebalanced`).
            fn id_label(self) -> &'static str {
                match self {
                    $(Self::$kind => $label,)*
                }
            }
        }

        $(
            impl From<pb::$kind> for Body {
                fn from(m: pb::$kind) -> Self {
                    Body::$kind(m)
                }
            }
        )*

        /// The bytes of the body's own message (what the message id hashes).
        fn encode_body(body: &Body) -> Vec<u8> {
            match body {
                $(Body::$kind(m) => m.encode_to_vec(),)*
            }
        }

        /// The length of [`encode_body`]'s bytes, without encoding.
        fn body_len(body: &Body) -> usize {
            match body {
                $(Body::$kind(m) => m.encoded_len(),)*
            }
        }
    };
}

event_kinds! {
    MembersJoined => "joined",
    MemberLeft => "left",
    MembershipSynced => "synced",
    RingRebalanced => "rebalanced",
    NodeLoadReported => "load",
    KeysHandedOff => "handoff",
    ScaleDecided => "scale",
    HeartbeatSent => "heartbeat",
    TrafficSampled => "traffic",
}

impl EventKind {
    /// The full message name, the value of the `ce-type` header
    /// (`ringside.v1.RingRebalanced`).
    pub fn type_name(self) -> String {
        format!("{PACKAGE}.{}", self.message_name())
    }

    /// The subject kind this event travels on.
    pub fn subject_kind(self) -> SubjectKind {
        match self {
            Self::MembersJoined | Self::MemberLeft | Self::MembershipSynced => {
                SubjectKind::Membership
            }
            Self::RingRebalanced => SubjectKind::Rebalance,
            Self::NodeLoadReported => SubjectKind::Load,
            Self::KeysHandedOff => SubjectKind::Handoff,
            Self::ScaleDecided => SubjectKind::Scale,
            Self::HeartbeatSent => SubjectKind::Heartbeat,
            Self::TrafficSampled => SubjectKind::Traffic,
        }
    }
}

/// Why an envelope is not a valid event (beyond bytes that do not decode at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    /// The ring name is not valid.
    #[error("invalid ring name")]
    Ring(#[source] NameError),
    /// A member or node name is not valid.
    #[error("invalid name in {field}")]
    Name {
        /// Which field.
        field: &'static str,
        /// The name error.
        #[source]
        source: NameError,
    },
    /// A field breaks a rule of the contract (sorted ids, parallel arrays, ...).
    #[error("{field}: {rule}")]
    Rule {
        /// Which field.
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
}

fn rule(field: &'static str, rule: impl Into<String>) -> InvalidEvent {
    InvalidEvent::Rule {
        field,
        rule: rule.into(),
    }
}

/// An enum field holds one of its values: proto3 decodes any number into an enum
/// field, but a value this version does not know has no name to write as JSON, and
/// nothing here knows what it means.
pub(crate) fn check_enum<E: TryFrom<i32>>(
    field: &'static str,
    value: i32,
) -> Result<(), InvalidEvent> {
    E::try_from(value)
        .map(drop)
        .map_err(|_| rule(field, format!("{value} is not a known value")))
}

/// A time proto3 JSON can write: from year 1 to year 9999, nanoseconds below one
/// second.
pub(crate) fn check_timestamp(
    field: &'static str,
    t: Option<&crate::timestamp::Timestamp>,
) -> Result<(), InvalidEvent> {
    match t {
        Some(t) if t.to_rfc3339().is_none() => Err(rule(
            field,
            "a time from year 1 to 9999, nanoseconds 0 to 999,999,999",
        )),
        _ => Ok(()),
    }
}

/// A duration proto3 can write: at most 10,000 years, nanoseconds below one second and
/// of the seconds' sign.
fn check_duration(
    field: &'static str,
    d: Option<&pbjson_types::Duration>,
) -> Result<(), InvalidEvent> {
    const MAX: i64 = 315_576_000_000;
    match d {
        Some(d)
            if !(-MAX..=MAX).contains(&d.seconds)
                || !(-999_999_999..=999_999_999).contains(&d.nanos)
                || (d.seconds > 0 && d.nanos < 0)
                || (d.seconds < 0 && d.nanos > 0) =>
        {
            Err(rule(
                field,
                "a duration of at most 10,000 years, nanoseconds of its sign",
            ))
        }
        _ => Ok(()),
    }
}

/// A ring configuration's strategy is a known one.
pub(crate) fn check_config(config: Option<&pb::RingConfig>) -> Result<(), InvalidEvent> {
    config.map_or(Ok(()), |c| {
        check_enum::<pb::RingStrategy>("config.strategy", c.strategy)
    })
}

fn node(field: &'static str, name: &str) -> Result<NodeName, InvalidEvent> {
    NodeName::new(name).map_err(|source| InvalidEvent::Name { field, source })
}

/// A member: valid id, weight at least 1.
pub(crate) fn check_member(field: &'static str, m: &pb::Member) -> Result<(), InvalidEvent> {
    node(field, &m.id)?;
    if m.weight == 0 {
        return Err(rule(field, format!("member {:?} has weight 0", m.id)));
    }
    Ok(())
}

/// Members: each valid, ids strictly ascending (sorted, no duplicates).
pub(crate) fn check_members(
    field: &'static str,
    members: &[pb::Member],
) -> Result<(), InvalidEvent> {
    for m in members {
        check_member(field, m)?;
    }
    check_sorted_ids(field, members.iter().map(|m| m.id.as_str()))
}

fn check_sorted_ids<'a>(
    field: &'static str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<(), InvalidEvent> {
    let mut previous: Option<&str> = None;
    for id in ids {
        if let Some(p) = previous
            && p >= id
        {
            return Err(rule(
                field,
                format!("ids must be sorted and unique ({p:?} before {id:?})"),
            ));
        }
        previous = Some(id);
    }
    Ok(())
}

fn check_fraction(field: &'static str, f: f64) -> Result<(), InvalidEvent> {
    if f.is_finite() && (0.0..=1.0).contains(&f) {
        Ok(())
    } else {
        Err(rule(field, format!("{f} is not a fraction in [0, 1]")))
    }
}

fn check_finite(field: &'static str, f: f64) -> Result<(), InvalidEvent> {
    if f.is_finite() && f >= 0.0 {
        Ok(())
    } else {
        Err(rule(
            field,
            format!("{f} is not a finite non-negative number"),
        ))
    }
}

fn check_parallel(field: &'static str, a: usize, b: usize) -> Result<(), InvalidEvent> {
    if a == b {
        Ok(())
    } else {
        Err(rule(
            field,
            format!("parallel arrays differ in length ({a} vs {b})"),
        ))
    }
}

/// Member index meaning "nobody" in moved ranges (the ring before or after was empty).
pub const NO_OWNER: u32 = u32::MAX;

fn check_indices(field: &'static str, indices: &[u32], bound: usize) -> Result<(), InvalidEvent> {
    match indices.iter().find(|i| **i as usize >= bound) {
        Some(i) => Err(rule(
            field,
            format!("member index {i} out of range (< {bound})"),
        )),
        None => Ok(()),
    }
}

/// (token, owner) pairs strictly ascending: sorted by token, equal tokens by owner.
pub(crate) fn check_token_order(
    field: &'static str,
    tokens: &[u64],
    owners: &[u32],
) -> Result<(), InvalidEvent> {
    let pairs: Vec<(u64, u32)> = tokens.iter().copied().zip(owners.iter().copied()).collect();
    match pairs.windows(2).find(|w| w[0] >= w[1]) {
        Some(w) => Err(rule(
            field,
            format!(
                "tokens must be sorted by (token, owner) without repeats ({:?} before {:?})",
                w[0], w[1]
            ),
        )),
        None => Ok(()),
    }
}

fn check_rebalanced(r: &pb::RingRebalanced) -> Result<(), InvalidEvent> {
    if r.epoch == 0 {
        return Err(rule("epoch", "epochs start at 1"));
    }
    check_config(r.config.as_ref())?;
    check_members("members", &r.members)?;
    for (field, ids) in [
        ("joined", &r.joined),
        ("departed", &r.departed),
        ("reweighted", &r.reweighted),
    ] {
        for id in ids.iter() {
            node(field, id)?;
        }
        check_sorted_ids(field, ids.iter().map(String::as_str))?;
    }
    let bound = r.members.len() + r.departed.len();
    if let Some(t) = &r.token_changes {
        check_parallel("token_changes.added", t.added.len(), t.added_owners.len())?;
        check_parallel(
            "token_changes.removed",
            t.removed.len(),
            t.removed_owners.len(),
        )?;
        check_parallel(
            "token_changes.reassigned",
            t.reassigned.len(),
            t.reassigned_from.len(),
        )?;
        check_parallel(
            "token_changes.reassigned",
            t.reassigned.len(),
            t.reassigned_to.len(),
        )?;
        check_token_order("token_changes.added", &t.added, &t.added_owners)?;
        check_token_order("token_changes.removed", &t.removed, &t.removed_owners)?;
        check_token_order(
            "token_changes.reassigned",
            &t.reassigned,
            &t.reassigned_from,
        )?;
        for (field, idx) in [
            ("token_changes.added_owners", &t.added_owners),
            ("token_changes.removed_owners", &t.removed_owners),
            ("token_changes.reassigned_from", &t.reassigned_from),
            ("token_changes.reassigned_to", &t.reassigned_to),
        ] {
            check_indices(field, idx, bound)?;
        }
    }
    if let Some(m) = &r.moved_ranges {
        check_parallel("moved_ranges", m.starts.len(), m.ends.len())?;
        check_parallel("moved_ranges", m.starts.len(), m.from.len())?;
        check_parallel("moved_ranges", m.starts.len(), m.to.len())?;
        let owners = |field, idx: &[u32]| {
            let real: Vec<u32> = idx.iter().copied().filter(|i| *i != NO_OWNER).collect();
            check_indices(field, &real, bound)
        };
        owners("moved_ranges.from", &m.from)?;
        owners("moved_ranges.to", &m.to)?;
    }
    check_fraction("moved_fraction", r.moved_fraction)?;
    check_fraction("ideal_fraction", r.ideal_fraction)
}

/// Checks a body against the rules of the contract (docs/events.md).
fn check_body(body: &Body) -> Result<(), InvalidEvent> {
    match body {
        Body::MembersJoined(j) => {
            if j.members.is_empty() {
                return Err(rule("members", "a join names at least one member"));
            }
            check_enum::<pb::MembershipSource>("source", j.source)?;
            check_members("members", &j.members)
        }
        Body::MemberLeft(l) => {
            check_enum::<pb::MembershipSource>("source", l.source)?;
            check_enum::<pb::LeaveReason>("reason", l.reason)?;
            node("member_id", &l.member_id).map(drop)
        }
        Body::MembershipSynced(s) => {
            check_enum::<pb::MembershipSource>("source", s.source)?;
            check_members("members", &s.members)
        }
        Body::RingRebalanced(r) => check_rebalanced(r),
        Body::NodeLoadReported(l) => {
            node("node", &l.node)?;
            check_timestamp("window_start", l.window_start.as_ref())?;
            check_duration("window", l.window.as_ref())?;
            if !l.client_ip_sketch.is_empty()
                && l.client_ip_sketch.len() != crate::sketch::REGISTERS
            {
                return Err(rule(
                    "client_ip_sketch",
                    format!("empty or {} bytes", crate::sketch::REGISTERS),
                ));
            }
            check_finite("cpu_ratio", l.cpu_ratio)
        }
        Body::KeysHandedOff(h) => {
            check_duration("duration", h.duration.as_ref())?;
            node("from", &h.from)?;
            node("to", &h.to)?;
            if h.range_starts.len() != h.range_ends.len() {
                return Err(rule("range_ends", "as many range ends as range starts"));
            }
            Ok(())
        }
        Body::ScaleDecided(s) => {
            check_timestamp("evaluated_at", s.evaluated_at.as_ref())?;
            check_finite("metric_value", s.metric_value)?;
            check_finite("target_value", s.target_value)?;
            s.metrics.iter().try_for_each(|m| {
                check_finite("metrics.value", m.value)?;
                check_finite("metrics.target", m.target)
            })
        }
        Body::HeartbeatSent(h) => {
            check_duration("interval", h.interval.as_ref())?;
            match &h.member {
                Some(m) => check_member("member", m),
                None => Err(rule("member", "a heartbeat names its member")),
            }
        }
        Body::TrafficSampled(t) => node("node", &t.node).map(drop),
    }
}

/// A `google.protobuf.Timestamp` for a point in time (before 1970 clamps to 0).
pub fn timestamp(at: SystemTime) -> Timestamp {
    Timestamp::of(at)
}

/// The deterministic `Nats-Msg-Id` of an event (see [`Event::msg_id`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId(String);

impl MsgId {
    /// The id as a header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid ringside event: known schema version, valid ring, exactly one body that
/// follows the contract's rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    ring: RingName,
    occurred_at: Option<Timestamp>,
    producer: String,
    body: Body,
}

impl Event {
    /// A new event for `ring`, checked. Member lists of joins and syncs are sorted by id
    /// first (the wire form requires it; producers need not care).
    pub fn new(ring: RingName, body: impl Into<Body>) -> Result<Self, InvalidEvent> {
        let mut body = body.into();
        match &mut body {
            Body::MembersJoined(j) => j.members.sort_by(|a, b| a.id.cmp(&b.id)),
            Body::MembershipSynced(s) => s.members.sort_by(|a, b| a.id.cmp(&b.id)),
            _ => {}
        }
        check_body(&body)?;
        Ok(Self {
            ring,
            occurred_at: None,
            producer: String::new(),
            body,
        })
    }

    /// Sets when the fact was observed (informational; the fold never reads it).
    pub fn with_occurred_at(mut self, at: SystemTime) -> Self {
        self.occurred_at = Some(timestamp(at));
        self
    }

    /// Sets the producer ("watcher/pod-abc").
    pub fn with_producer(mut self, producer: impl Into<String>) -> Self {
        self.producer = producer.into();
        self
    }

    /// The ring.
    pub fn ring(&self) -> &RingName {
        &self.ring
    }

    /// The fact.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The fact, by value.
    pub fn into_body(self) -> Body {
        self.body
    }

    /// What kind of fact.
    pub fn kind(&self) -> EventKind {
        EventKind::of(&self.body)
    }

    /// When the producer observed it, if it said.
    pub fn occurred_at(&self) -> Option<&Timestamp> {
        self.occurred_at.as_ref()
    }

    /// Who produced it (may be empty).
    pub fn producer(&self) -> &str {
        &self.producer
    }

    /// The node of per-node subjects (load reports and heartbeats).
    fn node(&self) -> Option<NodeName> {
        let name = match &self.body {
            Body::NodeLoadReported(l) => l.node.as_str(),
            Body::HeartbeatSent(h) => h.member.as_ref().map_or("", |m| m.id.as_str()),
            _ => return None,
        };
        // Checked in `check_body`, so this cannot fail for an `Event`.
        NodeName::new(name).ok()
    }

    /// The subject this event is published on.
    pub fn subject(&self) -> String {
        let ring = &self.ring;
        match (self.kind().subject_kind(), self.node()) {
            (SubjectKind::Load, Some(n)) => subject::load(ring, &n),
            (SubjectKind::Heartbeat, Some(n)) => subject::heartbeat(ring, &n),
            (SubjectKind::Membership, _) => subject::membership(ring),
            (SubjectKind::Rebalance, _) => subject::rebalance(ring),
            (SubjectKind::Handoff, _) => subject::handoff(ring),
            (SubjectKind::Scale, _) => subject::scale(ring),
            (SubjectKind::Traffic, _) => subject::traffic(ring),
            // Unreachable for a checked event (load and heartbeat always name a node);
            // the dead-letter subject is the safe place for anything else.
            (SubjectKind::Load | SubjectKind::Heartbeat | SubjectKind::Deadletter, _) => {
                subject::deadletter(ring)
            }
        }
    }

    /// The deterministic message id: `<ring>:<kind>:<label>:<hash>`.
    ///
    /// The hash is xxh3-64 of the encoded body (the fact, without `occurred_at` and
    /// `producer`), so the same fact always gets the same id and JetStream drops
    /// retries and re-publications within the stream's duplicate window. The label is
    /// for people (`orders:rebalanced:41:...`). Facts that may repeat with identical
    /// content must differ in a field: joins and leaves carry the source's position
    /// (`source_version`: a pod resourceVersion, a node's incarnation and beat),
    /// syncs theirs in `resource_version`, members their incarnation (`uid`), load
    /// reports their window, scale decisions their `evaluated_at`.
    pub fn msg_id(&self) -> MsgId {
        self.msg_id_of(&encode_body(&self.body))
    }

    /// [`Event::msg_id`] from the event's encoded envelope ([`crate::codec::encode`]),
    /// which ends with the body's own message: the body is not encoded a second time.
    pub(crate) fn msg_id_in(&self, envelope: &[u8]) -> MsgId {
        let body = envelope.len().saturating_sub(body_len(&self.body));
        self.msg_id_of(&envelope[body..])
    }

    /// The message id, given the bytes of the body's own message.
    fn msg_id_of(&self, body: &[u8]) -> MsgId {
        let kind = self.kind();
        let label = match &self.body {
            Body::MembersJoined(j) => match j.members.as_slice() {
                [one] => one.id.clone(),
                [first, rest @ ..] => format!("{}+{}", first.id, rest.len()),
                [] => String::new(),
            },
            Body::MemberLeft(l) => l.member_id.clone(),
            Body::MembershipSynced(s) => format!("{}m", s.members.len()),
            Body::RingRebalanced(r) => r.epoch.to_string(),
            Body::NodeLoadReported(l) => l.node.clone(),
            Body::KeysHandedOff(h) => format!("{}:{}>{}", h.epoch, h.from, h.to),
            Body::ScaleDecided(s) => format!("{}>{}", s.current_replicas, s.desired_replicas),
            Body::HeartbeatSent(h) => h.beat.to_string(),
            Body::TrafficSampled(t) => t.node.clone(),
        };
        let hash = xxhash_rust::xxh3::xxh3_64(body);
        MsgId(format!(
            "{}:{}:{label}:{hash:016x}",
            self.ring,
            kind.id_label()
        ))
    }

    /// A one-line human summary (`epoch 41: +node-4, moved 0.198 (ideal 0.200)`), the
    /// value of the `Ringside-Summary` header.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = write_summary(&mut s, &self.body);
        sanitize_header_value(&s, 240)
    }

    /// The wire envelope.
    pub fn to_envelope(&self) -> pb::Envelope {
        self.clone().into()
    }
}

impl TryFrom<pb::Envelope> for Event {
    type Error = DecodeError;

    fn try_from(envelope: pb::Envelope) -> Result<Self, Self::Error> {
        if envelope.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::UnknownVersion {
                found: envelope.schema_version,
            });
        }
        let ring = RingName::new(envelope.ring).map_err(InvalidEvent::Ring)?;
        let body = envelope.body.ok_or(DecodeError::MissingEvent)?;
        check_timestamp("occurred_at", envelope.occurred_at.as_ref())?;
        // Same checks as `Event::new`, but no re-sorting: the wire form must already be
        // canonical, or message ids of equal facts would differ.
        check_body(&body)?;
        Ok(Self {
            ring,
            occurred_at: envelope.occurred_at,
            producer: envelope.producer,
            body,
        })
    }
}

impl From<Event> for pb::Envelope {
    fn from(event: Event) -> Self {
        pb::Envelope {
            schema_version: SCHEMA_VERSION,
            ring: event.ring.to_string(),
            occurred_at: event.occurred_at,
            producer: event.producer,
            body: Some(event.body),
        }
    }
}

/// Lists up to 3 ids with a sign, then "+N more".
fn id_list(out: &mut String, sign: char, ids: &[&str]) -> std::fmt::Result {
    for (i, id) in ids.iter().take(3).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write!(out, "{sign}{id}")?;
    }
    if ids.len() > 3 {
        write!(out, " (+{} more)", ids.len() - 3)?;
    }
    Ok(())
}

fn source_name(source: i32) -> &'static str {
    match pb::MembershipSource::try_from(source) {
        Ok(pb::MembershipSource::Kubernetes) => "kubernetes",
        Ok(pb::MembershipSource::Heartbeat) => "heartbeat",
        Ok(pb::MembershipSource::Manual) => "manual",
        Ok(pb::MembershipSource::Unspecified) | Err(_) => "unspecified source",
    }
}

fn leave_reason(reason: i32) -> &'static str {
    match pb::LeaveReason::try_from(reason) {
        Ok(pb::LeaveReason::Goodbye) => "goodbye",
        Ok(pb::LeaveReason::NotReady) => "not ready",
        Ok(pb::LeaveReason::Terminating) => "terminating",
        Ok(pb::LeaveReason::Deleted) => "deleted",
        Ok(pb::LeaveReason::HeartbeatMissed) => "heartbeat missed",
        Ok(pb::LeaveReason::Manual) => "manual",
        Ok(pb::LeaveReason::Unspecified) | Err(_) => "unspecified reason",
    }
}

fn write_summary(out: &mut String, body: &Body) -> std::fmt::Result {
    match body {
        Body::MembersJoined(j) => {
            let ids: Vec<&str> = j.members.iter().map(|m| m.id.as_str()).collect();
            id_list(out, '+', &ids)?;
            write!(out, " joined ({})", source_name(j.source))
        }
        Body::MemberLeft(l) => {
            write!(out, "-{} left ({})", l.member_id, leave_reason(l.reason))?;
            if !l.detail.is_empty() {
                write!(out, ": {}", l.detail)?;
            }
            Ok(())
        }
        Body::MembershipSynced(s) => {
            write!(
                out,
                "sync: {} members ({}",
                s.members.len(),
                source_name(s.source)
            )?;
            if !s.resource_version.is_empty() {
                write!(out, ", rv {}", s.resource_version)?;
            }
            out.push(')');
            Ok(())
        }
        Body::RingRebalanced(r) => {
            write!(out, "epoch {}: ", r.epoch)?;
            let joined: Vec<&str> = r.joined.iter().map(String::as_str).collect();
            let departed: Vec<&str> = r.departed.iter().map(String::as_str).collect();
            let reweighted: Vec<&str> = r.reweighted.iter().map(String::as_str).collect();
            let mut any = false;
            for (sign, ids) in [('+', &joined), ('-', &departed), ('~', &reweighted)] {
                if !ids.is_empty() {
                    if any {
                        out.push_str(", ");
                    }
                    id_list(out, sign, ids)?;
                    any = true;
                }
            }
            if !any {
                out.push_str("no member change");
            }
            write!(
                out,
                ", moved {:.3} (ideal {:.3}), {} members",
                r.moved_fraction,
                r.ideal_fraction,
                r.members.len()
            )
        }
        Body::NodeLoadReported(l) => write!(
            out,
            "{}: {} req ({} fwd), {} client ips/min, cpu {:.2}, {} keys",
            l.node,
            l.requests,
            l.forwarded,
            l.unique_client_ips_last_minute,
            l.cpu_ratio,
            l.keys_held
        ),
        Body::KeysHandedOff(h) => {
            write!(
                out,
                "epoch {}: {} -> {}, {} keys ({} bytes) in {} ranges",
                h.epoch,
                h.from,
                h.to,
                h.count,
                h.bytes,
                h.range_starts.len()
            )?;
            if let Some(d) = &h.duration {
                let ms = d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6;
                write!(out, ", {ms:.0} ms")?;
            }
            Ok(())
        }
        // The reason names the metrics, their values and targets, and every rule that
        // held the decision back; without one, the metric that set it.
        Body::ScaleDecided(s) if !s.reason.is_empty() => write!(
            out,
            "scale {} -> {}: {}",
            s.current_replicas, s.desired_replicas, s.reason
        ),
        Body::ScaleDecided(s) => write!(
            out,
            "scale {} -> {}: {} {:.1} vs target {:.1}",
            s.current_replicas, s.desired_replicas, s.metric, s.metric_value, s.target_value
        ),
        Body::HeartbeatSent(h) => {
            let id = h.member.as_ref().map_or("?", |m| m.id.as_str());
            if h.goodbye {
                write!(out, "{id} says goodbye (beat {})", h.beat)
            } else {
                write!(out, "{id} beat {}", h.beat)
            }
        }
        Body::TrafficSampled(t) => write!(
            out,
            "{}: {} sampled requests at epoch {}",
            t.node,
            t.requests.len(),
            t.epoch
        ),
    }
}

/// Makes `s` a safe one-line header value: control characters become spaces, and it
/// is cut to `max` bytes on a character boundary.
pub(crate) fn sanitize_header_value(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn ring() -> RingName {
        RingName::new("orders").unwrap()
    }

    fn event(body: impl Into<Body>) -> Event {
        Event::new(ring(), body).unwrap()
    }

    fn joined(source_version: &str) -> pb::MembersJoined {
        pb::MembersJoined {
            members: vec![pb::Member {
                id: "node-1".into(),
                address: "10.0.0.1:7000".into(),
                weight: 1,
                uid: Some("uid-1".into()),
                ..Default::default()
            }],
            source: pb::MembershipSource::Kubernetes as i32,
            source_version: source_version.into(),
        }
    }

    fn left(source_version: &str) -> pb::MemberLeft {
        pb::MemberLeft {
            member_id: "node-1".into(),
            uid: Some("uid-1".into()),
            reason: pb::LeaveReason::NotReady as i32,
            source: pb::MembershipSource::Kubernetes as i32,
            detail: "not ready".into(),
            source_version: source_version.into(),
        }
    }

    /// A member that joins, leaves and joins again with the same details is two joins:
    /// only `source_version` tells them apart, and their ids must differ, or JetStream
    /// would drop the second as a duplicate of the first.
    #[test]
    fn source_version_separates_repeated_joins_and_leaves() {
        assert_eq!(event(joined("4")).msg_id(), event(joined("4")).msg_id());
        assert_ne!(event(joined("4")).msg_id(), event(joined("6")).msg_id());
        assert_ne!(event(joined("")).msg_id(), event(joined("6")).msg_id());
        assert_eq!(event(left("5")).msg_id(), event(left("5")).msg_id());
        assert_ne!(event(left("5")).msg_id(), event(left("7")).msg_id());
    }

    /// The same for syncs, whose position field is `resource_version`.
    #[test]
    fn resource_version_separates_repeated_syncs() {
        let sync = |rv: &str| pb::MembershipSynced {
            members: joined("").members,
            source: pb::MembershipSource::Heartbeat as i32,
            resource_version: rv.into(),
        };
        assert_eq!(event(sync("a")).msg_id(), event(sync("a")).msg_id());
        assert_ne!(event(sync("a")).msg_id(), event(sync("b")).msg_id());
    }

    /// The id taken from the encoded envelope is the event's id: the envelope ends with
    /// the body's own message, whatever its field number (a one-byte key for a join, a
    /// two-byte one for a heartbeat).
    #[test]
    fn the_id_from_the_envelope_is_the_id() {
        let beat = pb::HeartbeatSent {
            member: joined("").members.pop(),
            beat: 9,
            ..Default::default()
        };
        let stamped = event(joined("4"))
            .with_producer("watcher/1")
            .with_occurred_at(UNIX_EPOCH);
        for e in [stamped, event(left("5")), event(beat)] {
            let bytes = crate::codec::encode(&e).unwrap();
            assert_eq!(e.msg_id_in(&bytes), e.msg_id(), "{:?}", e.kind());
        }
    }

    /// What is not the fact does not change the id.
    #[test]
    fn producer_and_time_do_not_change_the_id() {
        let plain = event(joined("4"));
        let stamped = event(joined("4"))
            .with_producer("watcher/other")
            .with_occurred_at(UNIX_EPOCH);
        assert_eq!(plain.msg_id(), stamped.msg_id());
    }
}
