//! `ringside replay`: post-mortem questions answered from the `RINGSIDE` stream (or an
//! export of it), with the same fold as the reducer.
//!
//! # Layout
//! - [`record`]: a stored message ([`record::Record`]), times and JSON lines.
//! - [`source`]: the stream and snapshot bucket on NATS, or an export file.
//! - [`export`](mod@export): the export file format (ndjson, pb), writer and checked reader.
//! - [`engine`]: the pure computations (fold, state, key history, diff, verify).
//! - `progress`: the progress bar on stderr.
//!
//! # How it fits
//! Every command picks the newest snapshot at or before the point it needs (KV bucket
//! `RINGSIDE_SNAPSHOTS`, or the export's snapshots), starts a [`RingLedger`] from it and
//! folds the membership events after it, so the work is bounded by the snapshot
//! interval, not by the length of the stream. `verify` alone starts from the first
//! event, since checking the snapshots is its job.

pub(crate) mod engine;
pub(crate) mod export;
mod progress;
pub(crate) mod record;
pub(crate) mod source;

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use ringside_events::subject::SubjectKind;
use ringside_events::{RingLedger, RingName, pb};
use ringside_ring::RingConfig;
use time::OffsetDateTime;

use crate::nats_args::NatsArgs;
use crate::output::{Output, write_json, write_moved_ranges, write_table};
use engine::{EpochRing, Fold, KeyHistory, Problem, SnapshotCheck, TypeFilter, Verifier};
use progress::Progress;
use record::{Record, rfc3339};
use source::{STORED_KINDS, Source};

/// The ring the tools use when none is named.
pub(crate) const DEFAULT_RING: &str = "default";

/// `ringside replay ...`
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    #[command(subcommand)]
    command: ReplayCommand,
    #[command(flatten)]
    common: Common,
}

/// Flags every replay command takes.
#[derive(Debug, Args)]
struct Common {
    /// Ring name [default: "default"; with --file, the export's ring].
    #[arg(long, global = true, value_parser = parse_ring)]
    ring: Option<RingName>,
    /// Read an export file (from `replay export`) instead of a NATS server.
    #[arg(long, global = true, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t)]
    output: Output,
    #[command(flatten)]
    nats: NatsArgs,
}

#[derive(Debug, Subcommand)]
enum ReplayCommand {
    /// The ring at a point of the stream: members, tokens, shares, imbalance, checksum.
    State {
        /// Everything up to this stream sequence [default: the end of the stream].
        #[arg(long, conflicts_with = "at_time")]
        at_seq: Option<u64>,
        /// Everything stored at or before this time (RFC 3339).
        #[arg(long, value_parser = record::parse_time)]
        at_time: Option<OffsetDateTime>,
    },
    /// Every owner change of a key, with the sequence, time and causing event.
    KeyHistory {
        /// The key (its UTF-8 bytes are hashed, as the nodes do).
        key: String,
        #[command(flatten)]
        range: Range,
    },
    /// What changed between two epochs: members, moved ranges, moved fraction vs ideal.
    Diff {
        /// The first epoch.
        #[arg(long)]
        from: u64,
        /// The second epoch.
        #[arg(long)]
        to: u64,
        /// At most this many moved ranges in the table (JSON has all).
        #[arg(long, default_value_t = 20)]
        max_ranges: usize,
    },
    /// The decoded events of a range of the stream.
    Events {
        #[command(flatten)]
        range: Range,
        /// Only these types: membership, rebalance, handoff, scale, or a message name
        /// (RingRebalanced); repeat or separate with commas.
        #[arg(long = "type", value_delimiter = ',', value_parser = engine::parse_type)]
        types: Vec<TypeFilter>,
    },
    /// Write the ring's history (messages and snapshots) to stdout.
    Export {
        /// ndjson (one JSON object per line) or pb (length-delimited protobuf).
        #[arg(long, value_enum)]
        format: export::Format,
        #[command(flatten)]
        range: Range,
    },
    /// Rebuild the ring from the first event and check every stored rebalance event
    /// and snapshot against it; exits non-zero on a mismatch.
    Verify,
}

