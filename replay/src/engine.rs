//! The pure side of replay: folding records with the reducer's fold
//! ([`RingLedger`]), and what the queries compute from it: the ring at a point, a
//! key's owner changes, the diff of two epochs, and `verify`. No I/O here; everything
//! is fed [`Record`]s in stream order, so it is tested without a server.

use std::collections::{BTreeMap, VecDeque};

use ringside_events::convert::apply_rebalanced;
use ringside_events::subject::{self, SubjectKind};
use ringside_events::{Body, CatchUp, Outcome, RingLedger, pb};
use ringside_ring::{Ring, RingConfig};
use serde::Serialize;
use time::OffsetDateTime;

use crate::record::{self, Record, checksum_hex};

/// Counts of what a fold saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FoldStats {
    /// Membership messages read.
    pub membership: u64,
    /// Of those, the ones that made a new epoch.
    pub epochs: u64,
    /// Membership facts that changed nothing.
    pub unchanged: u64,
    /// Events the fold refused (skipped by every fold alike).
    pub rejected: u64,
    /// Messages that did not decode (skipped, as the reducer skips them).
    pub undecodable: u64,
}

/// A [`RingLedger`] fed with records, counting what it saw.
#[derive(Clone, Debug)]
pub(crate) struct Fold {
    /// The ledger.
    pub(crate) ledger: RingLedger,
    /// What the fold saw.
    pub(crate) stats: FoldStats,
    /// Time of the last membership record folded.
    pub(crate) last_time: Option<OffsetDateTime>,
}

impl Fold {
    /// A fold that continues from `ledger`.
    pub(crate) fn new(ledger: RingLedger) -> Self {
        Self {
            ledger,
            stats: FoldStats::default(),
            last_time: None,
        }
    }

    /// Folds one membership record; returns the new epoch's event if it made one.
    /// Records that do not decode are skipped, as the reducer's consumer skips them.
    pub(crate) fn apply(&mut self, r: &Record) -> Option<Box<pb::RingRebalanced>> {
        self.fold_with(r, RingLedger::apply)
    }

    /// [`Fold::apply`] without building the epoch's event (see
    /// [`RingLedger::advance`]): whether it made an epoch.
    pub(crate) fn advance(&mut self, r: &Record) -> bool {
        self.fold_with(r, RingLedger::advance).is_some()
    }

    fn fold_with<E>(
        &mut self,
        r: &Record,
        step: impl FnOnce(&mut RingLedger, u64, &Body) -> Outcome<E>,
    ) -> Option<E> {
        let Fold {
            ledger,
            stats,
            last_time,
        } = self;
        count(stats, last_time, r, |seq, body| step(ledger, seq, body))
    }

    /// Takes the ledger out for a catch-up run ([`RingLedger::catch_up`]), leaving an
    /// empty one of the same ring until [`Fold::put_back`].
    pub(crate) fn take_ledger(&mut self) -> RingLedger {
        let empty = RingLedger::new(
            self.ledger.ring_name().clone(),
            *self.ledger.ring().config(),
        );
        std::mem::replace(&mut self.ledger, empty)
    }

    /// Ends a catch-up run: its ledger, with the ring built once.
    pub(crate) fn put_back(&mut self, run: CatchUp) {
        self.ledger = run.finish();
    }

    /// Counts one record and folds it with `step` when it decodes.
    pub(crate) fn counted<E>(
        &mut self,
        r: &Record,
        step: impl FnOnce(u64, &Body) -> Outcome<E>,
    ) -> Option<E> {
        count(&mut self.stats, &mut self.last_time, r, step)
    }
}

/// Counts record `r` in `stats` and folds it with `step` when it decodes.
fn count<E>(
    stats: &mut FoldStats,
    last_time: &mut Option<OffsetDateTime>,
    r: &Record,
    step: impl FnOnce(u64, &Body) -> Outcome<E>,
) -> Option<E> {
    stats.membership += 1;
    *last_time = Some(r.time);
    let Ok(event) = &r.event else {
        stats.undecodable += 1;
        return None;
    };
    match step(r.seq, event.body()) {
        Outcome::Rebalanced(e) => {
            stats.epochs += 1;
            Some(e)
        }
        Outcome::Unchanged | Outcome::AlreadyFolded => {
            stats.unchanged += 1;
            None
        }
        Outcome::Rejected(_) => {
            stats.rejected += 1;
            None
        }
    }
}

/// One member in a state report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberState {
    /// Member id.
    pub id: String,
    /// Address (`host:port`).
    pub address: String,
    /// Weight.
    pub weight: u32,
    /// Incarnation, if known.
    pub uid: Option<String>,
    /// Tokens it owns.
    pub tokens: u64,
    /// Fraction of the key space it owns.
    pub share: f64,
    /// Its share over its fair share by weight (1.0 is exactly fair).
    pub load: f64,
}

/// The ring at one point of the stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateReport {
    /// Ring name.
    pub ring: String,
    /// The stream sequence asked for (everything up to it is folded).
    pub at_sequence: u64,
    /// The epoch at that point.
    pub epoch: u64,
    /// Last membership sequence folded into it.
    pub membership_sequence: u64,
    /// When that membership event was stored (RFC 3339), if known.
    pub membership_time: Option<String>,
    /// `Ring::checksum` as hex.
    pub checksum: String,
    /// Token strategy.
    pub strategy: String,
    /// Virtual nodes per unit of weight.
    pub vnodes: u32,
    /// Tokens on the ring.
    pub token_count: u64,
    /// Peak over mean of the members' shares per unit of weight (`None`: empty ring).
    pub imbalance: Option<f64>,
    /// Members, sorted by id.
    pub members: Vec<MemberState>,
    /// The snapshot the fold started from (`None`: the first event).
    pub started_from_snapshot: Option<String>,
    /// What the fold read after its start.
    pub folded: FoldStats,
}

