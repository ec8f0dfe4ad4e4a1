//! `ringside replay`: post-mortem questions answered from the `RINGSIDE` stream (or an
//! export of it), with the same fold as the reducer.
//!
//! The answers come from the `ringside-replay` library ([`History`]); this module
//! parses the command line, opens the history and prints the answers as tables or
//! JSON.
//!
//! # Layout
//! - this module: the `replay` subcommands, their flags, and the printers.
//! - `progress`: the progress bar on stderr and the warnings a replay reports.

mod progress;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use ringside_events::RingName;
use ringside_replay::{
    Format, History, IndexDir, Observer as _, Point, Range, Record, TypeFilter, parse_time, rfc3339,
};
use time::OffsetDateTime;

use crate::nats_args::NatsArgs;
use crate::output::{Output, write_json, write_moved_ranges, write_table};
use progress::Progress;

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
    /// Where key-history keeps its index of moved ranges (a cache of the stream,
    /// rebuilt if deleted) [default: $XDG_CACHE_HOME/ringside/replay-index, else
    /// ~/.cache/ringside/replay-index].
    #[arg(
        long,
        global = true,
        env = "RINGSIDE_REPLAY_INDEX_DIR",
        value_name = "DIR"
    )]
    index_dir: Option<PathBuf>,
    /// Keep no index (whatever --index-dir says): key-history reads every stored
    /// epoch of its range.
    #[arg(long, global = true)]
    no_index: bool,
    #[command(flatten)]
    nats: NatsArgs,
}

impl Common {
    /// The key index's directory, unless `--no-index` (or there is no home to keep it in).
    fn index_dir(&self) -> Option<IndexDir> {
        if self.no_index {
            return None;
        }
        let dir = self.index_dir.clone().or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .filter(|d| !d.is_empty())
                        .map(|home| PathBuf::from(home).join(".cache"))
                })?;
            Some(cache.join("ringside").join("replay-index"))
        })?;
        Some(IndexDir(dir))
    }
}

#[derive(Debug, Subcommand)]
enum ReplayCommand {
    /// The ring at a point of the stream: members, tokens, shares, imbalance, checksum.
    State {
        /// Everything up to this stream sequence [default: the end of the stream].
        #[arg(long, conflicts_with = "at_time")]
        at_seq: Option<u64>,
        /// Everything stored at or before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        at_time: Option<OffsetDateTime>,
    },
    /// Every owner change of a key, with the sequence, time and causing event.
    KeyHistory {
        /// The key (its UTF-8 bytes are hashed, as the nodes do).
        key: String,
        #[command(flatten)]
        range: RangeArgs,
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
        range: RangeArgs,
        /// Only these types: membership, rebalance, handoff, scale, or a message name
        /// (RingRebalanced); repeat or separate with commas.
        #[arg(long = "type", value_delimiter = ',', value_parser = str::parse::<TypeFilter>)]
        types: Vec<TypeFilter>,
    },
    /// Write the ring's history (messages and snapshots) to stdout.
    Export {
        /// ndjson (one JSON object per line) or pb (length-delimited protobuf).
        #[arg(long, value_enum)]
        format: Format,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Rebuild the ring from the first event and check every stored rebalance event
    /// and snapshot against it; exits non-zero on a mismatch.
    Verify,
}

/// A range of the stream: each end a sequence number or an RFC 3339 time.
#[derive(Debug, Args)]
struct RangeArgs {
    /// Start (sequence, or RFC 3339 time) [default: the first event].
    #[arg(long, value_parser = parse_point)]
    from: Option<Point>,
    /// End, inclusive (sequence, or RFC 3339 time) [default: the end of the stream].
    #[arg(long, value_parser = parse_point)]
    to: Option<Point>,
}

fn parse_point(s: &str) -> Result<Point, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Point::Seq)
            .map_err(|_| format!("sequence '{s}' is too large"));
    }
    parse_time(s)
        .map(Point::Time)
        .map_err(|e| format!("{e}; or give a stream sequence"))
}

impl From<&RangeArgs> for Range {
    fn from(args: &RangeArgs) -> Self {
        Self {
            from: args.from,
            to: args.to,
        }
    }
}

