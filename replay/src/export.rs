//! The export file: the stored history of one ring, offline. Two encodings of the same
//! items, a header, the ring's snapshots, the stored messages in stream order, and an
//! end record (docs/replay.md has the byte-level description):
//!
//! - `ndjson`: one JSON object per line. The header line has `"format":
//!   "ringside-export"`; a message line has `seq`, `time` (RFC 3339, UTC), `subject` and
//!   `event` (the proto3 JSON of the envelope) or `undecodable` (`error`,
//!   `payload_hex`); a snapshot line has `snapshot_key` and `snapshot` (proto3 JSON of a
//!   `RingSnapshot`); the last line is `{"end":{"messages":N,"snapshots":M}}`.
//! - `pb`: the 8 bytes `RSEXPORT`, then frames, each a varint length and one protobuf
//!   [`pb::ExportItem`] (header, message with the payload bytes exactly as stored,
//!   snapshot, end). The frame messages are defined in `proto/ringside/v1/export.proto`
//!   and generated in `ringside-events` like every other schema.
//!
//! The end record carries the counts, so a truncated file is an error, not a shorter
//! history; a reader refuses anything after it. Reading never panics: a bad line or
//! frame is an [`ExportError`] saying where. Both encodings store the same header
//! fields; the reader checks them (version, time) in one place for both.

use std::io::{self, BufRead, Write};

use bytes::Bytes;
use prost::Message as _;
use ringside_events::pb::export_item::Kind;
use ringside_events::{codec, pb};
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::error::ReplayError;
use crate::record::{self, Record};

/// First bytes of a `pb` export.
const PB_MAGIC: &[u8; 8] = b"RSEXPORT";
/// Value of the header's `format` field in `ndjson` exports.
const NDJSON_FORMAT: &str = "ringside-export";
/// The version of the container this build writes and the only one it reads.
pub(crate) const VERSION: u32 = 1;
/// Largest frame or line accepted: one event or snapshot plus room for the framing.
const MAX_ITEM_BYTES: usize = codec::MAX_EVENT_BYTES * 2 + 4096;

/// How an export is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// Varint-length-delimited protobuf frames after an 8-byte magic.
    Pb,
}

/// What the export holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    /// The ring.
    pub(crate) ring: String,
    /// The stream the messages come from.
    pub(crate) stream: String,
    /// The first and last stream sequence the export covers (inclusive).
    pub(crate) from_seq: u64,
    /// See `from_seq`.
    pub(crate) to_seq: u64,
    /// When the export was written.
    pub(crate) exported_at: OffsetDateTime,
}

/// One item after the header.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// A snapshot of the ring, with its KV key.
    Snapshot {
        /// The KV key it was stored under.
        key: String,
        /// The snapshot (checked).
        snapshot: Box<pb::RingSnapshot>,
    },
    /// A stored message.
    Message(Box<Record>),
}

/// Why an export file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading failed.
    #[error("cannot read the export")]
    Io(#[source] io::Error),
    /// The first bytes are neither the `pb` magic nor an `ndjson` header.
    #[error("not a ringside export (it starts with neither {magic:?} nor a JSON header line)", magic = String::from_utf8_lossy(PB_MAGIC))]
    NotAnExport,
    /// A container version this build does not read.
    #[error("export version {0} is not supported (this build reads version {VERSION})")]
    Version(u32),
    /// A line or frame that does not parse or breaks the format.
    #[error("corrupt export at {at}: {what}")]
    Corrupt {
        /// Where (line number or byte offset).
        at: String,
        /// What is wrong.
        what: String,
    },
    /// The file ends before its end record.
    #[error("truncated export: it ends after {items} items without its end record")]
    Truncated {
        /// Items read before the end of the file.
        items: u64,
    },
}

/// Writes an export: the header at creation, then snapshots and messages, then
/// [`Writer::finish`] for the end record.
pub(crate) struct Writer<W: Write> {
    out: W,
    format: Format,
    messages: u64,
    snapshots: u64,
}