/// The ring at one point of the stream: the fold stopped there.
#[derive(Clone, Debug)]
pub struct RingAt {
    /// The stream sequence asked for (everything up to it is folded).
    pub at_sequence: u64,
    /// The fold's ledger: the ring, its members, epoch and checksum.
    pub ledger: RingLedger,
    /// What the fold read after its start.
    pub folded: FoldStats,
    /// When the last membership event folded was stored (`None`: none was folded).
    pub membership_time: Option<OffsetDateTime>,
    /// The snapshot the fold started from (`None`: the first event).
    pub started_from_snapshot: Option<String>,
}

impl RingAt {
    /// A fold stopped at `at_sequence`, which started from `snapshot`.
    pub(crate) fn new(fold: Fold, at_sequence: u64, snapshot: Option<String>) -> Self {
        Self {
            at_sequence,
            ledger: fold.ledger,
            folded: fold.stats,
            membership_time: fold.last_time,
            started_from_snapshot: snapshot,
        }
    }

    /// Members with their tokens, shares and loads, the imbalance and the checksum.
    pub fn report(&self) -> StateReport {
        let ledger = &self.ledger;
        let ring = ledger.ring();
        let mut tokens: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, owner) in ring.tokens() {
            *tokens.entry(owner).or_default() += 1;
        }
        let shares: BTreeMap<String, f64> = ring
            .ownership()
            .into_iter()
            .map(|s| (s.id, s.fraction))
            .collect();
        let loads: BTreeMap<String, f64> = ring.loads().into_iter().collect();
        let members: Vec<MemberState> = ledger
            .members()
            .map(|m| {
                let share = shares.get(&m.id).copied().unwrap_or(0.0);
                MemberState {
                    id: m.id.clone(),
                    address: m.address.clone(),
                    weight: m.weight,
                    uid: m.uid.clone(),
                    tokens: tokens.get(m.id.as_str()).copied().unwrap_or(0),
                    share,
                    load: loads.get(&m.id).copied().unwrap_or(0.0),
                }
            })
            .collect();
        let imbalance = ring.imbalance();
        StateReport {
            ring: ledger.ring_name().to_string(),
            at_sequence: self.at_sequence,
            epoch: ledger.epoch(),
            membership_sequence: ledger.membership_sequence(),
            membership_time: self.membership_time.map(record::rfc3339),
            checksum: checksum_hex(ledger.checksum()),
            strategy: ring.config().strategy.to_string(),
            vnodes: ring.config().vnodes,
            token_count: ring.token_count() as u64,
            imbalance,
            members,
            started_from_snapshot: self.started_from_snapshot.clone(),
            folded: self.folded,
        }
    }
}

/// One owner change of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerChange {
    /// Stream sequence of the membership event that caused it.
    pub sequence: u64,
    /// When that event was stored (RFC 3339).
    pub time: String,
    /// The epoch it made.
    pub epoch: u64,
    /// Owner before (`None`: the ring was empty).
    pub from: Option<String>,
    /// Owner after (`None`: the ring is empty).
    pub to: Option<String>,
    /// The causing event's summary.
    pub cause: String,
}

/// Every owner change of one key over a range of the stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyHistory {
    /// The key.
    pub key: String,
    /// Its ring position (`hash_key`), hex.
    pub position: String,
    /// Owner and epoch at the start of the range.
    pub initial_owner: Option<String>,
    /// See `initial_owner`.
    pub initial_epoch: u64,
    /// Owner and epoch at the end of the range.
    pub final_owner: Option<String>,
    /// See `final_owner`.
    pub final_epoch: u64,
    /// The changes, in stream order.
    pub changes: Vec<OwnerChange>,
    /// The first and last stream sequence of the range. Not in the serialized report,
    /// whose fields `ringside replay key-history --output json` keeps as they were.
    #[serde(skip)]
    pub sequences: (u64, u64),
    #[serde(skip)]
    hash: u64,
}

/// Whether the moved range `(start, end]` covers ring position `hash`: the arc is
/// clockwise, wrapping past 0; start == end is the whole ring (docs/events.md,
/// `MovedRanges`).
pub(crate) fn covers(start: u64, end: u64, hash: u64) -> bool {
    match start.cmp(&end) {
        std::cmp::Ordering::Equal => true,
        std::cmp::Ordering::Less => hash > start && hash <= end,
        std::cmp::Ordering::Greater => hash > start || hash <= end,
    }
}

/// The moved ranges of `event`: start (exclusive), end (inclusive) and the member
/// they move to (`None`: to nobody, the ring is empty after).
pub(crate) fn moved_ranges(
    event: &pb::RingRebalanced,
) -> impl Iterator<Item = (u64, u64, Option<&str>)> + '_ {
    let m = event.moved_ranges.as_ref();
    let n = m.map_or(0, |m| m.starts.len().min(m.ends.len()).min(m.to.len()));
    (0..n).filter_map(move |i| {
        let m = m?;
        let index = m.to[i];
        let to = if index == ringside_events::event::NO_OWNER {
            None
        } else {
            let index = index as usize;
            match event.members.get(index) {
                Some(member) => Some(member.id.as_str()),
                None => event
                    .departed
                    .get(index - event.members.len())
                    .map(String::as_str),
            }
        };
        Some((m.starts[i], m.ends[i], to))
    })
}

/// Where the moved ranges of `event` send ring position `hash`: `Some(owner)` if one
/// of them covers it (`Some(None)`: to nobody, the ring is empty after), `None` if the
/// position keeps its owner.
pub(crate) fn moved_owner(event: &pb::RingRebalanced, hash: u64) -> Option<Option<String>> {
    moved_ranges(event)
        .find(|&(start, end, _)| covers(start, end, hash))
        .map(|(_, _, to)| to.map(str::to_string))
}

fn owner_of(ring: &Ring, hash: u64) -> Option<String> {
    ring.owner_of_hash(hash).ok().map(str::to_string)
}

