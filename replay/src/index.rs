//! The key index: a ring's moved ranges on local disk, by position, so a key's history
//! over a long stream reads the ranges near its position instead of every stored
//! epoch.
//!
//! # How it fits
//! A key changes owner only in an epoch whose rebalance event's moved ranges cover
//! its position. Reading every stored epoch to find those is bounded by the stream
//! (8 s for 750,000 epochs), so [`History::key_history`](crate::History::key_history)
//! over a NATS stream first brings this index up to the stream's end (the first time:
//! one pass over the ring's membership and rebalance events; later: only what was
//! stored since) and then reads one bucket of it. The index is a cache: it holds
//! nothing the stream does not, and deleting it costs only the next pass.
//!
//! # Layout on disk
//! One directory per stream instance and ring, `<root>/<stream>-<created>-<ring>`
//! (`created`: the stream's creation time in nanoseconds, so a recreated stream gets
//! a fresh index), holding:
//! - `manifest.json`: what was read (the last stream sequence, the epochs indexed,
//!   whether they are complete) and the length of every file at that point, written
//!   (atomically, by rename) after the files are flushed. Opening truncates each file
//!   to its recorded length, so a pass killed halfway resumes where its last manifest
//!   says; a manifest of another version, stream or ring, or files shorter than it
//!   says, start the index afresh.
//! - `epochs`: for each epoch from the first indexed, the stream sequence of the
//!   membership event that made it (8 bytes, little-endian).
//! - `causes`: every membership message of the ring: sequence, stored time (unix
//!   nanoseconds), summary (`u16` length, UTF-8).
//! - `ranges-00` .. `ranges-63`: the moved ranges, in epoch order, in every bucket of
//!   the ring (its top 6 bits) they touch: epoch, start, end, and the new owner
//!   (`u16` length, `0xffff` for nobody, then the id).
//! - `lock`: held (exclusively) while the index is brought up to date and read, so
//!   concurrent key histories (of any process) take turns; waiting for it never
//!   blocks the task's thread, and after 5 minutes a run answers without the index.
//!
//! A gap in the stored epochs (an epoch missing) ends what the index can answer: it
//! keeps the epochs before the gap, and a key history past it folds the membership
//! events instead, as it does without an index.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringside_events::Body;
use ringside_events::subject::{self, SubjectKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::engine::{self, Cause};
use crate::error::ReplayError;
use crate::observe::{Observer, Pass};
use crate::source::Source;

/// The version of the layout above; another version is rebuilt.
const VERSION: u32 = 1;
/// Buckets: the top `BUCKET_BITS` bits of a position.
const BUCKET_BITS: u32 = 6;
const BUCKETS: usize = 1 << BUCKET_BITS;
/// The owner length that says "nobody".
const NOBODY: u16 = u16::MAX;
/// The manifest is saved every this many messages read, so a long first pass that
/// is stopped keeps most of its work.
const SAVE_EVERY: u64 = 100_000;
const BUFFER: usize = 64 * 1024;
/// How long a run waits for another to finish with the index (a first build of a
/// long history takes about as long as an export) before answering without it.
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// Where key indexes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDir(pub PathBuf);

/// What the index holds and how long its files were when it was saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    stream: String,
    created: i128,
    ring: String,
    /// The last stream sequence read (0: none).
    scanned: u64,
    /// The first and last epoch indexed (0: none yet).
    first_epoch: u64,
    last_epoch: u64,
    /// False once a gap in the stored epochs was met: later epochs are not indexed.
    complete: bool,
    epochs_len: u64,
    causes_len: u64,
    ranges_len: Vec<u64>,
}

/// One ring's index, locked while this lives.
pub(crate) struct KeyIndex {
    dir: PathBuf,
    manifest: Manifest,
    /// Held for the lock, released when dropped.
    _lock: File,
}

/// A moved range that covers a key's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) epoch: u64,
    pub(crate) to: Option<String>,
}

