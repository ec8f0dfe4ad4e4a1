//! `ringside tail`: the ring's stored events as they arrive, decoded, one line each
//! (sequence, time, kind, summary), or as JSON lines.
//!
//! It reads the `RINGSIDE` stream (membership, rebalance, handoff, scale of one ring)
//! with an ordered consumer, and with `--load` also the ring's load reports from
//! `RINGSIDE_LOAD`. A message that does not decode is printed as such and counted;
//! it never stops the tail. Only Ctrl-C (or `--count`) does.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use clap::Args;
use futures::{StreamExt as _, stream};
use ringside_events::RingName;
use ringside_events::subject::{self, SubjectKind};
use ringside_replay::{Record, STORED_KINDS, parse_time, subjects};
use time::OffsetDateTime;

use crate::nats_args::NatsArgs;
use crate::replay::{event_line, parse_ring};

/// `ringside tail ...`
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Ring name.
    #[arg(long, default_value = ringside_kit::settings::RING.default_value(), value_parser = parse_ring)]
    ring: RingName,
    /// One JSON object per line (seq, time, subject, event as proto3 JSON).
    #[arg(long)]
    json: bool,
    /// Start with the events stored at or after this time (RFC 3339) [default: new
    /// events only].
    #[arg(long, value_parser = parse_time, conflicts_with = "from_seq")]
    since: Option<OffsetDateTime>,
    /// Start at this stream sequence of RINGSIDE.
    #[arg(long)]
    from_seq: Option<u64>,
    /// Also show the ring's load reports (stream RINGSIDE_LOAD).
    #[arg(long)]
    load: bool,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    nats: NatsArgs,
}

/// Runs `ringside tail ...` until Ctrl-C or `--count`, writing to `out`.
pub(crate) fn run(args: TailArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(tail(args, out))
}

fn policy(args: &TailArgs, stored_stream: bool) -> consumer::DeliverPolicy {
    match (args.since, args.from_seq) {
        (Some(start_time), _) => consumer::DeliverPolicy::ByStartTime { start_time },
        // A RINGSIDE sequence means nothing in the load stream: it starts with new reports.
        (None, Some(start_sequence)) if stored_stream => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start_sequence.max(1),
        },
        _ => consumer::DeliverPolicy::New,
    }
}

/// An ordered consumer's messages, each with its stream name.
async fn follow(
    js: &jetstream::Context,
    stream_name: &'static str,
    filter_subjects: Vec<String>,
    deliver_policy: consumer::DeliverPolicy,
) -> anyhow::Result<consumer::pull::Ordered> {
    let stream = js.get_stream(stream_name).await.with_context(|| {
        format!("cannot open stream {stream_name} (is ringside running there?)")
    })?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subjects,
            deliver_policy,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create an ordered consumer on {stream_name}"))?;
    consumer
        .messages()
        .await
        .with_context(|| format!("cannot read stream {stream_name}"))
}

async fn tail(args: TailArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = args.nats.connect().await?;
    let js = jetstream::new(client);
    let events = follow(
        &js,
        subject::STREAM_EVENTS,
        subjects(&args.ring, &STORED_KINDS),
        policy(&args, true),
    )
    .await?;
    let mut messages = events.boxed();
    if args.load {
        let load = follow(
            &js,
            subject::STREAM_LOAD,
            vec![subject::load_any(&args.ring)],
            policy(&args, false),
        )
        .await?;
        messages = stream::select(messages, load).boxed();
    }
    let mut shown: u64 = 0;
    let mut undecodable: u64 = 0;
    let mut errors: u32 = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while args.count.is_none_or(|n| shown < n) {
        let next = tokio::select! {
            _ = &mut ctrl_c => break,
            next = messages.next() => next,
        };
        let message = match next {
            None => anyhow::bail!("the server closed the stream"),
            Some(Err(e)) => {
                // Ordered consumers recreate themselves after a hiccup; say so and go on,
                // backing off if it keeps happening.
                errors = errors.saturating_add(1);
                eprintln!("tail: {e}; continuing");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(errors.min(50)))).await;
                continue;
            }
            Some(Ok(m)) => m,
        };
        errors = 0;
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("bad message metadata: {e}"))?;
        let (seq, time) = (info.stream_sequence, info.published);
        let record = Record::decode(
            seq,
            time,
            message.subject.to_string(),
            message.payload.clone(),
        );
        if record.event.is_err() {
            undecodable += 1;
        }
        let line = if args.json {
            record
                .to_json_line()
                .context("cannot encode an event as JSON")?
        } else if subject::parse(&record.subject).is_ok_and(|p| p.kind == SubjectKind::Load) {
            // Its sequence is one of RINGSIDE_LOAD, not of RINGSIDE: say so.
            format!("{}  [{}]", event_line(&record), subject::STREAM_LOAD)
        } else {
            event_line(&record)
        };
        writeln!(out, "{line}")?;
        out.flush()?;
        shown += 1;
    }
    eprintln!("tail: {shown} messages, {undecodable} undecodable");
    Ok(())
}
