//! `ringside load --verify FILE`: reads back every key of a record and judges each
//! value by the record's rule (see `record`). Key i is read through node i (mod the
//! node count), so every node's forwarding is exercised; a read that fails (an error
//! status or a transport failure) is tried again through the next nodes, and a key
//! that no attempt could read counts as unreadable.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use http::Method;
use tokio::sync::watch;

use super::client::Clients;
use super::progress::Bar;
use super::record::{self, Book, KeyWrites, Verdict};
use super::report::VerifyReport;
use super::targets::Targets;

/// Attempts per key.
const ATTEMPTS: usize = 3;
/// Pause before the second attempt; doubled before each next one.
const BACKOFF: Duration = Duration::from_millis(200);

/// How reading one key ended.
#[derive(Debug)]
enum Read {
    Judged(Verdict),
    /// Every attempt failed; the last failure's kind.
    Failed(String),
}

/// Reads every key of `book` with at most `max_in_flight` reads at once.
pub(crate) async fn verify(
    book: Book,
    clients: Arc<Clients>,
    targets: watch::Receiver<Arc<Targets>>,
    max_in_flight: usize,
) -> VerifyReport {
    let mut report = VerifyReport {
        run: record::hex(book.run),
        keys: book.keys.len() as u64,
        acknowledged_keys: book.keys.values().filter(|w| w.acknowledged()).count() as u64,
        ..VerifyReport::default()
    };
    let mut bar = Bar::new(Some(report.keys));
    let run = book.run;
    let reads = futures::stream::iter(book.keys.iter().enumerate())
        .map(|(i, (key, writes))| {
            let (clients, targets) = (&clients, &targets);
            async move { read_key(clients, targets, i, run, key, writes).await }
        })
        .buffer_unordered(max_in_flight.max(1));
    tokio::pin!(reads);
    let mut checked = 0;
    while let Some(read) = reads.next().await {
        checked += 1;
        match read {
            Read::Judged(verdict) => {
                let counter = match verdict {
                    Verdict::Ok => &mut report.ok,
                    Verdict::Missing => &mut report.missing,
                    Verdict::Stale => &mut report.stale,
                    Verdict::Corrupt => &mut report.corrupt,
                    Verdict::OtherRun => &mut report.other_run,
                    Verdict::Unrecorded => &mut report.unrecorded,
                };
                *counter += 1;
                report.failed += u64::from(verdict.is_loss());
            }
            Read::Failed(kind) => {
                report.unreadable += 1;
                report.failed += 1;
                *report.read_errors.entry(kind).or_default() += 1;
            }
        }
        bar.update(checked, || {
            format!("{checked} keys read, {} failed", report.failed)
        });
    }
    bar.finish();
    report
}

async fn read_key(
    clients: &Clients,
    targets: &watch::Receiver<Arc<Targets>>,
    index: usize,
    run: u64,
    key: &str,
    writes: &KeyWrites,
) -> Read {
    let mut failure = String::new();
    let mut pause = BACKOFF;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        let url = {
            let current = targets.borrow();
            let nodes = &current.nodes;
            match nodes.get((index + attempt) % nodes.len().max(1)) {
                Some(node) => format!("{}{key}", node.keys_url),
                None => return Read::Failed("no node to read from".into()),
            }
        };
        let exchange = clients
            .send(index, Method::GET, &url, bytes::Bytes::new())
            .await;
        match exchange.result {
            Ok(reply) if reply.status == 200 => {
                return Read::Judged(record::judge(run, key, writes, Some(&reply.body)));
            }
            Ok(reply) if reply.status == 404 => {
                return Read::Judged(record::judge(run, key, writes, None));
            }
            Ok(reply) => failure = format!("HTTP {}", reply.status),
            Err(kind) => failure = kind,
        }
    }
    Read::Failed(failure)
}
