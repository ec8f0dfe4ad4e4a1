//! Ring snapshots in the KV bucket `RINGSIDE_SNAPSHOTS`: loading the newest at start,
//! writing one every N epochs and at shutdown, pruning old ones.
//!
//! # Keys
//! Each snapshot is stored twice: under `<ring>.e<epoch>` (20 digits, so keys sort by
//! epoch; replay picks the newest at or before the point it is asked about) and as a
//! full copy under `<ring>.latest` (one read at start, no pointer that could dangle
//! after a prune). Every value is a `RingSnapshot` checked by
//! `codec::decode_snapshot`, so any key decodes the same way.
//!
//! # Two reducers
//! Racing reducers write the same epochs. The per-epoch key is created once (the first
//! writer wins; the copies are equal but for `taken_at`), and `latest` is only replaced
//! by a snapshot that is further along (epoch, then membership sequence), with a
//! compare-and-set on its revision, so it never moves backwards.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use async_nats::jetstream::{self, kv};
use tokio::sync::Notify;

use crate::state::View;
use futures::TryStreamExt;
use ringside_events::{RingName, codec, pb, subject};

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bucket could not be opened (not provisioned, or no permission).
    #[error("opening KV bucket {bucket}")]
    Open {
        /// The bucket.
        bucket: &'static str,
        /// The client's error.
        #[source]
        source: jetstream::context::KeyValueError,
    },
    /// Reading a key failed.
    #[error("reading snapshot key {key}")]
    Read {
        /// The key.
        key: String,
        /// The client's error.
        #[source]
        source: kv::EntryError,
    },
    /// Listing the bucket's keys failed.
    #[error("listing snapshot keys")]
    List(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The snapshot could not be encoded (too large, or breaking the contract).
    #[error("encoding the snapshot of epoch {epoch}")]
    Encode {
        /// The epoch.
        epoch: u64,
        /// The codec's error.
        #[source]
        source: ringside_events::EncodeError,
    },
    /// The ring could not be described as a snapshot (a bug).
    #[error("describing the ring as a snapshot")]
    Describe(#[source] ringside_events::convert::ConvertError),
    /// Writing a key failed.
    #[error("writing snapshot key {key}")]
    Write {
        /// The key.
        key: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A snapshot read from the bucket, with the key it came from.
#[derive(Debug)]
pub struct Loaded {
    /// The key.
    pub key: String,
    /// The checked snapshot.
    pub snapshot: pb::RingSnapshot,
}

/// Where a snapshot's position is, for "is this one further along?".
fn position(s: &pb::RingSnapshot) -> (u64, u64) {
    (s.epoch, s.membership_sequence)
}

/// The snapshots of one ring.
#[derive(Debug)]
pub struct SnapshotStore {
    kv: kv::Store,
    ring: RingName,
    keep: usize,
    /// What we last saw in `latest`: its position and revision (for compare-and-set).
    latest: Option<((u64, u64), u64)>,
}

impl SnapshotStore {
    /// Opens the bucket for `ring`, keeping `keep` per-epoch snapshots when pruning.
    pub async fn open(
        js: &jetstream::Context,
        ring: RingName,
        keep: usize,
    ) -> Result<Self, SnapshotError> {
        let kv = js
            .get_key_value(subject::KV_SNAPSHOTS)
            .await
            .map_err(|source| SnapshotError::Open {
                bucket: subject::KV_SNAPSHOTS,
                source,
            })?;
        Ok(Self {
            kv,
            ring,
            keep: keep.max(1),
            latest: None,
        })
    }

    /// Reads and checks one key; `Ok(None)` when absent, deleted or not a valid snapshot
    /// of this ring (logged: a corrupt snapshot costs time, never correctness).
    async fn read(&self, key: &str) -> Result<Option<(pb::RingSnapshot, u64)>, SnapshotError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|source| SnapshotError::Read {
                key: key.to_string(),
                source,
            })?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        match codec::decode_snapshot(&entry.value) {
            Ok(s) if s.ring == self.ring.as_str() => Ok(Some((s, entry.revision))),
            Ok(s) => {
                tracing::warn!(%key, ring = %s.ring, "Snapshot key holds another ring's snapshot; ignoring it.");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "Snapshot does not decode; ignoring it.");
                Ok(None)
            }
        }
    }

    /// The per-epoch snapshot keys of this ring with their epochs, oldest first.
    async fn epoch_keys(&self) -> Result<Vec<(u64, String)>, SnapshotError> {
        let prefix = format!("{}.e", self.ring);
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(|e| SnapshotError::List(Box::new(e)))?
            .try_collect()
            .await
            .map_err(|e| SnapshotError::List(Box::new(e)))?;
        let mut epochs: Vec<(u64, String)> = keys
            .into_iter()
            .filter_map(|k| {
                let epoch = k.strip_prefix(&prefix)?.parse::<u64>().ok()?;
                Some((epoch, k))
            })
            .collect();
        epochs.sort();
        Ok(epochs)
    }

    /// The newest usable snapshot: `latest`, else the newest per-epoch snapshot that
    /// reads back, else `None` (fold from the first event).
    pub async fn load_newest(&mut self) -> Result<Option<Loaded>, SnapshotError> {
        let latest_key = subject::latest_snapshot_key(&self.ring);
        if let Some((snapshot, revision)) = self.read(&latest_key).await? {
            self.latest = Some((position(&snapshot), revision));
            return Ok(Some(Loaded {
                key: latest_key,
                snapshot,
            }));
        }
        for (_, key) in self.epoch_keys().await?.into_iter().rev() {
            if let Some((snapshot, _)) = self.read(&key).await? {
                return Ok(Some(Loaded { key, snapshot }));
            }
        }
        Ok(None)
    }

    /// Stores `snapshot` (stamped with `taken_at`) under its epoch key and, if it is
    /// further along, as `latest`; then prunes old epoch keys. Takes the snapshot to
    /// stamp it in place and free it once encoded (megabytes at 1000 members).
    pub async fn write(&mut self, mut snapshot: pb::RingSnapshot) -> Result<(), SnapshotError> {
        snapshot.taken_at = Some(ringside_events::event::timestamp(SystemTime::now()));
        let at = position(&snapshot);
        let bytes = codec::encode_snapshot(&snapshot).map_err(|source| SnapshotError::Encode {
            epoch: snapshot.epoch,
            source,
        })?;
        // Only the encoding is written, over several round trips.
        drop(snapshot);
        let key = subject::snapshot_key(&self.ring, at.0);
        match self.kv.create(&key, bytes.clone()).await {
            Ok(_) => {}
            // A racing reducer (or an earlier run) stored this epoch already.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(SnapshotError::Write {
                    key,
                    source: Box::new(e),
                });
            }
        }
        self.replace_latest(at, bytes).await?;
        if let Err(e) = self.prune().await {
            tracing::warn!(error = %crate::error_chain(&e), "Pruning old snapshots failed; trying again after the next snapshot.");
        }
        Ok(())
    }

    /// Compare-and-set of `latest` with the snapshot at position `at`, only ever
    /// forwards.
    async fn replace_latest(
        &mut self,
        at: (u64, u64),
        bytes: bytes::Bytes,
    ) -> Result<(), SnapshotError> {
        let key = subject::latest_snapshot_key(&self.ring);
        let write_err = |e: Box<dyn std::error::Error + Send + Sync>| SnapshotError::Write {
            key: key.clone(),
            source: e,
        };
        // Two rounds are enough unless another reducer writes in between every time;
        // then it is as far along as we are and `latest` is in good hands.
        for _ in 0..3 {
            // Ok(revision), Err(None) for "someone else wrote it", Err(Some(e)) for a failure.
            let attempt: Result<u64, Option<Box<dyn std::error::Error + Send + Sync>>> = match self
                .latest
            {
                Some((have, _)) if have >= at => return Ok(()),
                Some((_, revision)) => match self.kv.update(&key, bytes.clone(), revision).await {
                    Ok(r) => Ok(r),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(None),
                    Err(e) => Err(Some(Box::new(e))),
                },
                None => match self.kv.create(&key, bytes.clone()).await {
                    Ok(r) => Ok(r),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(None),
                    Err(e) => Err(Some(Box::new(e))),
                },
            };
            match attempt {
                Ok(revision) => {
                    self.latest = Some((at, revision));
                    return Ok(());
                }
                Err(Some(e)) => return Err(write_err(e)),
                Err(None) => {
                    tracing::debug!(%key, "The latest snapshot changed under us; re-reading it.");
                    self.latest = match self.read(&key).await? {
                        Some((s, revision)) => Some((position(&s), revision)),
                        // Deleted or unreadable: overwrite it at its revision.
                        None => match self.kv.entry(&key).await {
                            Ok(entry) => entry.map(|e| ((0, 0), e.revision)),
                            Err(e) => return Err(write_err(Box::new(e))),
                        },
                    };
                }
            }
        }
        Ok(())
    }

    /// Deletes all but the newest `keep` per-epoch snapshots.
    async fn prune(&self) -> Result<(), SnapshotError> {
        let keys = self.epoch_keys().await?;
        let excess = keys.len().saturating_sub(self.keep);
        for (_, key) in keys.into_iter().take(excess) {
            self.kv
                .delete(&key)
                .await
                .map_err(|e| SnapshotError::Write {
                    key: key.clone(),
                    source: Box::new(e),
                })?;
        }
        Ok(())
    }
}

