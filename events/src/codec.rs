//! Bytes to events and back: binary protobuf (the wire form) and the proto3 JSON
//! mapping (the bridge, `ringside tail --json`, exports).
//!
//! Decoding never panics: oversized input, bytes that are not protobuf, an unknown
//! schema version, an empty envelope and a fact that breaks the contract's rules are
//! each a [`DecodeError`] variant, so a consumer can count, log and dead-letter it.

use bytes::Bytes;
use prost::Message as _;

use crate::event::{
    Event, InvalidEvent, SCHEMA_VERSION, check_config, check_members, check_timestamp,
    check_token_order,
};
use crate::names::RingName;
use crate::pb;

/// The server's `max_payload` (nats/*.conf) and the streams' `max_msg_size`: 8 MiB.
///
/// Sized for the largest message the contract allows: the first rebalance of a
/// 1000-member ring with 160 vnodes each, built at once, carries 160,000 added tokens
/// (packed: 8 bytes + owner index) and up to as many moved ranges, about 5 MB. A
/// snapshot of that ring is about 1.7 MB. 8 MiB is the largest payload NATS advises.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;

/// Room left for headers within [`MAX_PAYLOAD_BYTES`] (NATS counts them in the limit).
pub const HEADER_ALLOWANCE: usize = 16 * 1024;

/// Largest encoded event or snapshot this crate writes or reads.
pub const MAX_EVENT_BYTES: usize = MAX_PAYLOAD_BYTES - HEADER_ALLOWANCE;

/// Why bytes are not a valid event or snapshot.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// More bytes than [`MAX_EVENT_BYTES`]; refused before parsing.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a protobuf message of the expected type (garbage, truncated, wrong type).
    #[error("malformed protobuf")]
    Malformed(#[source] prost::DecodeError),
    /// Not proto3 JSON of the expected type.
    #[error("malformed JSON")]
    MalformedJson(#[source] serde_json::Error),
    /// A schema version this reader does not know (0: not set).
    #[error("schema version {found} is not supported (this reader knows {SCHEMA_VERSION})")]
    UnknownVersion {
        /// The version found.
        found: u32,
    },
    /// The envelope carries no event: empty, or a kind newer than this reader.
    #[error("the envelope carries no event (empty, or a kind newer than this reader)")]
    MissingEvent,
    /// It decodes, but breaks a rule of the contract.
    #[error("invalid event")]
    Invalid(#[from] InvalidEvent),
    /// A valid event that does not belong on the subject it arrived on: another ring's
    /// event (the envelope's ring is not the subject's ring token), or a kind that
    /// goes elsewhere (a `ScaleDecided` on the membership subject).
    #[error("an event of {expected} arrived on {subject}")]
    WrongSubject {
        /// The subject it arrived on.
        subject: String,
        /// The subject the event belongs on ([`Event::subject`]).
        expected: String,
    },
}

impl DecodeError {
    /// A short stable label, for counters and the dead-letter reason header.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Malformed(_) => "malformed",
            Self::MalformedJson(_) => "malformed_json",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::MissingEvent => "missing_event",
            Self::Invalid(_) => "invalid",
            Self::WrongSubject { .. } => "wrong_subject",
        }
    }
}

/// Why an event or snapshot could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded form exceeds [`MAX_EVENT_BYTES`].
    #[error("encoded message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The snapshot breaks a rule of the contract.
    #[error("invalid snapshot")]
    Invalid(#[from] InvalidEvent),
    /// JSON serialization failed.
    #[error("JSON encoding failed")]
    Json(#[source] serde_json::Error),
}

fn check_size(size: usize) -> Result<(), DecodeError> {
    if size > MAX_EVENT_BYTES {
        return Err(DecodeError::TooLarge {
            size,
            limit: MAX_EVENT_BYTES,
        });
    }
    Ok(())
}

fn encoded(bytes: Vec<u8>) -> Result<Bytes, EncodeError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(EncodeError::TooLarge {
            size: bytes.len(),
            limit: MAX_EVENT_BYTES,
        });
    }
    Ok(Bytes::from(bytes))
}

/// Encodes an event as a binary `Envelope`: the envelope's own fields, then the body.
/// Protobuf writes fields in number order and the body's (10 and up) come last, so these
/// are the bytes of the whole envelope, without copying the body into one (a rebalance of
/// a 1000-member ring carries 1000 members).
pub fn encode(event: &Event) -> Result<Bytes, EncodeError> {
    let head = pb::Envelope {
        schema_version: SCHEMA_VERSION,
        ring: event.ring().to_string(),
        occurred_at: event.occurred_at().copied(),
        producer: event.producer().to_owned(),
        body: None,
    };
    let mut bytes = Vec::with_capacity(head.encoded_len() + event.body().encoded_len());
    bytes.extend(head.encode_to_vec());
    event.body().encode(&mut bytes);
    encoded(bytes)
}

