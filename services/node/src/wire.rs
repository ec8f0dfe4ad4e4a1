//! The body nodes send each other entries in (replica writes, handoffs, read-through
//! answers): a sequence of frames, each a key, its version and its value or a
//! tombstone. Binary, because a handoff moves many keys: 100,000 keys of 1 KiB are
//! 100 MB on loopback, and a text encoding would double that.
//!
//! ```text
//! frame := key_len: u16 | key | clock: u64 | writer: u64 | kind: u8 (0 value, 1 tombstone)
//!          | value_len: u32 | value          (the last two only for a value)
//! ```
//!
//! Integers are big-endian. Decoding checks every length against what is left and never
//! panics; a malformed body is an error for the whole batch.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::config::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::store::{Entry, Version};

/// Why a batch body is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body ends inside a frame.
    #[error("the batch ends inside a frame")]
    Truncated,
    /// A key or value is longer than the node accepts.
    #[error("a {what} of {len} bytes is longer than {max}")]
    TooLong {
        /// `key` or `value`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An empty key.
    #[error("an empty key")]
    EmptyKey,
    /// A kind byte that is neither value nor tombstone.
    #[error("unknown entry kind {0}")]
    Kind(u8),
}

/// Appends one entry's frame to `out`.
pub fn put(out: &mut BytesMut, key: &[u8], entry: &Entry) {
    // Keys and values are checked on the way in (API, decode), so they fit.
    out.put_u16(u16::try_from(key.len()).unwrap_or(u16::MAX));
    out.put_slice(key);
    out.put_u64(entry.version.clock);
    out.put_u64(entry.version.writer);
    match &entry.value {
        Some(value) => {
            out.put_u8(0);
            out.put_u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
            out.put_slice(value);
        }
        None => out.put_u8(1),
    }
}

/// The encoded size of one entry's frame.
pub fn frame_len(key: &[u8], entry: &Entry) -> usize {
    2 + key.len() + 17 + entry.value.as_ref().map_or(0, |v| 4 + v.len())
}

/// Decodes a whole batch; the values share `body`'s memory.
pub fn decode(mut body: Bytes) -> Result<Vec<(Bytes, Entry)>, WireError> {
    let mut out = Vec::new();
    while body.has_remaining() {
        let key_len = usize::from(take_u16(&mut body)?);
        if key_len == 0 {
            return Err(WireError::EmptyKey);
        }
        if key_len > MAX_KEY_BYTES {
            return Err(WireError::TooLong {
                what: "key",
                len: key_len,
                max: MAX_KEY_BYTES,
            });
        }
        let key = take(&mut body, key_len)?;
        let version = Version {
            clock: take_u64(&mut body)?,
            writer: take_u64(&mut body)?,
        };
        let value = match take(&mut body, 1)?[0] {
            0 => {
                let len = usize::try_from(take_u32(&mut body)?).unwrap_or(usize::MAX);
                if len > MAX_VALUE_BYTES {
                    return Err(WireError::TooLong {
                        what: "value",
                        len,
                        max: MAX_VALUE_BYTES,
                    });
                }
                Some(take(&mut body, len)?)
            }
            1 => None,
            other => return Err(WireError::Kind(other)),
        };
        out.push((key, Entry { value, version }));
    }
    Ok(out)
}

fn take(body: &mut Bytes, n: usize) -> Result<Bytes, WireError> {
    if body.remaining() < n {
        return Err(WireError::Truncated);
    }
    Ok(body.split_to(n))
}

fn take_u16(body: &mut Bytes) -> Result<u16, WireError> {
    body.try_get_u16().map_err(|_| WireError::Truncated)
}

fn take_u32(body: &mut Bytes) -> Result<u32, WireError> {
    body.try_get_u32().map_err(|_| WireError::Truncated)
}

fn take_u64(body: &mut Bytes) -> Result<u64, WireError> {
    body.try_get_u64().map_err(|_| WireError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(value: Option<&[u8]>, clock: u64) -> Entry {
        Entry {
            value: value.map(Bytes::copy_from_slice),
            version: Version { clock, writer: 9 },
        }
    }

    #[test]
    fn a_batch_round_trips() {
        let entries = vec![
            (Bytes::from_static(b"a"), entry(Some(b"one"), 1)),
            (Bytes::from_static(b"b"), entry(None, 2)),
            (Bytes::from_static(b"c"), entry(Some(b""), 3)),
        ];
        let mut out = BytesMut::new();
        for (k, e) in &entries {
            put(&mut out, k, e);
        }
        let len: usize = entries.iter().map(|(k, e)| frame_len(k, e)).sum();
        assert_eq!(out.len(), len);
        assert_eq!(decode(out.freeze()).unwrap(), entries);
    }

    #[test]
    fn malformed_batches_are_errors() {
        assert_eq!(
            decode(Bytes::from_static(&[0, 0])),
            Err(WireError::EmptyKey)
        );
        assert_eq!(
            decode(Bytes::from_static(&[0, 5, b'a'])),
            Err(WireError::Truncated)
        );
        let mut out = BytesMut::new();
        put(&mut out, b"k", &entry(None, 1));
        let mut bad = out.to_vec();
        let last = bad.len() - 1;
        bad[last] = 7;
        assert_eq!(decode(Bytes::from(bad)), Err(WireError::Kind(7)));
    }

    proptest! {
        /// Any bytes decode to entries or an error, never a panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(Bytes::from(bytes));
        }
    }
}