impl<W: Write> Writer<W> {
    /// Starts an export by writing its header.
    pub(crate) fn new(mut out: W, format: Format, header: &Header) -> Result<Self, ReplayError> {
        match format {
            Format::Ndjson => {
                let line = serde_json::json!({
                    "format": NDJSON_FORMAT,
                    "version": VERSION,
                    "ring": header.ring,
                    "stream": header.stream,
                    "from_seq": header.from_seq,
                    "to_seq": header.to_seq,
                    "exported_at": record::rfc3339(header.exported_at),
                });
                writeln!(out, "{line}").map_err(ReplayError::Write)?;
            }
            Format::Pb => {
                out.write_all(PB_MAGIC).map_err(ReplayError::Write)?;
                write_frame(
                    &mut out,
                    Kind::Header(pb::ExportHeader {
                        version: VERSION,
                        ring: header.ring.clone(),
                        stream: header.stream.clone(),
                        from_seq: header.from_seq,
                        to_seq: header.to_seq,
                        exported_at_unix_nanos: record::unix_nanos(header.exported_at),
                    }),
                )?;
            }
        }
        Ok(Self {
            out,
            format,
            messages: 0,
            snapshots: 0,
        })
    }

    /// Writes a snapshot with its KV key.
    pub(crate) fn snapshot(
        &mut self,
        key: &str,
        snapshot: &pb::RingSnapshot,
    ) -> Result<(), ReplayError> {
        match self.format {
            Format::Ndjson => {
                let json =
                    serde_json::to_string(snapshot).map_err(|e| ReplayError::EncodeSnapshot {
                        key: key.to_string(),
                        source: e,
                    })?;
                writeln!(
                    self.out,
                    "{{\"snapshot_key\":{},\"snapshot\":{json}}}",
                    record::json_string(key)
                )
                .map_err(ReplayError::Write)?;
            }
            Format::Pb => write_frame(
                &mut self.out,
                Kind::Snapshot(pb::ExportSnapshot {
                    key: key.to_string(),
                    snapshot: snapshot.encode_to_vec(),
                }),
            )?,
        }
        self.snapshots += 1;
        Ok(())
    }

    /// Writes a stored message.
    pub(crate) fn message(&mut self, r: &Record) -> Result<(), ReplayError> {
        match self.format {
            Format::Ndjson => {
                let line = r.to_json_line().map_err(ReplayError::EncodeEvent)?;
                writeln!(self.out, "{line}").map_err(ReplayError::Write)?;
            }
            Format::Pb => write_frame(
                &mut self.out,
                Kind::Message(pb::ExportMessage {
                    seq: r.seq,
                    time_unix_nanos: record::unix_nanos(r.time),
                    subject: r.subject.clone(),
                    payload: r.raw.to_vec(),
                }),
            )?,
        }
        self.messages += 1;
        Ok(())
    }

    /// Writes the end record and flushes; returns (messages, snapshots) written.
    pub(crate) fn finish(mut self) -> Result<(u64, u64), ReplayError> {
        match self.format {
            Format::Ndjson => writeln!(
                self.out,
                "{{\"end\":{{\"messages\":{},\"snapshots\":{}}}}}",
                self.messages, self.snapshots
            )
            .map_err(ReplayError::Write)?,
            Format::Pb => write_frame(
                &mut self.out,
                Kind::End(pb::ExportEnd {
                    messages: self.messages,
                    snapshots: self.snapshots,
                }),
            )?,
        }
        self.out.flush().map_err(ReplayError::Write)?;
        Ok((self.messages, self.snapshots))
    }
}

fn write_frame(out: &mut impl Write, kind: Kind) -> Result<(), ReplayError> {
    out.write_all(&pb::ExportItem { kind: Some(kind) }.encode_length_delimited_to_vec())
        .map_err(ReplayError::Write)
}

/// Reads an export item by item, checking the framing, the end record and its counts.
pub(crate) struct Reader<R: BufRead> {
    input: R,
    format: Format,
    header: Header,
    /// Byte offset of the next item.
    offset: u64,
    /// Items read after the header (messages, snapshots).
    messages: u64,
    snapshots: u64,
    /// Number of the last line read (ndjson), when counted from the start.
    line: Option<u64>,
    ended: bool,
}