impl KeyHistory {
    /// Starts the history of `key` over the stream sequences `sequences` at the
    /// ledger's current state.
    pub(crate) fn new(key: &str, sequences: (u64, u64), ledger: &RingLedger) -> Self {
        let hash = ringside_ring::hash_key(key.as_bytes());
        let owner = owner_of(ledger.ring(), hash);
        Self {
            key: key.to_string(),
            position: checksum_hex(hash),
            initial_owner: owner.clone(),
            initial_epoch: ledger.epoch(),
            final_owner: owner,
            final_epoch: ledger.epoch(),
            changes: Vec::new(),
            sequences,
            hash,
        }
    }

    /// The key's ring position.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// Notes a stored epoch: `moved` is where its moved ranges send the key
    /// ([`moved_owner`]), and `cause`, the membership event that made the epoch, is
    /// given when the owner changes (`wants_cause` says when).
    pub(crate) fn after_rebalance(
        &mut self,
        epoch: u64,
        moved: Option<Option<String>>,
        cause: Option<Cause>,
    ) {
        self.final_epoch = epoch;
        if let Some(owner) = moved {
            self.change(epoch, owner, cause.unwrap_or_default());
        }
    }

    /// Whether an epoch that sends the key to `moved` changes its owner.
    pub(crate) fn wants_cause(&self, moved: &Option<Option<String>>) -> bool {
        moved
            .as_ref()
            .is_some_and(|owner| *owner != self.final_owner)
    }

    /// Notes the epoch `r` just made in `ledger`.
    pub(crate) fn after_epoch(&mut self, ledger: &RingLedger, r: &Record) {
        self.final_epoch = ledger.epoch();
        self.change(
            ledger.epoch(),
            owner_of(ledger.ring(), self.hash),
            Cause::of(r),
        );
    }

    /// Notes that epoch `epoch`, made by `cause`, gives the key to `owner`.
    fn change(&mut self, epoch: u64, owner: Option<String>, cause: Cause) {
        if owner == self.final_owner {
            return;
        }
        self.changes.push(OwnerChange {
            sequence: cause.seq,
            time: cause.time.map(record::rfc3339).unwrap_or_default(),
            epoch,
            from: self.final_owner.take(),
            to: owner.clone(),
            cause: cause.summary,
        });
        self.final_owner = owner;
    }
}

/// The membership event that made an epoch, as a key's history shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cause {
    /// Its stream sequence (0: unknown).
    pub(crate) seq: u64,
    /// When it was stored.
    pub(crate) time: Option<OffsetDateTime>,
    /// Its summary (empty if it does not decode).
    pub(crate) summary: String,
}

impl Cause {
    /// The cause a stored record gives.
    pub(crate) fn of(r: &Record) -> Self {
        Self {
            seq: r.seq,
            time: Some(r.time),
            summary: r.event.as_ref().map(|e| e.summary()).unwrap_or_default(),
        }
    }
}

/// A ring at one epoch, kept for a diff.
#[derive(Clone, Debug)]
pub(crate) struct EpochRing {
    /// The epoch.
    pub(crate) epoch: u64,
    /// Membership sequence of the event that made it (0: epoch 0).
    pub(crate) sequence: u64,
    /// Its members with details.
    pub(crate) members: Vec<pb::Member>,
    /// The ring.
    pub(crate) ring: Ring,
}

impl EpochRing {
    /// The ledger's current epoch.
    pub(crate) fn of(ledger: &RingLedger) -> Self {
        Self {
            epoch: ledger.epoch(),
            sequence: ledger.membership_sequence(),
            members: ledger.members().cloned().collect(),
            ring: ledger.ring().clone(),
        }
    }
}

/// What changed between two epochs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffReport {
    /// Ring name.
    pub ring: String,
    /// The epochs compared.
    pub from_epoch: u64,
    /// See `from_epoch`.
    pub to_epoch: u64,
    /// Membership sequences that made them.
    pub from_sequence: u64,
    /// See `from_sequence`.
    pub to_sequence: u64,
    /// Checksums, hex.
    pub from_checksum: String,
    /// See `from_checksum`.
    pub to_checksum: String,
    /// Member ids added, removed, re-weighted.
    pub added: Vec<String>,
    /// See `added`.
    pub removed: Vec<String>,
    /// See `added`.
    pub reweighted: Vec<String>,
    /// Fraction of the key space that changed owner.
    pub moved_fraction: f64,
    /// The least fraction any placement must move for this change.
    pub ideal_fraction: f64,
    /// `moved / ideal` (`None`: nothing had to move).
    pub moved_over_ideal: Option<f64>,
    /// The moved ranges, sorted by end.
    pub ranges: Vec<MovedRangeRow>,
}

/// The diff from one epoch's ring to another's ([`ringside_ring::diff`]).
pub(crate) fn diff_report(ring: &str, from: &EpochRing, to: &EpochRing) -> DiffReport {
    let weights = |e: &EpochRing| -> BTreeMap<String, u32> {
        e.members.iter().map(|m| (m.id.clone(), m.weight)).collect()
    };
    let (old, new) = (weights(from), weights(to));
    let diff = ringside_ring::diff(&from.ring, &to.ring);
    DiffReport {
        ring: ring.to_string(),
        from_epoch: from.epoch,
        to_epoch: to.epoch,
        from_sequence: from.sequence,
        to_sequence: to.sequence,
        from_checksum: checksum_hex(from.ring.checksum()),
        to_checksum: checksum_hex(to.ring.checksum()),
        added: new
            .keys()
            .filter(|id| !old.contains_key(*id))
            .cloned()
            .collect(),
        removed: old
            .keys()
            .filter(|id| !new.contains_key(*id))
            .cloned()
            .collect(),
        reweighted: new
            .iter()
            .filter(|(id, w)| old.get(*id).is_some_and(|o| o != *w))
            .map(|(id, _)| id.clone())
            .collect(),
        moved_fraction: diff.moved_fraction,
        ideal_fraction: diff.ideal_fraction,
        moved_over_ideal: diff.moved_over_ideal(),
        ranges: diff.ranges.iter().map(MovedRangeRow::from).collect(),
    }
}

