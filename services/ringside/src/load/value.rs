//! Checkable values: every value `ringside load` writes names the run, the write counter
//! and the key it was written for, so a value read back later says which write it came
//! from, and a stale or misplaced value is recognised without keeping the values.
//!
//! ```text
//! ringside-load run=5f0c2a9e8d7b6a41 seq=1834 key=user:17\n
//! abcdefghijklmnopqrstuvwxyzabcdef...   (filler up to --value-bytes)
//! ```
//!
//! The header is always whole: a value is never shorter than its header.

use bytes::Bytes;

/// First word of every value.
const MAGIC: &str = "ringside-load";

/// Which write a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The run that wrote it (random per run).
    pub(crate) run: u64,
    /// The run's write counter at the write.
    pub(crate) seq: u64,
    /// The key it was written for.
    pub(crate) key: String,
}

/// The value of write `seq` of `run` to `key`: its header, then filler up to `size` bytes.
pub(crate) fn value(run: u64, seq: u64, key: &str, size: usize) -> Bytes {
    let mut bytes = format!("{MAGIC} run={run:016x} seq={seq} key={key}\n").into_bytes();
    let header = bytes.len();
    bytes.extend((header..size).map(|i| b'a' + (i % 26) as u8));
    Bytes::from(bytes)
}

/// The stamp in a value's header, or `None` if it is not a `ringside load` value.
pub(crate) fn parse(value: &[u8]) -> Option<Stamp> {
    let end = value.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&value[..end]).ok()?;
    let rest = header.strip_prefix(MAGIC)?.strip_prefix(" run=")?;
    let (run, rest) = rest.split_once(" seq=")?;
    let (seq, key) = rest.split_once(" key=")?;
    Some(Stamp {
        run: u64::from_str_radix(run, 16).ok()?,
        seq: seq.parse().ok()?,
        key: key.to_owned(),
    })
}

/// The digest a record keeps of a value (XXH3, 64 bits).
pub(crate) fn digest(value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_says_which_write_it_came_from() {
        let v = value(0xabc, 42, "user:7", 200);
        assert_eq!(v.len(), 200);
        assert_eq!(
            parse(&v),
            Some(Stamp {
                run: 0xabc,
                seq: 42,
                key: "user:7".into()
            })
        );
        // Asked for less than the header: the header stays whole.
        let short = value(1, 2, "user:1", 3);
        assert!(short.len() > 3);
        assert_eq!(parse(&short).map(|s| s.seq), Some(2));
        assert_ne!(digest(&value(1, 2, "k", 64)), digest(&value(1, 3, "k", 64)));
    }

    #[test]
    fn foreign_bytes_are_not_a_value() {
        for bad in [
            &b""[..],
            b"hello",
            b"hello\n",
            b"ringside-load run=zz seq=1 key=k\n",
            b"ringside-load run=1 seq=x key=k\n",
            b"ringside-load run=1 key=k\n",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