impl<R: BufRead> Reader<R> {
    /// Detects the format from the first bytes and reads the header.
    pub(crate) fn open(mut input: R) -> Result<Self, ExportError> {
        let first = input.fill_buf().map_err(ExportError::Io)?;
        let format = if first.starts_with(PB_MAGIC) {
            Format::Pb
        } else if first.first() == Some(&b'{') {
            Format::Ndjson
        } else {
            return Err(ExportError::NotAnExport);
        };
        let mut reader = Self {
            input,
            format,
            header: Header {
                ring: String::new(),
                stream: String::new(),
                from_seq: 0,
                to_seq: 0,
                exported_at: OffsetDateTime::UNIX_EPOCH,
            },
            offset: 0,
            messages: 0,
            snapshots: 0,
            line: Some(0),
            ended: false,
        };
        if format == Format::Pb {
            reader.input.consume(PB_MAGIC.len());
            reader.offset = PB_MAGIC.len() as u64;
        }
        reader.header = reader.read_header()?;
        Ok(reader)
    }

    /// The header.
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// The format.
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Byte offset of the next item (to come back to it with [`Self::resume`]).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// A reader of the items of a file of `format` positioned at `offset` (obtained
    /// from [`Self::offset`] on the same file), to fetch one item again.
    pub(crate) fn resume(input: R, format: Format, header: Header, offset: u64) -> Self {
        Self {
            input,
            format,
            header,
            offset,
            messages: 0,
            snapshots: 0,
            line: None,
            ended: false,
        }
    }

    fn corrupt(&self, what: impl Into<String>) -> ExportError {
        let at = match (self.format, self.line) {
            (Format::Ndjson, Some(line)) => format!("line {line}"),
            _ => format!("byte {}", self.offset),
        };
        ExportError::Corrupt {
            at,
            what: what.into(),
        }
    }

    /// Reads the header and checks what both encodings store alike: the version and
    /// the time.
    fn read_header(&mut self) -> Result<Header, ExportError> {
        let stored = match self.format {
            Format::Ndjson => self.ndjson_header()?,
            Format::Pb => self.pb_header()?,
        };
        if stored.version != VERSION {
            return Err(ExportError::Version(stored.version));
        }
        let exported_at = match &stored.exported_at {
            StoredTime::Rfc3339(text) => record::parse_time(text).map_err(|e| e.to_string()),
            StoredTime::UnixNanos(nanos) => record::from_unix_nanos(*nanos),
        }
        .map_err(|e| self.corrupt(e))?;
        Ok(Header {
            ring: stored.ring,
            stream: stored.stream,
            from_seq: stored.from_seq,
            to_seq: stored.to_seq,
            exported_at,
        })
    }

    /// The first line, which must be a JSON header with the `ringside-export` format.
    fn ndjson_header(&mut self) -> Result<StoredHeader, ExportError> {
        let Some(line) = self.next_line()? else {
            return Err(ExportError::Truncated { items: 0 });
        };
        let h: JsonHeader = serde_json::from_str(&line)
            .map_err(|e| self.corrupt(format!("not an export header: {e}")))?;
        if h.format != NDJSON_FORMAT {
            return Err(ExportError::NotAnExport);
        }
        Ok(StoredHeader {
            version: h.version,
            ring: h.ring,
            stream: h.stream,
            from_seq: h.from_seq,
            to_seq: h.to_seq,
            exported_at: StoredTime::Rfc3339(h.exported_at),
        })
    }

    /// The first frame after the magic, which must be the header.
    fn pb_header(&mut self) -> Result<StoredHeader, ExportError> {
        match self.next_frame()? {
            Some(Kind::Header(h)) => Ok(StoredHeader {
                version: h.version,
                ring: h.ring,
                stream: h.stream,
                from_seq: h.from_seq,
                to_seq: h.to_seq,
                exported_at: StoredTime::UnixNanos(h.exported_at_unix_nanos),
            }),
            Some(_) => Err(self.corrupt("the first frame is not the header")),
            None => Err(ExportError::Truncated { items: 0 }),
        }
    }

    /// The next item, `None` after the end record (checked: counts match, nothing
    /// follows), or an error (a file that ends without its end record is truncated).
    pub(crate) fn next_item(&mut self) -> Result<Option<Item>, ExportError> {
        if self.ended {
            return Ok(None);
        }
        let item = match self.format {
            Format::Ndjson => self.next_json_item()?,
            Format::Pb => self.next_pb_item()?,
        };
        match &item {
            Some(Item::Message(_)) => self.messages += 1,
            Some(Item::Snapshot { .. }) => self.snapshots += 1,
            None => {}
        }
        Ok(item)
    }