/// A moved key range as the reports write it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MovedRangeRow {
    /// Exclusive start, hex.
    pub start: String,
    /// Inclusive end, hex.
    pub end: String,
    /// Owner before ("" for none).
    pub from: String,
    /// Owner after ("" for none).
    pub to: String,
    /// Fraction of the key space.
    pub fraction: f64,
}

impl From<&ringside_ring::MovedRange> for MovedRangeRow {
    fn from(r: &ringside_ring::MovedRange) -> Self {
        Self {
            start: format!("{:#018x}", r.start),
            end: format!("{:#018x}", r.end),
            from: r.from.clone(),
            to: r.to.clone(),
            // Width over 2^64; the whole ring (start == end) is 1.
            fraction: r.width() as f64 / 2f64.powi(64),
        }
    }
}

/// One thing `verify` found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The epoch concerned, if one.
    pub epoch: Option<u64>,
    /// The stream sequence concerned, if one.
    pub sequence: Option<u64>,
    /// What is wrong.
    pub what: String,
}

/// What `verify` checked and found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Ring name.
    pub ring: String,
    /// What the fold read.
    pub folded: FoldStats,
    /// Stored `RingRebalanced` events compared with the fold.
    pub rebalance_events: u64,
    /// Snapshots compared with the fold.
    pub snapshots: u64,
    /// The fold's last epoch and checksum.
    pub epoch: u64,
    /// See `epoch`.
    pub checksum: String,
    /// Epochs the fold made whose rebalance event is not stored yet (a reducer
    /// behind the stream, not an error).
    pub unpublished_epochs: u64,
    /// Mismatches, in stream order.
    pub problems: Vec<Problem>,
}

/// What `verify` compares of a snapshot: its position, checksum, and a digest of
/// the rest (configuration, members, tokens), so thousands of snapshots of a large
/// ring need not stay in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotCheck {
    /// KV key.
    pub(crate) key: String,
    /// Epoch.
    pub(crate) epoch: u64,
    /// Last membership sequence it includes.
    pub(crate) membership_sequence: u64,
    /// Sequence of its epoch's rebalance event (0: not recorded).
    pub(crate) rebalance_sequence: u64,
    /// Ring checksum.
    pub(crate) checksum: u64,
    /// Hash of the encoded configuration, members, tokens and owners.
    digest: u64,
    /// Why it does not load as a ring (tokens that do not give its checksum...).
    load_error: Option<String>,
}

impl SnapshotCheck {
    /// The check of a stored snapshot.
    pub(crate) fn of(key: &str, s: &pb::RingSnapshot) -> Self {
        use prost::Message as _;
        use std::hash::{Hash as _, Hasher as _};
        let rest = pb::RingSnapshot {
            config: s.config,
            members: s.members.clone(),
            tokens: s.tokens.clone(),
            owners: s.owners.clone(),
            ..Default::default()
        };
        // Both sides are hashed in this process, so the std hasher's fixed keys are fine.
        let mut hasher = std::hash::DefaultHasher::new();
        rest.encode_to_vec().hash(&mut hasher);
        Self {
            key: key.to_string(),
            epoch: s.epoch,
            membership_sequence: s.membership_sequence,
            rebalance_sequence: s.rebalance_sequence,
            checksum: s.checksum,
            digest: hasher.finish(),
            load_error: RingLedger::from_snapshot(s)
                .err()
                .map(|e| record::error_chain(&e)),
        }
    }
}

/// A fold epoch waiting for its stored event: what the stored event is compared with.
/// Small and fixed in size, so a history whose stored epochs lag far behind its
/// membership events (a burst the reducer folded later) costs little memory per
/// epoch waiting, not a ring each.
#[derive(Debug)]
struct FoldedEpoch {
    epoch: u64,
    checksum: u64,
    membership_sequence: u64,
    /// A digest of the whole event (members, token changes, moved ranges, fractions).
    digest: u64,
}

impl FoldedEpoch {
    fn of(event: &pb::RingRebalanced) -> Self {
        Self {
            epoch: event.epoch,
            checksum: event.checksum,
            membership_sequence: event.membership_sequence,
            digest: event_digest(event),
        }
    }
}

/// A digest of an event's encoding (deterministic for equal messages). Both sides are
/// hashed in this process, so the std hasher's fixed keys are fine.
fn event_digest(event: &pb::RingRebalanced) -> u64 {
    use prost::Message as _;
    use std::hash::{Hash as _, Hasher as _};
    thread_local! {
        // One buffer per thread, reused: verify digests two events per epoch.
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        // Encoding into a Vec cannot fail (it grows as needed).
        let _ = event.encode(buffer);
        let mut hasher = std::hash::DefaultHasher::new();
        buffer.hash(&mut hasher);
        hasher.finish()
    })
}

/// Rebuilds the ring from the first event and checks every stored rebalance event
/// (same event as the fold's, and rebuildable from the previous epoch alone with
/// [`apply_rebalanced`]) and every snapshot against it.
pub(crate) struct Verifier {
    fold: Fold,
    rebalance_subject: String,
    membership_subject: String,
    pending: VecDeque<FoldedEpoch>,
    /// The ring rebuilt from the stored events alone (`None` after a gap, until the
    /// next epoch the fold can vouch for).
    chain: Option<Ring>,
    /// (epoch, sequence) of the last stored rebalance event.
    last_stored: Option<(u64, u64)>,
    /// Snapshots not checked yet, by membership sequence.
    snapshots: BTreeMap<u64, Vec<SnapshotCheck>>,
    /// Sequence of the stored rebalance event of each epoch a snapshot names.
    rebalance_seqs: BTreeMap<u64, Option<u64>>,
    /// Snapshots with their rebalance sequence, checked at the end.
    snapshot_rebalance: Vec<(String, u64, u64)>,
    rebalance_events: u64,
    snapshots_checked: u64,
    problems: Vec<Problem>,
}