/// A range of the stream: each end a sequence number or an RFC 3339 time.
#[derive(Debug, Args)]
struct Range {
    /// Start (sequence, or RFC 3339 time) [default: the first event].
    #[arg(long, value_parser = parse_point)]
    from: Option<Point>,
    /// End, inclusive (sequence, or RFC 3339 time) [default: the end of the stream].
    #[arg(long, value_parser = parse_point)]
    to: Option<Point>,
}

/// A point of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// A stream sequence.
    Seq(u64),
    /// A time.
    Time(OffsetDateTime),
}

fn parse_point(s: &str) -> Result<Point, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Point::Seq)
            .map_err(|_| format!("sequence '{s}' is too large"));
    }
    record::parse_time(s)
        .map(Point::Time)
        .map_err(|e| format!("{e}; or give a stream sequence"))
}

fn parse_ring(s: &str) -> Result<RingName, String> {
    RingName::new(s).map_err(|e| format!("invalid ring name '{s}': {e}"))
}

/// Runs `ringside replay ...`, writing the result to `out`.
pub(crate) fn run(args: ReplayArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args, out))
}

async fn run_async(args: ReplayArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let common = args.common;
    let source = match &common.file {
        Some(path) => Source::file(path, common.ring.clone())?,
        None => {
            let client = common.nats.connect().await?;
            let ring = match common.ring.clone() {
                Some(ring) => ring,
                None => parse_ring(DEFAULT_RING).map_err(anyhow::Error::msg)?,
            };
            Source::nats(client, &common.nats.url()?.0, ring).await?
        }
    };
    source.check_ring().await?;
    let output = common.output;
    match args.command {
        ReplayCommand::State { at_seq, at_time } => {
            state(&source, at_seq, at_time, output, out).await
        }
        ReplayCommand::KeyHistory { key, range } => {
            key_history(&source, &key, &range, output, out).await
        }
        ReplayCommand::Diff {
            from,
            to,
            max_ranges,
        } => diff(&source, from, to, max_ranges, output, out).await,
        ReplayCommand::Events { range, types } => {
            events(&source, &range, &types, output, out).await
        }
        ReplayCommand::Export { format, range } => export(&source, format, &range, out).await,
        ReplayCommand::Verify => verify(&source, output, out).await,
    }
}

/// Where a fold starts: a ledger and the first sequence still to read.
struct Start {
    fold: Fold,
    from_seq: u64,
    snapshot: Option<String>,
}

/// The newest usable snapshot for which `fits` holds (`fits` must hold for every
/// snapshot older than one it holds for), or the empty ring before the first event.
async fn start(source: &Source, fits: impl Fn(&pb::RingSnapshot) -> bool) -> anyhow::Result<Start> {
    let mut refs = source.snapshots().await?;
    'search: loop {
        let mut fetched: BTreeMap<usize, pb::RingSnapshot> = BTreeMap::new();
        let (mut lo, mut hi) = (0, refs.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match source.snapshot(&refs[mid]).await {
                Ok(None) => {
                    refs.remove(mid);
                    continue 'search;
                }
                Ok(Some(s)) => {
                    if fits(&s) {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                    fetched.insert(mid, s);
                }
                Err(e) => {
                    eprintln!("warning: skipping snapshot {}: {e:#}", refs[mid].key);
                    refs.remove(mid);
                    continue 'search;
                }
            }
        }
        let Some(best) = lo.checked_sub(1) else {
            break;
        };
        let snapshot = match fetched.remove(&best) {
            Some(s) => s,
            None => match source.snapshot(&refs[best]).await? {
                Some(s) => s,
                None => {
                    refs.remove(best);
                    continue;
                }
            },
        };
        let loaded = match RingLedger::from_snapshot(&snapshot) {
            Ok(ledger) if ledger.ring_name() != source.ring() => {
                Err(format!("it is of ring '{}'", snapshot.ring))
            }
            Ok(ledger) => match matches_its_event(source, &snapshot).await? {
                Ok(()) => Ok(ledger),
                Err(e) => Err(e),
            },
            Err(e) => Err(record::error_chain(&e)),
        };
        match loaded {
            Ok(ledger) => {
                return Ok(Start {
                    from_seq: ledger.membership_sequence() + 1,
                    fold: Fold::new(ledger),
                    snapshot: Some(refs[best].key.clone()),
                });
            }
            Err(why) => eprintln!("warning: skipping snapshot {}: {why}", refs[best].key),
        }
        refs.remove(best);
    }
    let first = source.first_covered_seq().await?;
    if first > 1 {
        bail!(
            "{} starts at sequence {first} (earlier events are not in it) and has no snapshot to start from",
            source.describe()
        );
    }
    let config = source.first_config().await?.unwrap_or_default();
    Ok(Start {
        fold: Fold::new(RingLedger::new(source.ring().clone(), config)),
        from_seq: 1,
        snapshot: None,
    })
}

