//! `--record FILE`: every write of a run, one JSON line each, and the rule `--verify`
//! judges a value read back by.
//!
//! ```text
//! {"run":"5f0c2a9e8d7b6a41","key":"user:17","seq":1834,"done":1840,"ack":true,"bytes":256,"xxh3":"9a3c0d2e11f04b7c"}
//! ```
//!
//! - `seq`: the run's write counter when the write was planned (1, 2, ...); the value
//!   carries it (see `value`).
//! - `done`: the write counter when the write's answer (or failure) came back: every
//!   write with a larger `seq` was sent after this one ended.
//! - `ack`: the node answered 2xx (for `PUT`, 204: all replicas hold it). Writes that
//!   failed are recorded too (`false`): a 503 or a timeout may still have stored the
//!   value somewhere, and reading it back later is not corruption.
//! - `xxh3`: the value's digest; `bytes` its length.
//!
//! # The verdict on a key
//! A write W *supersedes* a write X of the same key when W was acknowledged and sent
//! after X ended (`W.seq > X.done`): every correct history applies W after X. Writes
//! that overlap may land in either order, so neither supersedes the other. Reading the
//! key back after the run, the value must come from a write that no acknowledged write
//! supersedes:
//! - `ok`: it does (or the key is absent and no write of it was acknowledged);
//! - `missing`: absent (404) although a write was acknowledged;
//! - `stale`: from a superseded write: an acknowledged write was lost;
//! - `corrupt`: not a value of this key, or its digest is not the recorded one;
//! - `other run`: a value of another run (a later run wrote the key): not judged;
//! - `unrecorded`: a value of this run the record does not have (it was cut short).
//!
//! This assumes a write does not take effect after its client saw it end (answered or
//! timed out), which holds while `--timeout` is longer than a node takes to give up on
//! a replica.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufWriter, Write as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::value;

/// One recorded write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Written {
    /// The run, 16 hex digits.
    pub(crate) run: String,
    /// The key.
    pub(crate) key: String,
    /// Write counter when planned.
    pub(crate) seq: u64,
    /// Write counter when it ended.
    pub(crate) done: u64,
    /// Acknowledged (2xx).
    pub(crate) ack: bool,
    /// Value length.
    pub(crate) bytes: usize,
    /// Value digest, 16 hex digits.
    pub(crate) xxh3: String,
}

/// Formats a run id or digest as the record writes it.
pub(crate) fn hex(v: u64) -> String {
    format!("{v:016x}")
}

/// Appends written lines to the record file.
#[derive(Debug)]
pub(crate) struct Recorder {
    out: BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

impl Recorder {
    /// Creates (or truncates) the record file.
    pub(crate) fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create the record {}", path.display()))?;
        Ok(Self {
            out: BufWriter::new(file),
            path: path.to_owned(),
        })
    }

    /// Records one write.
    pub(crate) fn write(&mut self, written: &Written) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, written)?;
        writeln!(self.out).with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Flushes the file to disk: the record must outlive this process.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_all())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// The writes of one key.
#[derive(Debug, Default)]
pub(crate) struct KeyWrites {
    /// By seq: when it ended, its digest.
    writes: HashMap<u64, (u64, u64)>,
    /// Largest seq of an acknowledged write.
    last_acked: Option<u64>,
}

impl KeyWrites {
    /// Whether a write of the key was acknowledged.
    pub(crate) fn acknowledged(&self) -> bool {
        self.last_acked.is_some()
    }
}

/// A record, read back.
#[derive(Debug)]
pub(crate) struct Book {
    /// The run that wrote it.
    pub(crate) run: u64,
    /// Every key written, with its writes.
    pub(crate) keys: BTreeMap<String, KeyWrites>,
}

/// Reads a record file (one run).
pub(crate) fn read(path: &Path) -> anyhow::Result<Book> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the record {}", path.display()))?;
    let mut run = None;
    let mut keys: BTreeMap<String, KeyWrites> = BTreeMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), n + 1);
        let w: Written = serde_json::from_str(&line)
            .with_context(|| format!("{} is not a record of ringside load", at()))?;
        let (this_run, digest) = match (
            u64::from_str_radix(&w.run, 16),
            u64::from_str_radix(&w.xxh3, 16),
        ) {
            (Ok(r), Ok(d)) => (r, d),
            _ => bail!("{}: run and xxh3 must be hexadecimal", at()),
        };
        if *run.get_or_insert(this_run) != this_run {
            bail!("{}: a second run in one record", at());
        }
        let entry = keys.entry(w.key).or_default();
        entry.writes.insert(w.seq, (w.done, digest));
        if w.ack {
            entry.last_acked = entry.last_acked.max(Some(w.seq));
        }
    }
    let run = run.with_context(|| format!("the record {} is empty", path.display()))?;
    Ok(Book { run, keys })
}

/// What a key read back shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    /// The latest acknowledged value or one that may legitimately follow it.
    Ok,
    /// Absent though a write was acknowledged.
    Missing,
    /// An older value than an acknowledged write.
    Stale,
    /// Not a value of this key, or not the bytes written.
    Corrupt,
    /// A value of another run.
    OtherRun,
    /// A value of this run the record lacks.
    Unrecorded,
}