fn problem(epoch: Option<u64>, sequence: Option<u64>, what: String) -> Problem {
    Problem {
        epoch,
        sequence,
        what,
    }
}

impl Verifier {
    /// A verifier of `ring` built with `config` from nothing, with the stored
    /// snapshots to check.
    pub(crate) fn new(
        ring: ringside_events::RingName,
        config: RingConfig,
        snapshots: Vec<SnapshotCheck>,
    ) -> Self {
        let mut by_seq: BTreeMap<u64, Vec<SnapshotCheck>> = BTreeMap::new();
        let mut rebalance_seqs = BTreeMap::new();
        for s in snapshots {
            rebalance_seqs.insert(s.epoch, None);
            by_seq.entry(s.membership_sequence).or_default().push(s);
        }
        Self {
            rebalance_subject: subject::rebalance(&ring),
            membership_subject: subject::membership(&ring),
            fold: Fold::new(RingLedger::new(ring, config)),
            pending: VecDeque::new(),
            chain: Some(Ring::new(config)),
            last_stored: None,
            snapshots: by_seq,
            rebalance_seqs,
            snapshot_rebalance: Vec::new(),
            rebalance_events: 0,
            snapshots_checked: 0,
            problems: Vec::new(),
        }
    }

    /// Records a problem found outside the stream (a snapshot that cannot be read).
    pub(crate) fn note(&mut self, p: Problem) {
        self.problems.push(p);
    }

    /// Checks one record (membership and rebalance records; others are ignored).
    pub(crate) fn push(&mut self, r: &Record) {
        self.check_snapshots_before(r.seq);
        if r.subject == self.membership_subject {
            if let Some(event) = self.fold.apply(r) {
                self.pending.push_back(FoldedEpoch::of(&event));
            }
        } else if r.subject == self.rebalance_subject {
            self.rebalance_events += 1;
            match &r.event {
                Ok(event) => match event.body() {
                    Body::RingRebalanced(stored) => self.check_stored(r.seq, stored),
                    other => self.problems.push(problem(
                        None,
                        Some(r.seq),
                        format!(
                            "a {} on the rebalance subject",
                            ringside_events::EventKind::of(other).message_name()
                        ),
                    )),
                },
                Err(e) => self.problems.push(problem(
                    None,
                    Some(r.seq),
                    format!("the rebalance event does not decode: {e}"),
                )),
            }
        }
    }

    fn check_stored(&mut self, seq: u64, stored: &pb::RingRebalanced) {
        let epoch = stored.epoch;
        let at = |what: String| problem(Some(epoch), Some(seq), what);
        if let Some((last, last_seq)) = self.last_stored {
            if epoch <= last {
                self.problems.push(at(format!(
                    "epoch {epoch} is stored again (the last stored epoch is {last}, at sequence {last_seq})"
                )));
                return;
            }
            if epoch > last + 1 {
                self.problems.push(at(format!(
                    "epochs {}..={} are missing before epoch {epoch}",
                    last + 1,
                    epoch - 1
                )));
                self.chain = None;
            }
        } else if epoch > 1 {
            self.problems.push(at(format!(
                "the first stored rebalance event is epoch {epoch}, not 1"
            )));
            self.chain = None;
        }
        self.last_stored = Some((epoch, seq));
        if let Some(slot) = self.rebalance_seqs.get_mut(&epoch) {
            *slot = Some(seq);
        }
        while self.pending.front().is_some_and(|e| e.epoch < epoch) {
            self.pending.pop_front();
        }
        let folded = match self.pending.pop_front() {
            Some(event) if event.epoch == epoch => Some(event),
            other => {
                if let Some(entry) = other {
                    self.pending.push_front(entry);
                }
                self.problems.push(at(format!(
                    "no membership event before sequence {seq} makes epoch {epoch} (the fold is at epoch {})",
                    self.fold.ledger.epoch()
                )));
                None
            }
        };
        if let Some(event) = &folded {
            if stored.checksum != event.checksum {
                self.problems.push(at(format!(
                    "stored checksum {}, the fold gives {}",
                    checksum_hex(stored.checksum),
                    checksum_hex(event.checksum)
                )));
            } else if stored.membership_sequence != event.membership_sequence {
                self.problems.push(at(format!(
                    "caused by membership sequence {} says the event, {} says the fold",
                    stored.membership_sequence, event.membership_sequence
                )));
            } else if event.digest != event_digest(stored) {
                self.problems.push(at(
                    "the stored event differs from the fold's (members, token changes, moved ranges or fractions)"
                        .to_string(),
                ));
            }
        }
        // The event alone must rebuild its epoch from the previous one.
        if let Some(before) = self.chain.take() {
            match apply_rebalanced(&before, stored) {
                Ok(ring) => self.chain = Some(ring),
                Err(e) => self.problems.push(at(format!(
                    "the event does not rebuild its ring from epoch {}: {}",
                    epoch.saturating_sub(1),
                    record::error_chain(&e)
                ))),
            }
        }
        if self.chain.is_none() && folded.is_some() && self.pending.is_empty() {
            // Resume the chain from the fold's ring, which the checks above vouch for:
            // with nothing pending, the fold is at this very epoch.
            self.chain = Some(self.fold.ledger.ring().clone());
        }
    }

    /// Checks snapshots whose membership sequence is below `seq` against the fold,
    /// which has folded everything before `seq`.
    fn check_snapshots_before(&mut self, seq: u64) {
        while let Some(entry) = self.snapshots.first_entry() {
            if *entry.key() >= seq {
                break;
            }
            for snapshot in entry.remove() {
                self.check_snapshot(snapshot);
            }
        }
    }