/// Whether a snapshot agrees with the stored rebalance event of its epoch (when it
/// names one): one read that catches a snapshot written for another epoch. `verify`
/// checks snapshots in full.
async fn matches_its_event(
    source: &Source,
    snapshot: &pb::RingSnapshot,
) -> anyhow::Result<Result<(), String>> {
    if snapshot.rebalance_sequence == 0 {
        return Ok(Ok(()));
    }
    let seq = snapshot.rebalance_sequence;
    let Some(record) = source.message(seq).await? else {
        return Ok(Err(format!(
            "its rebalance sequence {seq} is not an event of the ring"
        )));
    };
    Ok(match record.event.as_ref().map(|e| e.body()) {
        Ok(ringside_events::Body::RingRebalanced(r))
            if (r.epoch, r.checksum) == (snapshot.epoch, snapshot.checksum) =>
        {
            Ok(())
        }
        Ok(ringside_events::Body::RingRebalanced(r)) => Err(format!(
            "it says epoch {} checksum {}, its rebalance event at sequence {seq} says epoch {} checksum {}",
            snapshot.epoch,
            record::checksum_hex(snapshot.checksum),
            r.epoch,
            record::checksum_hex(r.checksum)
        )),
        _ => Err(format!("sequence {seq} is not a rebalance event")),
    })
}

/// The sequence a point names: itself, or the last sequence stored at or before a
/// time. Checked against the end of the stream.
async fn resolve(source: &Source, point: Point, last: u64) -> anyhow::Result<u64> {
    match point {
        Point::Seq(0) => bail!("stream sequences start at 1"),
        Point::Seq(s) if s > last => {
            bail!("sequence {s} is beyond the end of the stream (the last sequence is {last})")
        }
        Point::Seq(s) => Ok(s),
        Point::Time(t) => source.seq_at_time(t).await,
    }
}

/// The inclusive sequence range of a [`Range`].
async fn resolve_range(source: &Source, range: &Range) -> anyhow::Result<(u64, u64)> {
    let last = source.last_seq().await?;
    let from = match range.from {
        None => 1,
        // A start before the first event is simply the start.
        Some(Point::Time(t)) => match source.first_message().await? {
            Some((_, first)) if t <= first => 1,
            _ => {
                source
                    .seq_at_time(t - time::Duration::nanoseconds(1))
                    .await?
                    + 1
            }
        },
        Some(p) => resolve(source, p, last).await?,
    };
    let to = match range.to {
        None => last,
        Some(p) => resolve(source, p, last).await?,
    };
    if from > to {
        bail!("the range is empty: it starts at sequence {from} and ends at {to}");
    }
    Ok((from, to))
}

/// Folds the membership events `from..=to` into `fold`, calling `after` on each one
/// that makes an epoch, until it says stop.
async fn fold_range(
    source: &Source,
    fold: &mut Fold,
    from: u64,
    to: Option<u64>,
    mut after: impl FnMut(&Fold, &Record) -> ControlFlow<()>,
) -> anyhow::Result<()> {
    let end = match to {
        Some(to) => to,
        None => source.last_seq().await?,
    };
    let mut progress = Progress::new("replay", from, end);
    source
        .scan(
            from,
            to,
            &[SubjectKind::Membership],
            &mut progress,
            &mut |r| {
                // Only the state is needed here, not the epochs' events.
                Ok(if fold.advance(&r) {
                    after(fold, &r)
                } else {
                    ControlFlow::Continue(())
                })
            },
        )
        .await
}