/// Decodes and checks a binary `Envelope`.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    check_size(bytes.len())?;
    let envelope = pb::Envelope::decode(bytes).map_err(DecodeError::Malformed)?;
    Event::try_from(envelope)
}

/// Decodes a message that arrived on `subject`: [`decode`], and the event must belong
/// there ([`Event::subject`] equals `subject`: same ring, same kind, same node).
///
/// Every reader of a subject decodes with this, so an event of another ring, or of a
/// kind that goes elsewhere, is refused the same way by the reducer, the watchers,
/// `tail` and `replay`.
pub fn decode_on(subject: &str, bytes: &[u8]) -> Result<Event, DecodeError> {
    let event = decode(bytes)?;
    let expected = event.subject();
    if expected != subject {
        return Err(DecodeError::WrongSubject {
            subject: subject.to_owned(),
            expected,
        });
    }
    Ok(event)
}

impl TryFrom<&[u8]> for Event {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        decode(bytes)
    }
}

/// The proto3 JSON form of an event's envelope (one line).
pub fn to_json(event: &Event) -> Result<String, EncodeError> {
    serde_json::to_string(&event.to_envelope()).map_err(EncodeError::Json)
}

/// Decodes and checks the proto3 JSON form of an envelope. Unknown fields are ignored
/// (add-only evolution); unknown event kinds are [`DecodeError::MissingEvent`].
pub fn from_json(json: &str) -> Result<Event, DecodeError> {
    check_size(json.len())?;
    let envelope: pb::Envelope = serde_json::from_str(json).map_err(DecodeError::MalformedJson)?;
    Event::try_from(envelope)
}

/// Checks a snapshot: known version, valid ring and members, tokens sorted by
/// (token, owner) without repeats, one in-range owner per token.
pub fn check_snapshot(snapshot: &pb::RingSnapshot) -> Result<(), DecodeError> {
    if snapshot.schema_version != SCHEMA_VERSION {
        return Err(DecodeError::UnknownVersion {
            found: snapshot.schema_version,
        });
    }
    Ok(check_snapshot_rules(snapshot)?)
}

fn check_snapshot_rules(snapshot: &pb::RingSnapshot) -> Result<(), InvalidEvent> {
    RingName::new(snapshot.ring.as_str()).map_err(InvalidEvent::Ring)?;
    check_config(snapshot.config.as_ref())?;
    check_timestamp("taken_at", snapshot.taken_at.as_ref())?;
    check_members("members", &snapshot.members)?;
    let rule = |rule: String| InvalidEvent::Rule {
        field: "tokens",
        rule,
    };
    if snapshot.tokens.len() != snapshot.owners.len() {
        return Err(rule(format!(
            "{} tokens but {} owners",
            snapshot.tokens.len(),
            snapshot.owners.len()
        )));
    }
    check_token_order("tokens", &snapshot.tokens, &snapshot.owners)?;
    match snapshot
        .owners
        .iter()
        .find(|o| **o as usize >= snapshot.members.len())
    {
        Some(o) => Err(rule(format!("owner index {o} out of range"))),
        None => Ok(()),
    }
}

/// Checks and encodes a snapshot for the KV bucket (`schema_version` must be
/// [`SCHEMA_VERSION`]).
pub fn encode_snapshot(snapshot: &pb::RingSnapshot) -> Result<Bytes, EncodeError> {
    if snapshot.schema_version != SCHEMA_VERSION {
        return Err(EncodeError::Invalid(InvalidEvent::Rule {
            field: "schema_version",
            rule: format!("must be {SCHEMA_VERSION}, is {}", snapshot.schema_version),
        }));
    }
    check_snapshot_rules(snapshot)?;
    encoded(snapshot.encode_to_vec())
}

/// Decodes and checks a snapshot from the KV bucket.
pub fn decode_snapshot(bytes: &[u8]) -> Result<pb::RingSnapshot, DecodeError> {
    check_size(bytes.len())?;
    let snapshot = pb::RingSnapshot::decode(bytes).map_err(DecodeError::Malformed)?;
    check_snapshot(&snapshot)?;
    Ok(snapshot)
}