    fn check_snapshot(&mut self, stored: SnapshotCheck) {
        self.snapshots_checked += 1;
        let key = stored.key.clone();
        let at = |what: String| {
            problem(
                Some(stored.epoch),
                Some(stored.membership_sequence),
                format!("snapshot {key}: {what}"),
            )
        };
        if let Some(e) = &stored.load_error {
            self.problems.push(at(format!("does not load: {e}")));
            return;
        }
        let mine = match self.fold.ledger.snapshot() {
            Ok(s) => SnapshotCheck::of(&key, &s),
            Err(e) => {
                self.problems.push(at(format!(
                    "the fold cannot make a snapshot to compare: {}",
                    record::error_chain(&e)
                )));
                return;
            }
        };
        if (stored.epoch, stored.checksum) != (mine.epoch, mine.checksum) {
            self.problems.push(at(format!(
                "epoch {} checksum {}, the fold at sequence {} gives epoch {} checksum {}",
                stored.epoch,
                checksum_hex(stored.checksum),
                stored.membership_sequence,
                mine.epoch,
                checksum_hex(mine.checksum)
            )));
        } else if stored.membership_sequence != mine.membership_sequence {
            self.problems.push(at(format!(
                "membership sequence {} is not a membership event of the ring (the fold's last is {})",
                stored.membership_sequence, mine.membership_sequence
            )));
        } else if stored.digest != mine.digest {
            self.problems.push(at(
                "members or tokens differ from the fold's (same checksum)".to_string(),
            ));
        }
        if stored.rebalance_sequence != 0 {
            self.snapshot_rebalance
                .push((key, stored.epoch, stored.rebalance_sequence));
        }
    }

    /// Finishes after the last record (`last_seq`: the end of the stream) and reports.
    pub(crate) fn finish(mut self, last_seq: u64) -> VerifyReport {
        self.check_snapshots_before(last_seq.saturating_add(1));
        for (_, left) in std::mem::take(&mut self.snapshots) {
            for s in left {
                self.problems.push(problem(
                    Some(s.epoch),
                    Some(s.membership_sequence),
                    format!(
                        "snapshot {} includes sequence {}, beyond the end of the stream ({last_seq})",
                        s.key, s.membership_sequence
                    ),
                ));
            }
        }
        for (key, epoch, seq) in std::mem::take(&mut self.snapshot_rebalance) {
            let stored = self.rebalance_seqs.get(&epoch).copied().flatten();
            if stored != Some(seq) {
                let found = stored
                    .map_or_else(|| "none is stored".to_string(), |s| format!("it is at {s}"));
                self.problems.push(problem(
                    Some(epoch),
                    Some(seq),
                    format!("snapshot {key}: says epoch {epoch}'s rebalance event is at sequence {seq}, but {found}"),
                ));
            }
        }
        let ledger = &self.fold.ledger;
        VerifyReport {
            ring: ledger.ring_name().to_string(),
            folded: self.fold.stats,
            rebalance_events: self.rebalance_events,
            snapshots: self.snapshots_checked,
            epoch: ledger.epoch(),
            checksum: checksum_hex(ledger.checksum()),
            unpublished_epochs: self.pending.len() as u64,
            problems: self.problems,
        }
    }
}

/// A selection of stored events: one subject, or one message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeFilter {
    /// Everything on one subject.
    Subject(SubjectKind),
    /// One message type.
    Event(ringside_events::EventKind),
}

/// A name that is neither a subject of the `RINGSIDE` stream nor a message name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown event type '{0}' (membership, rebalance, handoff, scale, or a message name such as RingRebalanced)"
)]
pub struct UnknownType(pub String);

impl std::str::FromStr for TypeFilter {
    type Err = UnknownType;

    /// A subject kind of the `RINGSIDE` stream (`membership`) or a message name
    /// (`RingRebalanced`, any case).
    fn from_str(name: &str) -> Result<Self, UnknownType> {
        if let Some(kind) = SubjectKind::ALL.into_iter().find(|k| k.token() == name)
            && kind.stream() == Some(subject::STREAM_EVENTS)
        {
            return Ok(Self::Subject(kind));
        }
        ringside_events::EventKind::ALL
            .into_iter()
            .find(|k| k.message_name().eq_ignore_ascii_case(name))
            .map(Self::Event)
            .ok_or_else(|| UnknownType(name.to_string()))
    }
}

impl TypeFilter {
    /// The subject kind the filter reads.
    pub(crate) fn subject_kind(self) -> SubjectKind {
        match self {
            Self::Subject(k) => k,
            Self::Event(k) => k.subject_kind(),
        }
    }