async fn state(
    source: &Source,
    at_seq: Option<u64>,
    at_time: Option<OffsetDateTime>,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let last = source.last_seq().await?;
    let at = match (at_seq, at_time) {
        (Some(s), _) => resolve(source, Point::Seq(s), last).await?,
        (None, Some(t)) => source.seq_at_time(t).await?,
        (None, None) => last,
    };
    let mut start = start(source, |s| s.membership_sequence <= at).await?;
    fold_range(source, &mut start.fold, start.from_seq, Some(at), |_, _| {
        ControlFlow::Continue(())
    })
    .await?;
    let report = engine::state_report(&start.fold, at, start.snapshot);
    match output {
        Output::Json => write_json(out, &report),
        Output::Table => {
            writeln!(
                out,
                "ring {} at sequence {}: epoch {}, checksum {}",
                report.ring, report.at_sequence, report.epoch, report.checksum
            )?;
            let last_event = match &report.membership_time {
                Some(t) => format!("sequence {} ({t})", report.membership_sequence),
                None => format!("sequence {}", report.membership_sequence),
            };
            writeln!(
                out,
                "{} members, {} tokens ({}, {} vnodes); last membership event folded: {last_event}",
                report.members.len(),
                report.token_count,
                report.strategy,
                report.vnodes
            )?;
            let imbalance = report
                .imbalance
                .map_or_else(|| "n/a (empty ring)".to_string(), |i| format!("{i:.3}"));
            writeln!(
                out,
                "imbalance (peak/mean share per unit of weight): {imbalance}"
            )?;
            let from = report.started_from_snapshot.as_deref().map_or_else(
                || "the first event".to_string(),
                |k| format!("snapshot {k}"),
            );
            writeln!(
                out,
                "replayed from {from}: {} membership events folded\n",
                report.folded.membership
            )?;
            let rows: Vec<Vec<String>> = report
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.id.clone(),
                        m.weight.to_string(),
                        m.tokens.to_string(),
                        format!("{:.4}", m.share),
                        format!("{:.3}", m.load),
                        m.address.clone(),
                    ]
                })
                .collect();
            write_table(
                out,
                &["MEMBER", "WEIGHT", "TOKENS", "SHARE", "LOAD", "ADDRESS"],
                &rows,
            )
        }
    }
}

async fn key_history(
    source: &Source,
    key: &str,
    range: &Range,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if key.is_empty() {
        bail!("the key is empty");
    }
    let (from, to) = resolve_range(source, range).await?;
    let mut start = start(source, |s| s.membership_sequence < from).await?;
    // Fold silently up to the range, then note every epoch inside it.
    fold_range(
        source,
        &mut start.fold,
        start.from_seq,
        Some(from - 1),
        |_, _| ControlFlow::Continue(()),
    )
    .await?;
    let mut history = KeyHistory::new(key, &start.fold.ledger);
    fold_range(source, &mut start.fold, from, Some(to), |fold, r| {
        history.after_epoch(&fold.ledger, r);
        ControlFlow::Continue(())
    })
    .await?;
    match output {
        Output::Json => write_json(out, &history),
        Output::Table => {
            let owner = |o: &Option<String>| o.clone().unwrap_or_else(|| "(none)".to_string());
            writeln!(
                out,
                "key {:?} (position {}), sequences {from}..={to}: owner {} at epoch {}, {} changes, owner {} at epoch {}\n",
                history.key,
                history.position,
                owner(&history.initial_owner),
                history.initial_epoch,
                history.changes.len(),
                owner(&history.final_owner),
                history.final_epoch
            )?;
            let rows: Vec<Vec<String>> = history
                .changes
                .iter()
                .map(|c| {
                    vec![
                        c.sequence.to_string(),
                        c.time.clone(),
                        c.epoch.to_string(),
                        owner(&c.from),
                        owner(&c.to),
                        c.cause.clone(),
                    ]
                })
                .collect();
            write_table(
                out,
                &["SEQUENCE", "TIME", "EPOCH", "FROM", "TO", "CAUSE"],
                &rows,
            )
        }
    }
}