    fn end(&mut self, messages: u64, snapshots: u64) -> Result<Option<Item>, ExportError> {
        if (messages, snapshots) != (self.messages, self.snapshots) {
            return Err(self.corrupt(format!(
                "the end record counts {messages} messages and {snapshots} snapshots, the file holds {} and {}",
                self.messages, self.snapshots
            )));
        }
        self.ended = true;
        let rest = self.input.fill_buf().map_err(ExportError::Io)?;
        if !rest.is_empty() {
            return Err(self.corrupt("data after the end record"));
        }
        Ok(None)
    }

    fn items(&self) -> u64 {
        self.messages + self.snapshots
    }

    /// The next line without its newline; `None` at the end of the file. A last line
    /// without a newline is a cut-off line.
    fn next_line(&mut self) -> Result<Option<String>, ExportError> {
        let mut buf = Vec::new();
        let n = <&mut R as io::Read>::take(&mut self.input, MAX_ITEM_BYTES as u64)
            .read_until(b'\n', &mut buf)
            .map_err(ExportError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') {
            return Err(if n >= MAX_ITEM_BYTES {
                self.corrupt(format!("a line longer than {MAX_ITEM_BYTES} bytes"))
            } else {
                ExportError::Truncated {
                    items: self.items(),
                }
            });
        }
        buf.pop();
        self.offset += n as u64;
        self.line = self.line.map(|l| l + 1);
        let line = String::from_utf8(buf).map_err(|_| self.corrupt("not UTF-8"))?;
        Ok(Some(line))
    }

    fn next_json_item(&mut self) -> Result<Option<Item>, ExportError> {
        let Some(text) = self.next_line()? else {
            return Err(ExportError::Truncated {
                items: self.items(),
            });
        };
        self.parse_json_item(&text)
    }

    fn parse_json_item(&mut self, text: &str) -> Result<Option<Item>, ExportError> {
        let line: JsonLine<'_> =
            serde_json::from_str(text).map_err(|e| self.corrupt(format!("bad JSON: {e}")))?;
        if let Some(end) = line.end {
            return self.end(end.messages, end.snapshots);
        }
        if let (Some(key), Some(raw)) = (line.snapshot_key, line.snapshot) {
            let snapshot: pb::RingSnapshot = serde_json::from_str(raw.get())
                .map_err(|e| self.corrupt(format!("bad snapshot: {e}")))?;
            return self.checked_snapshot(key, snapshot).map(Some);
        }
        let (Some(seq), Some(time), Some(subject)) = (line.seq, line.time, line.subject) else {
            return Err(self.corrupt("neither a message, a snapshot nor the end record"));
        };
        let time = record::parse_time(&time).map_err(|e| self.corrupt(e.to_string()))?;
        let record = match (line.event, line.undecodable) {
            (Some(raw), None) => {
                let event = codec::from_json(raw.get())
                    .map_err(|e| self.corrupt(format!("bad event: {}", record::error_chain(&e))))?;
                let bytes = codec::encode(&event).map_err(|e| self.corrupt(e.to_string()))?;
                Record {
                    seq,
                    time,
                    subject,
                    raw: bytes,
                    event: Ok(event),
                }
            }
            (None, Some(u)) => Record {
                seq,
                time,
                subject,
                raw: record::unhex(&u.payload_hex)
                    .map_err(|e| self.corrupt(format!("bad payload_hex: {e}")))?
                    .into(),
                event: Err(u.error),
            },
            _ => return Err(self.corrupt("a message needs exactly one of event, undecodable")),
        };
        Ok(Some(Item::Message(Box::new(record))))
    }

    fn checked_snapshot(
        &self,
        key: String,
        snapshot: pb::RingSnapshot,
    ) -> Result<Item, ExportError> {
        codec::check_snapshot(&snapshot)
            .map_err(|e| self.corrupt(format!("snapshot {key}: {}", record::error_chain(&e))))?;
        Ok(Item::Snapshot {
            key,
            snapshot: Box::new(snapshot),
        })
    }