impl Verdict {
    /// Whether this verdict means an acknowledged write was lost or damaged.
    pub(crate) fn is_loss(self) -> bool {
        matches!(self, Self::Missing | Self::Stale | Self::Corrupt)
    }
}

/// The verdict on `key` whose recorded writes are `writes` (of run `run`), read back as
/// `value` (`None`: 404).
pub(crate) fn judge(run: u64, key: &str, writes: &KeyWrites, value: Option<&[u8]>) -> Verdict {
    let Some(value) = value else {
        return if writes.last_acked.is_some() {
            Verdict::Missing
        } else {
            Verdict::Ok
        };
    };
    let Some(stamp) = value::parse(value) else {
        return Verdict::Corrupt;
    };
    if stamp.key != key {
        return Verdict::Corrupt;
    }
    if stamp.run != run {
        return Verdict::OtherRun;
    }
    let Some(&(done, digest)) = writes.writes.get(&stamp.seq) else {
        return Verdict::Unrecorded;
    };
    if value::digest(value) != digest {
        Verdict::Corrupt
    } else if writes.last_acked.is_some_and(|acked| acked > done) {
        Verdict::Stale
    } else {
        Verdict::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: u64 = 0x5f;

    fn written(key: &str, seq: u64, done: u64, ack: bool) -> Written {
        let v = value::value(RUN, seq, key, 80);
        Written {
            run: hex(RUN),
            key: key.into(),
            seq,
            done,
            ack,
            bytes: v.len(),
            xxh3: hex(value::digest(&v)),
        }
    }

    fn book(writes: &[Written]) -> Book {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.jsonl");
        let mut recorder = Recorder::create(&path).unwrap();
        for w in writes {
            recorder.write(w).unwrap();
        }
        recorder.finish().unwrap();
        read(&path).unwrap()
    }

    fn verdict(book: &Book, key: &str, seq: Option<u64>) -> Verdict {
        let value = seq.map(|s| value::value(RUN, s, key, 80));
        judge(book.run, key, &book.keys[key], value.as_deref())
    }

    #[test]
    fn sequential_writes_make_older_values_stale() {
        // Write 1 ended before write 2 was sent; both acknowledged.
        let b = book(&[written("k", 1, 1, true), written("k", 2, 2, true)]);
        assert_eq!(verdict(&b, "k", Some(2)), Verdict::Ok);
        assert_eq!(verdict(&b, "k", Some(1)), Verdict::Stale);
        assert_eq!(verdict(&b, "k", None), Verdict::Missing);
        assert_eq!(verdict(&b, "k", Some(3)), Verdict::Unrecorded);
    }

    #[test]
    fn overlapping_writes_may_land_in_either_order() {
        // Write 2 was sent before write 1 ended.
        let b = book(&[written("k", 1, 2, true), written("k", 2, 2, true)]);
        assert_eq!(verdict(&b, "k", Some(1)), Verdict::Ok);
        assert_eq!(verdict(&b, "k", Some(2)), Verdict::Ok);
    }

    #[test]
    fn failed_writes_may_be_read_but_never_hide_an_acknowledged_one() {
        let b = book(&[
            written("k", 1, 1, true),
            written("k", 2, 2, false),
            written("f", 3, 3, false),
        ]);
        // A failed write after the acknowledged one may have landed.
        assert_eq!(verdict(&b, "k", Some(2)), Verdict::Ok);
        // A key never acknowledged may be absent.
        assert_eq!(verdict(&b, "f", None), Verdict::Ok);
        let b = book(&[written("k", 1, 1, false), written("k", 2, 2, true)]);
        assert_eq!(verdict(&b, "k", Some(1)), Verdict::Stale);
    }

    #[test]
    fn foreign_and_damaged_values_are_told_apart() {
        let b = book(&[written("k", 1, 1, true), written("j", 2, 2, true)]);
        let judge_k = |v: &[u8]| judge(b.run, "k", &b.keys["k"], Some(v));
        assert_eq!(judge_k(b"not ours"), Verdict::Corrupt);
        assert_eq!(judge_k(&value::value(RUN, 2, "j", 80)), Verdict::Corrupt);
        assert_eq!(judge_k(&value::value(RUN, 1, "k", 81)), Verdict::Corrupt);
        assert_eq!(
            judge_k(&value::value(RUN + 1, 9, "k", 80)),
            Verdict::OtherRun
        );
        assert!(Verdict::Stale.is_loss() && !Verdict::OtherRun.is_loss());
    }

    #[test]
    fn a_bad_record_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, "").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("empty"));
        let mut two_runs = serde_json::to_string(&written("k", 1, 1, true)).unwrap();
        let mut other = written("k", 2, 2, true);
        other.run = hex(RUN + 1);
        two_runs = format!("{two_runs}\n{}\n", serde_json::to_string(&other).unwrap());
        std::fs::write(&path, two_runs).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("second run"),
            "{err}"
        );
        std::fs::write(&path, "{}\n").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("line 1"));
    }
}