/// The newest state waiting to become a snapshot: the fold loop puts, the writer takes.
///
/// A writer that falls behind skips to the newest state, and nothing stays held once it
/// is written (a ring at 1000 members and its snapshot are megabytes).
#[derive(Debug, Default)]
pub struct SnapshotSlot {
    next: Mutex<(Option<Arc<View>>, bool)>,
    changed: Notify,
}

impl SnapshotSlot {
    /// Replaces what is waiting with `view`.
    pub fn put(&self, view: Arc<View>) {
        self.next.lock().unwrap_or_else(PoisonError::into_inner).0 = Some(view);
        self.changed.notify_one();
    }

    /// No more puts: the writer ends once it has taken what is waiting.
    pub fn close(&self) {
        self.next.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.changed.notify_one();
    }

    /// The next state to write; `None` once closed and empty.
    pub async fn take(&self) -> Option<Arc<View>> {
        loop {
            {
                let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(view) = next.0.take() {
                    return Some(view);
                }
                if next.1 {
                    return None;
                }
            }
            // A notification sent before this wait is kept as a permit: none is lost.
            self.changed.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_ring::{RingConfig, Strategy};

    fn view(ledger: &mut ringside_events::RingLedger, seq: u64) -> Arc<View> {
        let joined = pb::MembersJoined {
            members: vec![pb::Member {
                id: format!("m{seq}"),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        ledger.apply(seq, &joined.into());
        Arc::new(View::of(ledger))
    }

    #[tokio::test]
    async fn the_writer_gets_the_newest_state_and_ends_after_close() {
        let mut ledger = ringside_events::RingLedger::new(
            RingName::new("t").unwrap(),
            RingConfig::new(Strategy::Random, 2).unwrap(),
        );
        let slot = Arc::new(SnapshotSlot::default());
        slot.put(view(&mut ledger, 1));
        slot.put(view(&mut ledger, 2));
        assert_eq!(slot.take().await.unwrap().epoch, 2);
        // A put while the writer waits wakes it.
        let waiting = tokio::spawn({
            let slot = Arc::clone(&slot);
            async move { slot.take().await.map(|v| v.epoch) }
        });
        tokio::task::yield_now().await;
        slot.put(view(&mut ledger, 3));
        assert_eq!(waiting.await.unwrap(), Some(3));
        slot.put(view(&mut ledger, 4));
        slot.close();
        assert_eq!(slot.take().await.map(|v| v.epoch), Some(4));
        assert!(slot.take().await.is_none());
    }
}