    /// Whether a record passes.
    pub(crate) fn matches(self, r: &Record) -> bool {
        match self {
            Self::Subject(k) => r.subject.ends_with(&format!(".{}", k.token())),
            Self::Event(k) => r.event.as_ref().is_ok_and(|e| e.kind() == k),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ringside_events::{Event, RingName, codec};
    use ringside_ring::Strategy;

    use super::*;

    fn ring() -> RingName {
        RingName::new("orders").unwrap()
    }

    fn config() -> RingConfig {
        RingConfig::new(Strategy::Balanced, 16).unwrap()
    }

    fn member(i: u64, weight: u32) -> pb::Member {
        pb::Member {
            id: format!("n{i}"),
            address: format!("127.0.0.1:{}", 7000 + i),
            weight,
            ..Default::default()
        }
    }

    fn record(seq: u64, subject: String, event: &Event) -> Record {
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seq as i64);
        Record::decode(seq, t, subject, codec::encode(event).unwrap())
    }

    /// A stream as the reducer writes it: each membership event, then the rebalance
    /// event of the epoch it made; a snapshot every 5 epochs. Returns the records, the
    /// snapshots and the fold's (sequence, epoch, checksum) after each membership event.
    struct History {
        records: Vec<Record>,
        snapshots: Vec<(String, pb::RingSnapshot)>,
        after: Vec<(u64, u64, u64)>,
    }

    fn history(events: u64) -> History {
        let mut ledger = RingLedger::new(ring(), config());
        let mut out = History {
            records: Vec::new(),
            snapshots: Vec::new(),
            after: Vec::new(),
        };
        let mut seq = 0;
        let mut x: u64 = 12345;
        for i in 0..events {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = (x >> 33) % 8;
            let body: Body = match i % 7 {
                0..=2 => pb::MembersJoined {
                    members: vec![member(id, 1 + ((x >> 20) % 2) as u32)],
                    ..Default::default()
                }
                .into(),
                3 | 4 => pb::MemberLeft {
                    member_id: format!("n{id}"),
                    ..Default::default()
                }
                .into(),
                5 => pb::MembershipSynced {
                    members: (0..8)
                        .filter(|j| (x >> (40 + j)) & 1 == 1)
                        .map(|j| member(j, 1))
                        .collect(),
                    ..Default::default()
                }
                .into(),
                _ => pb::MembersJoined {
                    members: vec![member(id, 1), member((id + 1) % 8, 1)],
                    ..Default::default()
                }
                .into(),
            };
            let event = Event::new(ring(), body).unwrap();
            seq += 1;
            out.records
                .push(record(seq, subject::membership(&ring()), &event));
            if let Outcome::Rebalanced(r) = ledger.apply(seq, event.body()) {
                seq += 1;
                let stored = Event::new(ring(), *r).unwrap();
                out.records
                    .push(record(seq, subject::rebalance(&ring()), &stored));
                ledger.record_rebalance_sequence(seq);
                if ledger.epoch().is_multiple_of(5) {
                    let key = subject::snapshot_key(&ring(), ledger.epoch());
                    out.snapshots.push((key, ledger.snapshot().unwrap()));
                }
            }
            out.after.push((seq, ledger.epoch(), ledger.checksum()));
        }
        out
    }

    fn verify(h: &History) -> VerifyReport {
        let checks = h
            .snapshots
            .iter()
            .map(|(k, s)| SnapshotCheck::of(k, s))
            .collect();
        let mut v = Verifier::new(ring(), config(), checks);
        for r in &h.records {
            v.push(r);
        }
        v.finish(h.records.last().map_or(0, |r| r.seq))
    }

    #[test]
    fn verify_passes_on_a_stream_written_like_the_reducer() {
        let h = history(300);
        let report = verify(&h);
        assert_eq!(report.problems, vec![]);
        assert!(report.folded.epochs > 100, "{report:?}");
        assert_eq!(report.rebalance_events, report.folded.epochs);
        assert_eq!(report.snapshots as usize, h.snapshots.len());
        assert_eq!(report.unpublished_epochs, 0);
        assert_eq!(report.checksum, checksum_hex(h.after.last().unwrap().2));
    }

    /// Replaces the rebalance event of `epoch` with what `change` makes of it.
    fn tamper(h: &mut History, epoch: u64, change: impl Fn(&mut pb::RingRebalanced)) -> u64 {
        let r = h
            .records
            .iter_mut()
            .find(|r| {
                matches!(r.event.as_ref().map(|e| e.body()), Ok(Body::RingRebalanced(e)) if e.epoch == epoch)
            })
            .unwrap();
        let Ok(Body::RingRebalanced(mut e)) = r.event.clone().map(Event::into_body) else {
            unreachable!()
        };
        change(&mut e);
        let event = Event::new(ring(), e).unwrap();
        *r = record(r.seq, r.subject.clone(), &event);
        r.seq
    }

    #[test]
    fn verify_names_the_epoch_of_an_altered_checksum() {
        let mut h = history(200);
        let seq = tamper(&mut h, 40, |e| e.checksum ^= 1);
        let problems = verify(&h).problems;
        assert!(!problems.is_empty());
        assert!(
            problems
                .iter()
                .all(|p| p.epoch == Some(40) && p.sequence == Some(seq)),
            "{problems:?}"
        );
        assert!(problems[0].what.contains("stored checksum"), "{problems:?}");
    }

    #[test]
    fn verify_finds_events_that_do_not_rebuild_their_ring() {
        let mut h = history(200);
        // Same checksum, but a token change dropped: only the rebuild can tell.
        tamper(&mut h, 30, |e| {
            let t = e.token_changes.as_mut().unwrap();
            t.added.pop();
            t.added_owners.pop();
        });
        let problems = verify(&h).problems;
        assert!(
            problems
                .iter()
                .any(|p| p.epoch == Some(30) && p.what.contains("does not rebuild")),
            "{problems:?}"
        );
        assert!(
            problems.iter().all(|p| p.epoch == Some(30)),
            "later epochs check out: {problems:?}"
        );
    }

    #[test]
    fn verify_reports_gaps_duplicates_and_bad_snapshots() {
        let mut h = history(200);
        let dropped = h
            .records
            .iter()
            .position(|r| matches!(r.event.as_ref().map(|e| e.body()), Ok(Body::RingRebalanced(e)) if e.epoch == 12))
            .unwrap();
        h.records.remove(dropped);
        let problems = verify(&h).problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].what.contains("epochs 12..=12 are missing"),
            "{problems:?}"
        );

        let mut h = history(200);
        let mut copy = h
            .records
            .iter()
            .find(|r| r.subject.ends_with(".rebalance"))
            .unwrap()
            .clone();
        copy.seq = h.records.last().unwrap().seq + 1;
        h.records.push(copy);
        let problems = verify(&h).problems;
        assert!(problems[0].what.contains("stored again"), "{problems:?}");

