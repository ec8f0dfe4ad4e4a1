//! NATS headers of every ringside message, defined once.
//!
//! `Nats-Msg-Id` makes JetStream drop duplicates; the `ce-*` headers follow the
//! CloudEvents NATS binding (binary mode) so generic tools know what the payload is;
//! `Ringside-Summary` makes `nats sub 'ringside.>'` readable without decoding.

use async_nats::HeaderMap;

use crate::event::{Event, MsgId};

/// JetStream deduplication id.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// Single-writer precondition (set by the publisher's `publish_expecting`).
pub const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// CloudEvents spec version (`1.0`).
pub const CE_SPECVERSION: &str = "ce-specversion";
/// CloudEvents id (same as [`MSG_ID`]).
pub const CE_ID: &str = "ce-id";
/// CloudEvents source (`ringside/<ring>` or the producer).
pub const CE_SOURCE: &str = "ce-source";
/// CloudEvents type: the full message name, `ringside.v1.RingRebalanced`.
pub const CE_TYPE: &str = "ce-type";
/// CloudEvents content type: [`CONTENT_TYPE_PROTOBUF`].
pub const CE_DATACONTENTTYPE: &str = "ce-datacontenttype";
/// The payload's content type.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/protobuf";
/// One-line human summary of the event.
pub const SUMMARY: &str = "Ringside-Summary";
/// Dead-letter copies: why the message was refused (a [`crate::codec::DecodeError`] label
/// or the handler's reason).
pub const DEADLETTER_REASON: &str = "Ringside-Deadletter-Reason";
/// Dead-letter copies: the human-readable error.
pub const DEADLETTER_ERROR: &str = "Ringside-Deadletter-Error";
/// Dead-letter copies: the subject the message arrived on.
pub const DEADLETTER_SUBJECT: &str = "Ringside-Deadletter-Subject";
/// Dead-letter copies: the stream and sequence it was stored at (`RINGSIDE:42`).
pub const DEADLETTER_SOURCE: &str = "Ringside-Deadletter-Source";
/// Dead-letter copies: the consumer that refused it.
pub const DEADLETTER_CONSUMER: &str = "Ringside-Deadletter-Consumer";
/// Dead-letter copies: the original payload size, when the copy had to be cut short.
pub const DEADLETTER_TRUNCATED: &str = "Ringside-Deadletter-Truncated";

/// The headers of a published event.
pub fn for_event(event: &Event, id: &MsgId) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MSG_ID, id.as_str());
    h.insert(CE_SPECVERSION, "1.0");
    h.insert(CE_ID, id.as_str());
    let source = if event.producer().is_empty() {
        format!("ringside/{}", event.ring())
    } else {
        crate::event::sanitize_header_value(event.producer(), 200)
    };
    h.insert(CE_SOURCE, source.as_str());
    h.insert(CE_TYPE, event.kind().type_name().as_str());
    h.insert(CE_DATACONTENTTYPE, CONTENT_TYPE_PROTOBUF);
    h.insert(SUMMARY, event.summary().as_str());
    h
}
