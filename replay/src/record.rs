//! One stored message as replay sees it, wherever it came from (the `RINGSIDE` stream
//! or an export file), and the time, hex and JSON forms the reports use.
//!
//! # How it fits
//! Sources turn stream messages and export records into [`Record`]s; the pure
//! computations and every caller only see records. A message that does not decode
//! stays a record (with its error), so it is counted and shown, never fatal, and an
//! export keeps it byte for byte.

use std::fmt::Write as _;

use bytes::Bytes;
use ringside_events::{EncodeError, Event, codec};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub(crate) use ringside_events::error_chain;

/// A stored message: its stream position, when the server stored it, and the event.
#[derive(Clone, Debug)]
pub struct Record {
    /// Stream sequence.
    pub seq: u64,
    /// When the server stored it.
    pub time: OffsetDateTime,
    /// The subject it was stored under.
    pub subject: String,
    /// The payload as stored (a binary `Envelope`, or whatever was published).
    pub raw: Bytes,
    /// The decoded event, or why the payload does not decode (the error chain).
    pub event: Result<Event, String>,
}

impl Record {
    /// A record from a stored payload, decoding it.
    pub fn decode(seq: u64, time: OffsetDateTime, subject: String, raw: Bytes) -> Self {
        let event = codec::decode_on(&subject, &raw).map_err(|e| error_chain(&e));
        Self {
            seq,
            time,
            subject,
            raw,
            event,
        }
    }

    /// One JSON object on one line: `seq`, `time`, `subject`, and `event` (the proto3
    /// JSON of the envelope) or `undecodable` (`error` and the payload in hex).
    pub fn to_json_line(&self) -> Result<String, EncodeError> {
        let mut line = format!(
            "{{\"seq\":{},\"time\":\"{}\",\"subject\":{},",
            self.seq,
            rfc3339(self.time),
            json_string(&self.subject)
        );
        // Writing to a String cannot fail.
        let _ = match &self.event {
            Ok(event) => write!(line, "\"event\":{}}}", codec::to_json(event)?),
            Err(error) => write!(
                line,
                "\"undecodable\":{{\"error\":{},\"payload_hex\":\"{}\"}}}}",
                json_string(error),
                hex(&self.raw)
            ),
        };
        Ok(line)
    }
}

/// `s` as a JSON string literal (quoted, escaped).
pub(crate) fn json_string(s: &str) -> String {
    // A `Value`'s Display is serde_json's compact writer, which cannot fail on a string.
    serde_json::Value::from(s).to_string()
}

/// RFC 3339 in UTC (`2026-11-26T03:14:00.5Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        // Only years outside 0..=9999 cannot be written; no stream time is.
        .unwrap_or_else(|_| format!("{} s since 1970", t.unix_timestamp()))
}

/// A time that is not RFC 3339.
///
/// The parser's reason is part of the message rather than a `source`: command lines
/// show this error through clap, which prints no sources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not an RFC 3339 time like 2026-11-26T03:14:00Z ({reason})")]
pub struct TimeError {
    /// What was given.
    pub input: String,
    /// Why it does not parse.
    pub reason: String,
}

/// Parses an RFC 3339 time (`2026-11-26T03:14:00Z`, offsets allowed).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, TimeError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| TimeError {
        input: s.to_string(),
        reason: e.to_string(),
    })
}

/// A time from Unix nanoseconds (export files), or why it is out of range.
pub(crate) fn from_unix_nanos(nanos: i64) -> Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .map_err(|_| format!("time {nanos} ns since 1970 is out of range"))
}

/// Unix nanoseconds of a time (export files); saturates outside 1677..2262.
pub(crate) fn unix_nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes from lowercase or uppercase hex.
pub(crate) fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("bad hex digits at offset {i}"))
        })
        .collect()
}

/// A checksum (or a ring position) as the reports write it (`0x0123456789abcdef`).
pub fn checksum_hex(checksum: u64) -> String {
    format!("{checksum:#018x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_utc() {
        let t = parse_time("2026-11-26T04:14:00.25+01:00").unwrap();
        assert_eq!(rfc3339(t), "2026-11-26T03:14:00.25Z");
        assert_eq!(from_unix_nanos(unix_nanos(t)).unwrap(), t);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-11-26").is_err());
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00abFF").unwrap(), vec![0, 0xab, 0xff]);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
        assert!(unhex("é1").is_err());
    }

    #[test]
    fn undecodable_records_keep_their_bytes_in_json() {
        let t = parse_time("2026-01-01T00:00:00Z").unwrap();
        let r = Record::decode(
            7,
            t,
            "ringside.r.membership".into(),
            Bytes::from_static(b"\xff"),
        );
        assert!(r.event.is_err());
        let line = r.to_json_line().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["time"], "2026-01-01T00:00:00Z");
        assert_eq!(v["undecodable"]["payload_hex"], "ff");
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        for s in ["plain", "quote \" and \\ and \n", "é ✓", "\u{1}"] {
            assert_eq!(json_string(s), serde_json::to_string(s).unwrap());
        }
    }
}