    fn next_pb_item(&mut self) -> Result<Option<Item>, ExportError> {
        let at = self.offset;
        match self.next_frame()? {
            None => Err(ExportError::Truncated {
                items: self.items(),
            }),
            Some(Kind::Header(_)) => Err(self.corrupt_at(at, "a second header")),
            Some(Kind::End(end)) => self.end(end.messages, end.snapshots),
            Some(Kind::Snapshot(s)) => {
                let snapshot = codec::decode_snapshot(&s.snapshot).map_err(|e| {
                    self.corrupt_at(
                        at,
                        format!("snapshot {}: {}", s.key, record::error_chain(&e)),
                    )
                })?;
                Ok(Some(Item::Snapshot {
                    key: s.key,
                    snapshot: Box::new(snapshot),
                }))
            }
            Some(Kind::Message(m)) => {
                let time = record::from_unix_nanos(m.time_unix_nanos)
                    .map_err(|e| self.corrupt_at(at, e))?;
                Ok(Some(Item::Message(Box::new(Record::decode(
                    m.seq,
                    time,
                    m.subject,
                    Bytes::from(m.payload),
                )))))
            }
        }
    }

    fn corrupt_at(&self, offset: u64, what: impl Into<String>) -> ExportError {
        ExportError::Corrupt {
            at: format!("byte {offset}"),
            what: what.into(),
        }
    }

    /// The next frame's item; `None` at a clean end of file (between frames).
    fn next_frame(&mut self) -> Result<Option<Kind>, ExportError> {
        let at = self.offset;
        let Some(len) = self.read_varint()? else {
            return Ok(None);
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_ITEM_BYTES)
            .ok_or_else(|| self.corrupt_at(at, format!("frame length {len} is too large")))?;
        let mut buf = vec![0; len];
        self.input.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                ExportError::Truncated {
                    items: self.items(),
                }
            } else {
                ExportError::Io(e)
            }
        })?;
        self.offset += len as u64;
        let item = pb::ExportItem::decode(buf.as_slice())
            .map_err(|e| self.corrupt_at(at, format!("bad frame: {e}")))?;
        item.kind
            .map(Some)
            .ok_or_else(|| self.corrupt_at(at, "an empty frame"))
    }

    /// A varint; `None` if the file ends before its first byte.
    fn read_varint(&mut self) -> Result<Option<u64>, ExportError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let mut byte = [0u8; 1];
            match self.input.read(&mut byte).map_err(ExportError::Io)? {
                0 if i == 0 => return Ok(None),
                0 => {
                    return Err(ExportError::Truncated {
                        items: self.items(),
                    });
                }
                _ => {}
            }
            self.offset += 1;
            value |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] & 0x80 == 0 {
                return Ok(Some(value));
            }
        }
        Err(self.corrupt("a frame length of more than 10 bytes"))
    }
}

/// The header fields as either encoding stores them, before they are checked.
struct StoredHeader {
    version: u32,
    ring: String,
    stream: String,
    from_seq: u64,
    to_seq: u64,
    exported_at: StoredTime,
}

/// When the export was written, as stored.
enum StoredTime {
    /// `ndjson`: RFC 3339 text.
    Rfc3339(String),
    /// `pb`: Unix nanoseconds.
    UnixNanos(i64),
}

#[derive(Deserialize)]
struct JsonHeader {
    format: String,
    version: u32,
    ring: String,
    stream: String,
    from_seq: u64,
    to_seq: u64,
    exported_at: String,
}

#[derive(Deserialize)]
struct JsonLine<'a> {
    seq: Option<u64>,
    time: Option<String>,
    subject: Option<String>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    undecodable: Option<JsonUndecodable>,
    snapshot_key: Option<String>,
    #[serde(borrow)]
    snapshot: Option<&'a RawValue>,
    end: Option<JsonEnd>,
}

#[derive(Deserialize)]
struct JsonUndecodable {
    error: String,
    payload_hex: String,
}

#[derive(Deserialize)]
struct JsonEnd {
    messages: u64,
    snapshots: u64,
}