fn io_error(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> ReplayError {
    let path = path.to_path_buf();
    move |source| ReplayError::Index { path, what, source }
}

/// Takes the lock without blocking the task's thread (another task of this process
/// may hold it across an await), for at most [`LOCK_WAIT`].
async fn wait_for_lock(lock: &File, path: &Path) -> Result<(), ReplayError> {
    let started = Instant::now();
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(ReplayError::Index {
                    path: path.to_path_buf(),
                    what: "another run has held it for 300 s:",
                    source: io::Error::from(io::ErrorKind::WouldBlock),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error(path, "cannot lock")(e)),
        }
    }
}

fn bucket(position: u64) -> usize {
    // The top bits of a u64: always below BUCKETS.
    (position >> (64 - BUCKET_BITS)) as usize
}

/// The buckets the range `(start, end]` touches, as a bit mask (bucket `b` is bit `b`).
fn buckets_of(start: u64, end: u64) -> u64 {
    // Buckets `from..=to`, `from <= to`.
    fn span(from: usize, to: usize) -> u64 {
        let up_to = if to == BUCKETS - 1 {
            u64::MAX
        } else {
            (1u64 << (to + 1)) - 1
        };
        up_to & !((1u64 << from) - 1)
    }
    match start.cmp(&end) {
        std::cmp::Ordering::Equal => u64::MAX,
        std::cmp::Ordering::Less => span(bucket(start + 1), bucket(end)),
        // Wraps past 0: (start, MAX] and [0, end].
        std::cmp::Ordering::Greater if start == u64::MAX => span(0, bucket(end)),
        std::cmp::Ordering::Greater => span(0, bucket(end)) | span(bucket(start + 1), BUCKETS - 1),
    }
}

impl KeyIndex {
    /// Opens (or starts) the index of `ring` in `source`'s stream under `root`, and
    /// locks it. `None` for an export file, which is read whole anyway.
    pub(crate) async fn open(
        root: &IndexDir,
        source: &Source,
    ) -> Result<Option<Self>, ReplayError> {
        let Some((stream, created)) = source.identity().await? else {
            return Ok(None);
        };
        let ring = source.ring();
        let dir = root.0.join(format!("{stream}-{created}-{}", ring.as_str()));
        fs::create_dir_all(&dir).map_err(io_error(&dir, "cannot create"))?;
        let lock_path = dir.join("lock");
        let lock = open_or_create(&lock_path)?;
        wait_for_lock(&lock, &lock_path).await?;
        let fresh = Manifest {
            version: VERSION,
            stream,
            created,
            ring: ring.as_str().to_string(),
            complete: true,
            ranges_len: vec![0; BUCKETS],
            ..Manifest::default()
        };
        let mut index = Self {
            dir,
            manifest: fresh.clone(),
            _lock: lock,
        };
        let kept = index.read_manifest().filter(|m| {
            m.version == fresh.version
                && m.stream == fresh.stream
                && m.created == fresh.created
                && m.ring == fresh.ring
                && m.ranges_len.len() == BUCKETS
        });
        if let Some(manifest) = kept {
            index.manifest = manifest;
            if index.truncate_files()? {
                return Ok(Some(index));
            }
            index.manifest = fresh;
        }
        index.truncate_files()?;
        index.save()?;
        Ok(Some(index))
    }