async fn diff(
    source: &Source,
    e1: u64,
    e2: u64,
    max_ranges: usize,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (lo, hi) = (e1.min(e2), e1.max(e2));
    let mut start = start(source, |s| s.epoch <= lo).await?;
    let mut rings: BTreeMap<u64, EpochRing> = BTreeMap::new();
    let mut keep = |fold: &Fold| {
        let epoch = fold.ledger.epoch();
        if epoch == lo || epoch == hi {
            rings.insert(epoch, EpochRing::of(&fold.ledger));
        }
        epoch >= hi
    };
    if !keep(&start.fold) {
        fold_range(source, &mut start.fold, start.from_seq, None, |fold, _| {
            if keep(fold) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await?;
    }
    let (Some(a), Some(b)) = (rings.get(&e1), rings.get(&e2)) else {
        bail!(
            "epoch {hi} is beyond the last epoch ({}) of ring '{}'",
            start.fold.ledger.epoch(),
            source.ring()
        );
    };
    let report = engine::diff_report(source.ring().as_str(), a, b);
    match output {
        Output::Json => write_json(out, &report),
        Output::Table => {
            let ids = |sign: char, ids: &[String]| -> Vec<String> {
                ids.iter().map(|id| format!("{sign}{id}")).collect()
            };
            let mut change = ids('+', &report.added);
            change.extend(ids('-', &report.removed));
            change.extend(ids('~', &report.reweighted));
            let change = if change.is_empty() {
                "no member change".to_string()
            } else {
                change.join(" ")
            };
            writeln!(
                out,
                "ring {}: epoch {} (sequence {}) -> epoch {} (sequence {}): {change}",
                report.ring,
                report.from_epoch,
                report.from_sequence,
                report.to_epoch,
                report.to_sequence
            )?;
            let ratio = report
                .moved_over_ideal
                .map_or_else(|| "n/a".to_string(), |r| format!("{r:.3}"));
            writeln!(
                out,
                "moved {:.4} of the key space (ideal {:.4}, moved/ideal {ratio}) in {} ranges",
                report.moved_fraction,
                report.ideal_fraction,
                report.ranges.len()
            )?;
            writeln!(
                out,
                "checksum {} -> {}\n",
                report.from_checksum, report.to_checksum
            )?;
            write_moved_ranges(out, &report.ranges, max_ranges)?;
            Ok(())
        }
    }
}

/// One line of `events` and `tail`: sequence, time, kind, summary (or why the payload
/// does not decode).
pub(crate) fn event_line(r: &Record) -> String {
    match &r.event {
        Ok(e) => format!(
            "{:>8}  {}  {:<16}  {}",
            r.seq,
            rfc3339(r.time),
            e.kind().message_name(),
            e.summary()
        ),
        Err(err) => format!(
            "{:>8}  {}  {:<16}  {}: {err} ({} bytes)",
            r.seq,
            rfc3339(r.time),
            "UNDECODABLE",
            r.subject,
            r.raw.len()
        ),
    }
}

async fn events(
    source: &Source,
    range: &Range,
    types: &[TypeFilter],
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (from, to) = resolve_range(source, range).await?;
    let mut kinds: Vec<SubjectKind> = if types.is_empty() {
        STORED_KINDS.to_vec()
    } else {
        types.iter().map(|t| t.subject_kind()).collect()
    };
    kinds.sort();
    kinds.dedup();
    let mut json = Vec::new();
    let mut progress = Progress::new("events", from, to);
    source
        .scan(from, Some(to), &kinds, &mut progress, &mut |r| {
            if !types.is_empty() && !types.iter().any(|t| t.matches(&r)) {
                return Ok(ControlFlow::Continue(()));
            }
            match output {
                Output::Table => writeln!(out, "{}", event_line(&r))?,
                Output::Json => {
                    let mut v: serde_json::Value = serde_json::from_str(&r.to_json_line()?)?;
                    if let (Some(obj), Ok(e)) = (v.as_object_mut(), &r.event) {
                        obj.insert("kind".into(), e.kind().message_name().into());
                        obj.insert("summary".into(), e.summary().into());
                    }
                    json.push(v);
                }
            }
            Ok(ControlFlow::Continue(()))
        })
        .await?;
    progress.finish();
    if output == Output::Json {
        write_json(out, &json)?;
    }
    Ok(())
}

async fn export(
    source: &Source,
    format: export::Format,
    range: &Range,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (from, to) = resolve_range(source, range).await?;
    let header = export::Header {
        ring: source.ring().to_string(),
        stream: ringside_events::subject::STREAM_EVENTS.to_string(),
        from_seq: from,
        to_seq: to,
        exported_at: OffsetDateTime::now_utc(),
    };
    let mut writer = export::Writer::new(std::io::BufWriter::new(out), format, &header)?;
    // Snapshots that need only events inside the export: a replay of the file can
    // start from any of them.
    for r in source.snapshots().await? {
        match source.snapshot(&r).await {
            Ok(Some(s)) if s.membership_sequence + 1 >= from && s.membership_sequence <= to => {
                writer.snapshot(&r.key, &s)?;
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: not exporting snapshot {}: {e:#}", r.key),
        }
    }
    let mut progress = Progress::new("export", from, to);
    source
        .scan(from, Some(to), &STORED_KINDS, &mut progress, &mut |r| {
            writer.message(&r)?;
            Ok(ControlFlow::Continue(()))
        })
        .await?;
    progress.finish();
    let (messages, snapshots) = writer.finish()?;
    eprintln!(
        "exported {messages} messages and {snapshots} snapshots of ring '{}' (sequences {from}..={to})",
        source.ring()
    );
    Ok(())
}

async fn verify(source: &Source, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    let (first, last) = source.covered().await?;
    let config: RingConfig = source.first_config().await?.unwrap_or_default();
    let mut checks = Vec::new();
    let mut unreadable = Vec::new();
    for r in source.snapshots().await? {
        match source.snapshot(&r).await {
            Ok(Some(s)) => checks.push(SnapshotCheck::of(&r.key, &s)),
            Ok(None) => {}
            Err(e) => unreadable.push(Problem {
                epoch: Some(r.epoch),
                sequence: None,
                what: format!("snapshot {}: cannot be read: {e:#}", r.key),
            }),
        }
    }
    let mut verifier = Verifier::new(source.ring().clone(), config, checks);
    for p in unreadable {
        verifier.note(p);
    }
    if first > 1 {
        bail!(
            "{} starts at sequence {first}: verify needs the history from the first event",
            source.describe()
        );
    }
    let mut progress = Progress::new("verify", 1, last);
    source
        .scan(
            1,
            Some(last),
            &[SubjectKind::Membership, SubjectKind::Rebalance],
            &mut progress,
            &mut |r| {
                verifier.push(&r);
                Ok(ControlFlow::Continue(()))
            },
        )
        .await?;
    progress.finish();
    let report = verifier.finish(last);
    match output {
        Output::Json => write_json(out, &report)?,
        Output::Table => {
            let f = &report.folded;
            writeln!(
                out,
                "verify ring {} from the first event: {} membership events ({} epochs, {} unchanged, {} rejected, {} undecodable), {} rebalance events, {} snapshots",
                report.ring,
                f.membership,
                f.epochs,
                f.unchanged,
                f.rejected,
                f.undecodable,
                report.rebalance_events,
                report.snapshots
            )?;
            writeln!(
                out,
                "fold: epoch {}, checksum {}",
                report.epoch, report.checksum
            )?;
            if report.unpublished_epochs > 0 {
                writeln!(
                    out,
                    "note: the last {} epochs of the fold have no rebalance event yet (reducer behind)",
                    report.unpublished_epochs
                )?;
            }
            if report.problems.is_empty() {
                writeln!(
                    out,
                    "OK: every stored rebalance event and snapshot matches the fold"
                )?;
            } else {
                let rows: Vec<Vec<String>> = report
                    .problems
                    .iter()
                    .map(|p| {
                        let opt =
                            |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
                        vec![opt(p.epoch), opt(p.sequence), p.what.clone()]
                    })
                    .collect();
                writeln!(out)?;
                write_table(out, &["EPOCH", "SEQUENCE", "PROBLEM"], &rows)?;
            }
        }
    }
    if let Some(p) = report.problems.first() {
        let at = match (p.epoch, p.sequence) {
            (Some(e), Some(s)) => format!("epoch {e}, sequence {s}"),
            (Some(e), None) => format!("epoch {e}"),
            (None, Some(s)) => format!("sequence {s}"),
            (None, None) => "the stream".to_string(),
        };
        bail!(
            "verify failed: {} problems; the first at {at}: {}",
            report.problems.len(),
            p.what
        );
    }
    Ok(())
}