#[cfg(test)]
mod tests {
    use ringside_events::{Event, RingLedger, RingName, subject};
    use ringside_ring::RingConfig;

    use super::*;

    fn ring() -> RingName {
        RingName::new("orders").unwrap()
    }

    fn t(s: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_790_000_000 + s)
    }

    /// Two joins, their rebalance events, one undecodable message and a snapshot.
    fn sample() -> (Header, Vec<Record>, pb::RingSnapshot) {
        let mut ledger = RingLedger::new(ring(), RingConfig::default());
        let mut records = Vec::new();
        let mut seq = 0;
        for id in ["a", "b"] {
            let join = Event::new(
                ring(),
                pb::MembersJoined {
                    members: vec![pb::Member {
                        id: id.into(),
                        address: "127.0.0.1:1".into(),
                        weight: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )
            .unwrap();
            seq += 1;
            records.push(Record::decode(
                seq,
                t(seq as i64),
                subject::membership(&ring()),
                codec::encode(&join).unwrap(),
            ));
            let ringside_events::Outcome::Rebalanced(r) = ledger.apply(seq, join.body()) else {
                panic!("a join of a new member makes an epoch");
            };
            seq += 1;
            let event = Event::new(ring(), *r).unwrap();
            records.push(Record::decode(
                seq,
                t(seq as i64),
                subject::rebalance(&ring()),
                codec::encode(&event).unwrap(),
            ));
        }
        records.push(Record::decode(
            seq + 1,
            t(99),
            subject::scale(&ring()),
            Bytes::from_static(b"\x08\x96\x01garbage"),
        ));
        let header = Header {
            ring: "orders".into(),
            stream: "RINGSIDE".into(),
            from_seq: 1,
            to_seq: seq + 1,
            exported_at: t(100),
        };
        (header, records, ledger.snapshot().unwrap())
    }

    fn write(format: Format) -> Vec<u8> {
        let (header, records, snapshot) = sample();
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, format, &header).unwrap();
        w.snapshot("orders.e00000000000000000002", &snapshot)
            .unwrap();
        for r in &records {
            w.message(r).unwrap();
        }
        assert_eq!(w.finish().unwrap(), (records.len() as u64, 1));
        buf
    }

    fn read_all(bytes: &[u8]) -> Result<(Header, Vec<Item>), ExportError> {
        let mut r = Reader::open(bytes)?;
        let header = r.header().clone();
        let mut items = Vec::new();
        while let Some(item) = r.next_item()? {
            items.push(item);
        }
        Ok((header, items))
    }

    /// One frame of each kind: a header, a snapshot, an undecodable message, the end.
    fn small_pb_export() -> Vec<u8> {
        let header = Header {
            ring: "r".into(),
            stream: "RINGSIDE".into(),
            from_seq: 1,
            to_seq: 2,
            exported_at: t(100),
        };
        let snapshot = pb::RingSnapshot {
            schema_version: 1,
            ring: "r".into(),
            epoch: 1,
            membership_sequence: 1,
            rebalance_sequence: 2,
            members: vec![pb::Member {
                id: "a".into(),
                address: "127.0.0.1:1".into(),
                weight: 1,
                ..Default::default()
            }],
            tokens: vec![42],
            owners: vec![0],
            checksum: 7,
            ..Default::default()
        };
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, Format::Pb, &header).unwrap();
        w.snapshot("r.e00000000000000000001", &snapshot).unwrap();
        w.message(&Record::decode(
            2,
            t(1),
            "ringside.r.scale".into(),
            Bytes::from_static(b"\x08\x96\x01garbage"),
        ))
        .unwrap();
        w.finish().unwrap();
        buf
    }

    /// [`small_pb_export`] as version 1 writes it. These bytes were written by the first
    /// build, whose frame messages were hand-written prost structs; the generated
    /// `export.proto` types must keep them byte for byte, so that files exported
    /// before the move still read (and a change of a field number or type fails here).
    const GOLDEN_PB_V1: &str = concat!(
        // "RSEXPORT"
        "52534558504f5254",
        // ExportItem.header (1): version 1, ring, stream, from_seq, to_seq, exported_at.
        "1f0a1d08011201721a0852494e4753494445200128023080d0a7e3b6f3d6eb18",
        // ExportItem.snapshot (3): key, then the binary RingSnapshot.
        "521a500a17722e653030303030303030303030303030303030303031",
        "123508011201721801200128023a120a0161120b3132372e302e302e313a3118014208",
        "2a000000000000004a0100510700000000000000",
        // ExportItem.message (2): seq, time_unix_nanos, subject, payload.
        "2c122a0802108094b7fcc5f0d6eb181a1072696e67736964652e722e7363616c65",
        "220a08960167617262616765",
        // ExportItem.end (4): 1 message, 1 snapshot.
        "06220408011001",
    );

    #[test]
    fn pb_bytes_stay_those_of_version_1() {
        let golden = record::unhex(GOLDEN_PB_V1).unwrap();
        assert_eq!(small_pb_export(), golden);
        let (header, items) = read_all(&golden).unwrap();
        assert_eq!((header.ring.as_str(), header.to_seq), ("r", 2));
        let [Item::Snapshot { key, snapshot }, Item::Message(m)] = items.as_slice() else {
            panic!("a snapshot then a message: {items:?}");
        };
        assert_eq!(
            (key.as_str(), snapshot.tokens.as_slice()),
            ("r.e00000000000000000001", &[42][..])
        );
        assert_eq!(
            (m.seq, m.time, &m.raw[..]),
            (2, t(1), &b"\x08\x96\x01garbage"[..])
        );
    }

    #[test]
    fn both_formats_round_trip_every_record_and_snapshot() {
        let (header, records, snapshot) = sample();
        for format in [Format::Ndjson, Format::Pb] {
            let bytes = write(format);
            let (h, items) = read_all(&bytes).unwrap();
            assert_eq!(h, header, "{format:?}");
            let Item::Snapshot { key, snapshot: s } = &items[0] else {
                panic!("the snapshot comes first");
            };
            assert_eq!(
                (key.as_str(), &**s),
                ("orders.e00000000000000000002", &snapshot)
            );
            let read: Vec<&Record> = items[1..]
                .iter()
                .map(|i| match i {
                    Item::Message(r) => &**r,
                    Item::Snapshot { .. } => panic!("messages follow the snapshots"),
                })
                .collect();
            assert_eq!(read.len(), records.len());
            for (a, b) in read.iter().zip(&records) {
                assert_eq!(
                    (a.seq, a.time, &a.subject, &a.raw),
                    (b.seq, b.time, &b.subject, &b.raw),
                    "{format:?}"
                );
                assert_eq!(a.event.as_ref().ok(), b.event.as_ref().ok());
                assert_eq!(a.event.is_err(), b.event.is_err());
            }
        }
    }

    #[test]
    fn a_file_cut_anywhere_is_an_error_never_a_panic_or_a_shorter_history() {
        for format in [Format::Ndjson, Format::Pb] {
            let bytes = write(format);
            for cut in 0..bytes.len() {
                assert!(
                    read_all(&bytes[..cut]).is_err(),
                    "{format:?} cut at {cut} of {}",
                    bytes.len()
                );
            }
            let mut longer = bytes.clone();
            longer.extend_from_slice(b"\n");
            assert!(read_all(&longer).is_err(), "{format:?}: data after the end");
        }
    }

    #[test]
    fn flipped_bytes_are_errors_or_a_still_valid_file_never_a_panic() {
        for format in [Format::Ndjson, Format::Pb] {
            let bytes = write(format);
            for i in (0..bytes.len()).step_by(7) {
                let mut bad = bytes.clone();
                bad[i] ^= 0x5a;
                // Either it is refused, or the flip hit bytes that still parse (a digit of
                // a time, a byte of an undecodable payload): no panic either way.
                let _ = read_all(&bad);
            }
        }
        assert!(matches!(read_all(b"hello"), Err(ExportError::NotAnExport)));
        assert!(matches!(read_all(b""), Err(ExportError::NotAnExport)));
        let newer = b"{\"format\":\"ringside-export\",\"version\":9,\"ring\":\"r\",\"stream\":\"S\",\"from_seq\":1,\"to_seq\":1,\"exported_at\":\"2026-01-01T00:00:00Z\"}\n";
        assert!(matches!(read_all(newer), Err(ExportError::Version(9))));
    }
}