    fn read_manifest(&self) -> Option<Manifest> {
        let text = fs::read(self.dir.join("manifest.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Every data file with the length the manifest records (created empty if
    /// missing); false if one is shorter than that.
    fn truncate_files(&self) -> Result<bool, ReplayError> {
        let m = &self.manifest;
        let files = [
            ("epochs".to_string(), m.epochs_len),
            ("causes".to_string(), m.causes_len),
        ]
        .into_iter()
        .chain((0..BUCKETS).map(|b| (ranges_name(b), m.ranges_len[b])));
        for (name, len) in files {
            let path = self.dir.join(name);
            let file = open_or_create(&path)?;
            let actual = file
                .metadata()
                .map_err(io_error(&path, "cannot read"))?
                .len();
            if actual < len {
                return Ok(false);
            }
            file.set_len(len)
                .map_err(io_error(&path, "cannot truncate"))?;
        }
        Ok(true)
    }

    /// Writes the manifest (after the files it describes are flushed).
    fn save(&self) -> Result<(), ReplayError> {
        let path = self.dir.join("manifest.json");
        let tmp = self.dir.join("manifest.json.tmp");
        let json = serde_json::to_vec(&self.manifest).map_err(|e| ReplayError::Index {
            path: path.clone(),
            what: "cannot encode",
            source: io::Error::other(e),
        })?;
        fs::write(&tmp, json).map_err(io_error(&tmp, "cannot write"))?;
        fs::rename(&tmp, &path).map_err(io_error(&path, "cannot write"))
    }

    /// Reads what the stream stored since the index was last brought up to date.
    pub(crate) async fn update(
        &mut self,
        source: &Source,
        observer: &mut dyn Observer,
    ) -> Result<(), ReplayError> {
        let (first, end) = source.covered().await?;
        let from = (self.manifest.scanned + 1).max(first);
        if from > end {
            return Ok(());
        }
        let ring = source.ring().clone();
        let membership = subject::membership(&ring);
        let mut writers = Writers::open(&self.dir)?;
        let mut scan = source
            .scan(
                from,
                Some(end),
                &[SubjectKind::Membership, SubjectKind::Rebalance],
            )
            .await?;
        let mut pass = Pass::begin(observer, "key index", from, end);
        let mut read = 0u64;
        while let Some(r) = scan.next().await? {
            pass.at(r.seq);
            if r.subject == membership {
                writers.cause(&mut self.manifest, &Cause::of(&r))?;
            } else if let Ok(Body::RingRebalanced(event)) = r.event.as_ref().map(|e| e.body()) {
                self.add_epoch(&mut writers, event)?;
            }
            self.manifest.scanned = r.seq;
            read += 1;
            if read.is_multiple_of(SAVE_EVERY) {
                writers.flush()?;
                self.save()?;
            }
        }
        writers.flush()?;
        self.save()
    }

    fn add_epoch(
        &mut self,
        writers: &mut Writers,
        event: &ringside_events::pb::RingRebalanced,
    ) -> Result<(), ReplayError> {
        let m = &mut self.manifest;
        // Epochs stored twice (two reducers racing) are skipped, as every reader does.
        if !m.complete || (m.last_epoch != 0 && event.epoch <= m.last_epoch) {
            return Ok(());
        }
        if m.last_epoch != 0 && event.epoch != m.last_epoch + 1 {
            m.complete = false;
            return Ok(());
        }
        if m.first_epoch == 0 {
            m.first_epoch = event.epoch;
        }
        m.last_epoch = event.epoch;
        writers.epoch(m, event.membership_sequence)?;
        for (start, end, to) in engine::moved_ranges(event) {
            let mask = buckets_of(start, end);
            for b in (0..BUCKETS).filter(|&b| mask & (1 << b) != 0) {
                writers.range(m, b, event.epoch, start, end, to)?;
            }
        }
        Ok(())
    }

    /// The last indexed epoch made by a membership event at or before sequence `to`,
    /// and whether the index answers for the epochs after `after` up to it: `None` if
    /// it does not (epochs after `after` it lacks, or stored after a gap).
    pub(crate) fn last_epoch_until(&self, after: u64, to: u64) -> Result<Option<u64>, ReplayError> {
        let m = &self.manifest;
        if m.first_epoch == 0 {
            // No epoch stored at all (the index has read the whole stream).
            return Ok(m.complete.then_some(after));
        }
        if m.first_epoch > after + 1 {
            return Ok(None);
        }
        let epochs = self.epochs()?;
        let seq_of = |epoch: u64| epochs.seq_of(epoch);
        if !m.complete && seq_of(m.last_epoch)? < to {
            return Ok(None);
        }
        // Membership sequences grow with epochs: the last epoch with one <= to.
        let (mut lo, mut hi) = (m.first_epoch, m.last_epoch + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if seq_of(mid)? <= to {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(Some((lo - 1).max(after)))
    }

    /// The membership sequence of each of `epochs` (indexed, ascending).
    pub(crate) fn membership_seqs(&self, epochs: &[u64]) -> Result<Vec<u64>, ReplayError> {
        let file = self.epochs()?;
        epochs.iter().map(|&epoch| file.seq_of(epoch)).collect()
    }

    /// The `epochs` file, for reading.
    fn epochs(&self) -> Result<EpochsFile, ReplayError> {
        let path = self.dir.join("epochs");
        let file = File::open(&path).map_err(io_error(&path, "cannot open"))?;
        Ok(EpochsFile {
            file,
            path,
            first: self.manifest.first_epoch,
        })
    }

    /// The moved ranges covering `position` in the epochs `after+1..=last`, in order.
    pub(crate) fn moves(
        &self,
        position: u64,
        after: u64,
        last: u64,
    ) -> Result<Vec<Move>, ReplayError> {
        let path = self.dir.join(ranges_name(bucket(position)));
        let file = File::open(&path).map_err(io_error(&path, "cannot open"))?;
        let mut reader = BufReader::with_capacity(BUFFER, file);
        let mut moves = Vec::new();
        let bad = |what| ReplayError::Index {
            path: path.clone(),
            what,
            source: io::Error::from(io::ErrorKind::InvalidData),
        };
        let mut head = [0u8; 26];
        loop {
            match reader.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(io_error(&path, "cannot read")(e)),
            }
            let word = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&head[i..i + 8]);
                u64::from_le_bytes(b)
            };
            let (epoch, start, end) = (word(0), word(8), word(16));
            let len = u16::from_le_bytes([head[24], head[25]]);
            let to = if len == NOBODY {
                None
            } else {
                let mut id = vec![0u8; usize::from(len)];
                reader
                    .read_exact(&mut id)
                    .map_err(io_error(&path, "cannot read"))?;
                Some(String::from_utf8(id).map_err(|_| bad("holds an owner that is not UTF-8"))?)
            };
            if epoch > last {
                break;
            }
            if epoch > after && engine::covers(start, end, position) {
                moves.push(Move { epoch, to });
            }
        }
        Ok(moves)
    }

    /// The membership events at `seqs` (ascending): one pass over the causes file.
    /// A sequence it does not hold (purged before the index read it) gets only its
    /// number.
    pub(crate) fn causes(&self, seqs: &[u64]) -> Result<Vec<Cause>, ReplayError> {
        let path = self.dir.join("causes");
        let file = File::open(&path).map_err(io_error(&path, "cannot open"))?;
        let mut reader = BufReader::with_capacity(BUFFER, file);
        let mut causes = Vec::with_capacity(seqs.len());
        let mut head = [0u8; 26];
        let mut current: Option<Cause> = None;
        for &seq in seqs {
            while current.as_ref().is_none_or(|c| c.seq < seq) {
                match reader.read_exact(&mut head) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        current = None;
                        break;
                    }
                    Err(e) => return Err(io_error(&path, "cannot read")(e)),
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&head[0..8]);
                let at = u64::from_le_bytes(b);
                let mut t = [0u8; 16];
                t.copy_from_slice(&head[8..24]);
                let len = u16::from_le_bytes([head[24], head[25]]);
                let mut summary = vec![0u8; usize::from(len)];
                reader
                    .read_exact(&mut summary)
                    .map_err(io_error(&path, "cannot read"))?;
                current = Some(Cause {
                    seq: at,
                    time: OffsetDateTime::from_unix_timestamp_nanos(i128::from_le_bytes(t)).ok(),
                    summary: String::from_utf8_lossy(&summary).into_owned(),
                });
            }
            causes.push(match &current {
                Some(c) if c.seq == seq => c.clone(),
                _ => Cause {
                    seq,
                    ..Cause::default()
                },
            });
        }
        Ok(causes)
    }
}

