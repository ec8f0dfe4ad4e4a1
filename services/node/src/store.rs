//! The keys a node holds: each with its value (or a tombstone) and a [`Version`], kept
//! in hash-position order so a range of the ring is a range of the map.
//!
//! Copies of a key meet on several nodes (replicas, handoffs, read-through), so every
//! write carries a version and a copy only replaces an older one: the newest write
//! wins wherever the copies meet, in any order. Versions come from a hybrid logical
//! clock ([`Clock`]): the wall clock in microseconds, moved past every version the node
//! has seen, so a write made after another one was seen is newer than it.
//! A delete is a tombstone (a versioned absence), so an older copy arriving later
//! cannot bring the key back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// The version of one write: hybrid-logical-clock time, then the writer (so two writes
/// at the same clock still have an order every node agrees on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Microseconds since the Unix epoch, moved forward past every version seen.
    pub clock: u64,
    /// The writing node (a hash of its id).
    pub writer: u64,
}

/// One key's state on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The value; `None` is a tombstone (deleted).
    pub value: Option<Bytes>,
    /// Its version.
    pub version: Version,
}

impl Entry {
    /// The bytes it accounts for (key and value).
    fn size(&self, key: &[u8]) -> u64 {
        (key.len() + self.value.as_ref().map_or(0, Bytes::len)) as u64
    }
}

/// A hybrid logical clock of one node.
#[derive(Debug)]
pub struct Clock {
    writer: u64,
    last: AtomicU64,
}

impl Clock {
    /// The clock of the node with id `node`.
    pub fn new(node: &str) -> Self {
        Self {
            writer: xxhash_rust::xxh3::xxh3_64(node.as_bytes()),
            last: AtomicU64::new(0),
        }
    }

    /// A version newer than every one made or seen here.
    pub fn tick(&self) -> Version {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Version {
                        clock: next,
                        writer: self.writer,
                    };
                }
                Err(seen) => last = seen,
            }
        }
    }

    /// Moves the clock past a version seen from elsewhere.
    pub fn observe(&self, version: Version) {
        self.last.fetch_max(version.clock, Ordering::Relaxed);
    }
}

/// The keys of one node.
#[derive(Debug, Default)]
pub struct Store {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By (hash position, key).
    entries: BTreeMap<(u64, Box<[u8]>), Entry>,
    /// Keys with a value (tombstones not counted).
    live: u64,
    /// Bytes of the keys with a value.
    bytes: u64,
}

impl Inner {
    fn account(&mut self, key: &[u8], entry: &Entry, sign: i8) {
        if entry.value.is_some() {
            let size = entry.size(key);
            if sign > 0 {
                self.live += 1;
                self.bytes += size;
            } else {
                self.live = self.live.saturating_sub(1);
                self.bytes = self.bytes.saturating_sub(size);
            }
        }
    }
}

/// The ring position of a key.
pub fn position(key: &[u8]) -> u64 {
    ringside_ring::hash_key(key)
}