        let mut h = history(200);
        h.snapshots[2].1.checksum ^= 1;
        h.snapshots[3].1.membership_sequence += 1_000_000;
        let problems = verify(&h).problems;
        let keys: Vec<&str> = h.snapshots[2..4].iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().zip(&keys).all(|(p, k)| p.what.contains(k)),
            "{problems:?}"
        );
    }

    #[test]
    fn verify_counts_undecodable_membership_as_the_reducer_skips_it() {
        let mut h = history(50);
        let t = OffsetDateTime::UNIX_EPOCH;
        let last = h.records.last().unwrap().seq;
        h.records.push(Record::decode(
            last + 1,
            t,
            subject::membership(&ring()),
            Bytes::from_static(b"garbage"),
        ));
        let report = verify(&h);
        assert_eq!(report.problems, vec![]);
        assert_eq!(report.folded.undecodable, 1);
    }

    #[test]
    fn a_fold_from_a_snapshot_gives_the_same_state_as_from_the_start() {
        let h = history(200);
        let (key, snap) = &h.snapshots[4];
        let mut from_start = Fold::new(RingLedger::new(ring(), config()));
        let mut from_snap = Fold::new(RingLedger::from_snapshot(snap).unwrap());
        for r in h
            .records
            .iter()
            .filter(|r| r.subject.ends_with(".membership"))
        {
            from_start.apply(r);
            if r.seq > snap.membership_sequence {
                from_snap.apply(r);
            }
        }
        let a = RingAt::new(from_start, 999, None).report();
        let b = RingAt::new(from_snap, 999, Some(key.clone())).report();
        assert_eq!(
            (a.epoch, &a.checksum, &a.members),
            (b.epoch, &b.checksum, &b.members)
        );
        let total: f64 = a.members.iter().map(|m| m.share).sum();
        assert!((total - 1.0).abs() < 1e-9 || a.members.is_empty());
        assert!(a.imbalance.is_none_or(|i| i >= 1.0));
    }

    #[test]
    fn key_history_agrees_with_lookups_at_every_epoch() {
        let h = history(300);
        let mut fold = Fold::new(RingLedger::new(ring(), config()));
        let mut history = KeyHistory::new("user:42", (1, u64::MAX), &fold.ledger);
        let hash = ringside_ring::hash_key(b"user:42");
        let mut owners = vec![None];
        for r in h
            .records
            .iter()
            .filter(|r| r.subject.ends_with(".membership"))
        {
            if fold.advance(r) {
                history.after_epoch(&fold.ledger, r);
                owners.push(
                    fold.ledger
                        .ring()
                        .owner_of_hash(hash)
                        .ok()
                        .map(str::to_string),
                );
            }
        }
        // Replaying the changes over the epochs gives the owner at every epoch.
        let mut owner = history.initial_owner.clone();
        let mut changes = history.changes.iter().peekable();
        for (epoch, expected) in owners.iter().enumerate() {
            while let Some(c) = changes.next_if(|c| c.epoch == epoch as u64) {
                assert_eq!(c.from, owner);
                owner = c.to.clone();
            }
            assert_eq!(&owner, expected, "epoch {epoch}");
        }
        assert!(history.changes.len() > 3);
    }

    #[test]
    fn moved_ranges_name_every_owner_change_and_nothing_else() {
        let h = history(120);
        let mut fold = Fold::new(RingLedger::new(ring(), config()));
        let hashes: Vec<u64> = (0..300)
            .map(|i| ringside_ring::hash_key(format!("key-{i}").as_bytes()))
            .chain([0, 1, u64::MAX])
            .collect();
        let owners = |ledger: &RingLedger| -> Vec<Option<String>> {
            hashes.iter().map(|&x| owner_of(ledger.ring(), x)).collect()
        };
        let mut before = owners(&fold.ledger);
        let mut moves = 0;
        for r in h
            .records
            .iter()
            .filter(|r| r.subject.ends_with(".membership"))
        {
            let Some(event) = fold.apply(r) else {
                continue;
            };
            let after = owners(&fold.ledger);
            for (i, &x) in hashes.iter().enumerate() {
                let moved = moved_owner(&event, x);
                if before[i] == after[i] {
                    assert_eq!(
                        moved, None,
                        "epoch {}: position {x} did not move",
                        event.epoch
                    );
                } else {
                    moves += 1;
                    assert_eq!(
                        moved,
                        Some(after[i].clone()),
                        "epoch {}: position {x}",
                        event.epoch
                    );
                }
            }
            before = after;
        }
        assert!(moves > 100, "{moves}");
    }

    #[test]
    fn diff_of_consecutive_epochs_is_the_stored_event() {
        let h = history(100);
        let mut fold = Fold::new(RingLedger::new(ring(), config()));
        let mut before = EpochRing::of(&fold.ledger);
        for r in h
            .records
            .iter()
            .filter(|r| r.subject.ends_with(".membership"))
        {
            if let Some(event) = fold.apply(r) {
                let after = EpochRing::of(&fold.ledger);
                let d = diff_report("orders", &before, &after);
                assert_eq!(d.moved_fraction, event.moved_fraction);
                assert_eq!(d.ideal_fraction, event.ideal_fraction);
                assert_eq!(d.added, event.joined);
                assert_eq!(d.removed, event.departed);
                assert_eq!(d.reweighted, event.reweighted);
                assert_eq!(
                    d.ranges.len(),
                    event.moved_ranges.as_ref().unwrap().starts.len()
                );
                before = after;
            }
        }
    }

    #[test]
    fn type_filters_take_subjects_and_message_names() {
        assert_eq!(
            "rebalance".parse(),
            Ok(TypeFilter::Subject(SubjectKind::Rebalance))
        );
        assert_eq!(
            "memberleft".parse(),
            Ok(TypeFilter::Event(ringside_events::EventKind::MemberLeft))
        );
        assert!(
            "load".parse::<TypeFilter>().is_err(),
            "load is not in RINGSIDE"
        );
        assert_eq!(
            "nonsense".parse::<TypeFilter>(),
            Err(UnknownType("nonsense".into()))
        );
    }
}