/// Parses `--ring` (`replay` and `tail`).
pub(crate) fn parse_ring(s: &str) -> Result<RingName, String> {
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
    let history = match &common.file {
        Some(path) => History::file(path, common.ring.clone())?,
        None => {
            let client = common.nats.connect().await?;
            let ring = match common.ring.clone() {
                Some(ring) => ring,
                None => parse_ring(
                    ringside_kit::settings::RING
                        .default_value()
                        .unwrap_or_default(),
                )
                .map_err(anyhow::Error::msg)?,
            };
            let history = History::nats(client, &common.nats.url()?.0, ring).await?;
            match common.index_dir() {
                Some(dir) => history.with_key_index(dir),
                None => history,
            }
        }
    };
    history.check_ring().await?;
    let output = common.output;
    let mut progress = Progress::default();
    match args.command {
        ReplayCommand::State { at_seq, at_time } => {
            let at = at_seq.map(Point::Seq).or(at_time.map(Point::Time));
            let ring = history.ring_at(at, &mut progress).await?;
            state(&ring.report(), output, out)
        }
        ReplayCommand::KeyHistory { key, range } => {
            let h = history
                .key_history(&key, (&range).into(), &mut progress)
                .await?;
            key_history(&h, output, out)
        }
        ReplayCommand::Diff {
            from,
            to,
            max_ranges,
        } => {
            let report = history.diff(from, to, &mut progress).await?;
            diff(&report, max_ranges, output, out)
        }
        ReplayCommand::Events { range, types } => {
            events(
                &history,
                (&range).into(),
                &types,
                &mut progress,
                output,
                out,
            )
            .await
        }
        ReplayCommand::Export { format, range } => {
            let exported = history
                .export(format, (&range).into(), out, &mut progress)
                .await?;
            eprintln!(
                "exported {} messages and {} snapshots of ring '{}' (sequences {}..={})",
                exported.messages,
                exported.snapshots,
                history.ring(),
                exported.from,
                exported.to
            );
            Ok(())
        }
        ReplayCommand::Verify => {
            let report = history.verify(&mut progress).await?;
            verify(&report, output, out)
        }
    }
}

fn state(
    report: &ringside_replay::StateReport,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match output {
        Output::Json => write_json(out, report),
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

fn key_history(
    history: &ringside_replay::KeyHistory,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match output {
        Output::Json => write_json(out, history),
        Output::Table => {
            let (from, to) = history.sequences;
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

fn diff(
    report: &ringside_replay::DiffReport,
    max_ranges: usize,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match output {
        Output::Json => write_json(out, report),
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
    history: &History,
    range: Range,
    types: &[TypeFilter],
    progress: &mut Progress,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut events = history.events(range, types).await?;
    let (from, to) = events.range();
    progress.begin("events", from, to);
    // JSON is a streamed array, one event per line: written as it is read, so memory
    // stays the same whatever the history's length.
    let mut first = true;
    while let Some(r) = events.next().await? {
        progress.at(r.seq);
        let mut show = || -> anyhow::Result<()> {
            match output {
                Output::Table => writeln!(out, "{}", event_line(&r))?,
                Output::Json => {
                    let sep = if first { "[\n  " } else { ",\n  " };
                    write!(out, "{sep}{}", event_json(&r)?)?;
                    first = false;
                }
            }
            Ok(())
        };
        let shown = show();
        if let Err(e) = shown {
            events.close().await;
            return Err(e);
        }
    }
    progress.end();
    if output == Output::Json {
        writeln!(out, "{}", if first { "[]" } else { "\n]" })?;
    }
    Ok(())
}

/// A record as `events --output json` shows it: its JSON line with `kind` and
/// `summary` added.
fn event_json(r: &Record) -> anyhow::Result<serde_json::Value> {
    let line = r.to_json_line().context("cannot encode an event as JSON")?;
    let mut v: serde_json::Value = serde_json::from_str(&line)?;
    if let (Some(obj), Ok(e)) = (v.as_object_mut(), &r.event) {
        obj.insert("kind".into(), e.kind().message_name().into());
        obj.insert("summary".into(), e.summary().into());
    }
    Ok(v)
}

fn verify(
    report: &ringside_replay::VerifyReport,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match output {
        Output::Json => write_json(out, report)?,
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