impl Store {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry of `key`, tombstones included.
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.read()
            .entries
            .get(&(position(key), Box::from(key)))
            .cloned()
    }

    /// Stores `entry` unless the store has a version at least as new. Whether it did.
    pub fn merge(&self, key: &[u8], entry: Entry) -> bool {
        let mut inner = self.write();
        let slot = (position(key), Box::from(key));
        if let Some(old) = inner.entries.get(&slot) {
            if old.version >= entry.version {
                return false;
            }
            let old = old.clone();
            inner.account(key, &old, -1);
        }
        inner.account(key, &entry, 1);
        inner.entries.insert(slot, entry);
        true
    }

    /// Removes `key` if its version is still `version` (a newer write stays).
    pub fn forget(&self, key: &[u8], version: Version) {
        let mut inner = self.write();
        let slot = (position(key), Box::from(key));
        if let Some(entry) = inner.entries.get(&slot)
            && entry.version == version
        {
            let entry = entry.clone();
            inner.account(key, &entry, -1);
            inner.entries.remove(&slot);
        }
    }

    /// Every entry (a copy of the handles: values are shared), in ring order.
    pub fn all(&self) -> Vec<(Box<[u8]>, Entry)> {
        self.read()
            .entries
            .iter()
            .map(|((_, key), entry)| (key.clone(), entry.clone()))
            .collect()
    }

    /// The entries whose position lies in one of `ranges`, each `(start, end]` on the
    /// ring (wrapping past the top when `start >= end`).
    pub fn in_ranges(&self, ranges: &[(u64, u64)]) -> Vec<(Box<[u8]>, Entry)> {
        let inner = self.read();
        let mut out = Vec::new();
        let mut take = |from: std::ops::Bound<u64>, to: std::ops::Bound<u64>| {
            use std::ops::Bound::{Excluded, Included, Unbounded};
            // From the first key at the start position; an excluded start's own keys
            // are skipped below.
            let lower = match from {
                Excluded(p) | Included(p) => Included((p, Box::<[u8]>::from(&[][..]))),
                Unbounded => Unbounded,
            };
            for ((position, key), entry) in inner.entries.range((lower, Unbounded)) {
                let inside = match to {
                    Included(end) => *position <= end,
                    _ => true,
                };
                if !inside {
                    break;
                }
                if let Excluded(start) = from
                    && *position == start
                {
                    continue;
                }
                out.push((key.clone(), entry.clone()));
            }
        };
        use std::ops::Bound::{Excluded, Included, Unbounded};
        for &(start, end) in ranges {
            if start < end {
                take(Excluded(start), Included(end));
            } else {
                // Wraps: (start, MAX] and [0, end].
                take(Excluded(start), Unbounded);
                take(Included(0), Included(end));
            }
        }
        out
    }

    /// Keys with a value, and their bytes (keys and values).
    pub fn held(&self) -> (u64, u64) {
        let inner = self.read();
        (inner.live, inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(clock: u64) -> Version {
        Version { clock, writer: 1 }
    }

    fn value(v: &str, clock: u64) -> Entry {
        Entry {
            value: Some(Bytes::from(v.to_owned())),
            version: at(clock),
        }
    }

    #[test]
    fn the_newest_version_wins_in_any_order() {
        let a = Store::default();
        let b = Store::default();
        let writes = [value("one", 1), value("three", 3), value("two", 2)];
        for w in &writes {
            a.merge(b"k", w.clone());
        }
        for w in writes.iter().rev() {
            b.merge(b"k", w.clone());
        }
        assert_eq!(a.get(b"k"), b.get(b"k"));
        assert_eq!(a.get(b"k").unwrap().version, at(3));
        assert_eq!(a.held(), (1, 1 + 5));
        // A tombstone newer than the value deletes it and cannot be undone by older.
        let tomb = Entry {
            value: None,
            version: at(4),
        };
        assert!(a.merge(b"k", tomb));
        assert!(!a.merge(b"k", value("two", 2)));
        assert_eq!(a.held(), (0, 0));
        a.forget(b"k", at(4));
        assert_eq!(a.get(b"k"), None);
    }

    #[test]
    fn ranges_select_by_position_and_wrap() {
        let store = Store::default();
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            store.merge(k.as_bytes(), value("v", i as u64 + 1));
        }
        let mid = u64::MAX / 2;
        for ranges in [
            vec![(0, mid)],
            vec![(mid, 7)],
            vec![(10, 10)],
            vec![(5, mid), (mid, 5)],
        ] {
            let inside = |p: u64| {
                ranges.iter().any(|&(s, e)| {
                    if s < e {
                        p > s && p <= e
                    } else {
                        p > s || p <= e
                    }
                })
            };
            let mut got: Vec<String> = store
                .in_ranges(&ranges)
                .into_iter()
                .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
                .collect();
            got.sort();
            let mut want: Vec<String> = keys
                .iter()
                .filter(|k| inside(position(k.as_bytes())))
                .cloned()
                .collect();
            want.sort();
            assert_eq!(got, want, "{ranges:?}");
        }
    }

    #[test]
    fn the_clock_moves_past_what_it_sees() {
        let clock = Clock::new("n1");
        let first = clock.tick();
        assert!(clock.tick() > first);
        let far = Version {
            clock: first.clock + 10_000_000_000,
            writer: 7,
        };
        clock.observe(far);
        assert!(clock.tick().clock > far.clock);
    }
}