/// The membership sequence of each indexed epoch, read at its position.
struct EpochsFile {
    file: File,
    path: PathBuf,
    /// The epoch of the first record.
    first: u64,
}

impl EpochsFile {
    fn seq_of(&self, epoch: u64) -> Result<u64, ReplayError> {
        let mut buf = [0u8; 8];
        self.file
            .read_exact_at(&mut buf, epoch.saturating_sub(self.first) * 8)
            .map_err(io_error(&self.path, "cannot read"))?;
        Ok(u64::from_le_bytes(buf))
    }
}

/// Opens `path` for writing, creating it empty if it is missing, keeping what it holds.
fn open_or_create(path: &Path) -> Result<File, ReplayError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error(path, "cannot open"))
}

fn ranges_name(b: usize) -> String {
    format!("ranges-{b:02}")
}

/// The files, open for appending while the index is brought up to date.
struct Writers {
    dir: PathBuf,
    epochs: BufWriter<File>,
    causes: BufWriter<File>,
    ranges: Vec<BufWriter<File>>,
}

impl Writers {
    fn open(dir: &Path) -> Result<Self, ReplayError> {
        let open = |name: &str| -> Result<BufWriter<File>, ReplayError> {
            let path = dir.join(name);
            let mut file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_error(&path, "cannot open"))?;
            file.seek(SeekFrom::End(0))
                .map_err(io_error(&path, "cannot open"))?;
            Ok(BufWriter::with_capacity(BUFFER / 4, file))
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            epochs: open("epochs")?,
            causes: open("causes")?,
            ranges: (0..BUCKETS)
                .map(|b| open(&ranges_name(b)))
                .collect::<Result<_, _>>()?,
        })
    }

    fn epoch(&mut self, m: &mut Manifest, membership_seq: u64) -> Result<(), ReplayError> {
        append(
            &mut self.epochs,
            &self.dir,
            "epochs",
            &membership_seq.to_le_bytes(),
        )?;
        m.epochs_len += 8;
        Ok(())
    }

    fn cause(&mut self, m: &mut Manifest, cause: &Cause) -> Result<(), ReplayError> {
        let summary = truncated(&cause.summary);
        let mut record = Vec::with_capacity(26 + summary.len());
        record.extend_from_slice(&cause.seq.to_le_bytes());
        let nanos = cause.time.map_or(0, OffsetDateTime::unix_timestamp_nanos);
        record.extend_from_slice(&nanos.to_le_bytes());
        record.extend_from_slice(&(summary.len() as u16).to_le_bytes());
        record.extend_from_slice(summary.as_bytes());
        append(&mut self.causes, &self.dir, "causes", &record)?;
        m.causes_len += record.len() as u64;
        Ok(())
    }

    fn range(
        &mut self,
        m: &mut Manifest,
        b: usize,
        epoch: u64,
        start: u64,
        end: u64,
        to: Option<&str>,
    ) -> Result<(), ReplayError> {
        let id = to.map(truncated);
        let mut record = Vec::with_capacity(26 + id.map_or(0, str::len));
        record.extend_from_slice(&epoch.to_le_bytes());
        record.extend_from_slice(&start.to_le_bytes());
        record.extend_from_slice(&end.to_le_bytes());
        let len = id.map_or(NOBODY, |id| id.len() as u16);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(id.unwrap_or_default().as_bytes());
        append(&mut self.ranges[b], &self.dir, &ranges_name(b), &record)?;
        m.ranges_len[b] += record.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ReplayError> {
        let dir = self.dir.clone();
        let all = [
            (&mut self.epochs, "epochs".to_string()),
            (&mut self.causes, "causes".to_string()),
        ]
        .into_iter()
        .chain(
            self.ranges
                .iter_mut()
                .enumerate()
                .map(|(b, w)| (w, ranges_name(b))),
        );
        for (w, name) in all {
            w.flush()
                .map_err(io_error(&dir.join(name), "cannot write"))?;
        }
        Ok(())
    }
}

fn append(
    w: &mut BufWriter<File>,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), ReplayError> {
    w.write_all(bytes)
        .map_err(io_error(&dir.join(name), "cannot write"))
}

/// At most `u16::MAX - 1` bytes of `s`, cut at a character boundary.
fn truncated(s: &str) -> &str {
    let mut end = s.len().min(usize::from(NOBODY - 1));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
