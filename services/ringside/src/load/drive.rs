//! The open-loop sender: requests are due at `--rate` whatever the answers do, so a slow
//! node shows as latency and errors rather than as a quietly lower rate.
//!
//! 1. Request n is due at `n / rate` seconds after the start. Each turn sends every
//!    request that is due, then sleeps until the next one (or a completion arrives).
//! 2. At most `--max-in-flight` requests are out at once: a due request beyond that is
//!    *skipped* and counted, never queued, so a stalled system cannot make the sender
//!    pile up work (and its latency is not hidden behind a queue).
//! 3. Each request runs as its own task and reports back over a channel as deep as the
//!    in-flight bound; this loop alone counts, records and draws the progress bar.
//! 4. At the end (duration, request count, Ctrl-C or SIGTERM) no new request starts; the ones
//!    in flight finish (each within `--timeout`) and are counted.
//!
//! Writes draw a number from the run's write counter when planned (`seq`, carried in
//! the value) and read the counter again when they end (`done`): see `record` for why.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use http::Method;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use super::client::{Clients, Exchange};
use super::progress::Bar;
use super::record::{self, Recorder, Written};
use super::report::Stats;
use super::targets::Targets;
use super::value;
use super::workload::{Op, Planned, Shape, Workload, key_name};

/// When the run ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stop {
    /// After this long.
    After(Duration),
    /// After this many requests were sent.
    Requests(u64),
    /// At Ctrl-C only.
    Interrupted,
}

/// The run's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Requests per second.
    pub(crate) rate: f64,
    /// When to stop.
    pub(crate) stop: Stop,
    /// Most requests in flight.
    pub(crate) max_in_flight: usize,
    /// Bytes per value written.
    pub(crate) value_bytes: usize,
    /// Keys, mix and clients.
    pub(crate) shape: Shape,
    /// Seed of the request sequence.
    pub(crate) seed: u64,
    /// The run id in every value.
    pub(crate) run: u64,
}

/// What the run did.
#[derive(Debug)]
pub(crate) struct Driven {
    /// The counts.
    pub(crate) stats: Stats,
    /// Requests sent.
    pub(crate) sent: u64,
    /// Requests due but not sent (in-flight bound).
    pub(crate) skipped: u64,
    /// From the start to the end of the last request.
    pub(crate) elapsed: Duration,
    /// Ended by Ctrl-C or SIGTERM.
    pub(crate) interrupted: bool,
}

/// A write's identity, from planning to recording.
#[derive(Debug, Clone, Copy)]
struct WriteId {
    seq: u64,
    done: u64,
    bytes: usize,
    digest: u64,
}

/// A finished request.
#[derive(Debug)]
struct Done {
    op: Op,
    key: String,
    write: Option<WriteId>,
    exchange: Exchange,
}

/// Sends the load `plan` describes to `targets` (which may change while it runs).
pub(crate) async fn drive(
    plan: Plan,
    clients: Arc<Clients>,
    targets: watch::Receiver<Arc<Targets>>,
    mut recorder: Option<Recorder>,
) -> anyhow::Result<Driven> {
    let writes = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(plan.max_in_flight));
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(plan.max_in_flight);
    let mut workload = Workload::new(plan.shape, plan.seed);
    let mut bar = Bar::new(match plan.stop {
        Stop::After(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        Stop::Requests(n) => Some(n),
        Stop::Interrupted => None,
    });
    let mut stats = Stats::default();
    let (mut slots, mut sent, mut skipped) = (0u64, 0u64, 0u64);
    let mut stop_signals = StopSignals::new()?;
    let start = Instant::now();
    let deadline = match plan.stop {
        // A duration past what an Instant can hold is as good as forever.
        Stop::After(d) => start.checked_add(d),
        Stop::Requests(_) | Stop::Interrupted => None,
    };
    let interrupted = loop {
        let now = Instant::now();
        let enough = match plan.stop {
            Stop::After(d) => now - start >= d,
            Stop::Requests(n) => sent >= n,
            Stop::Interrupted => false,
        };
        if enough {
            break false;
        }
        let due = ((now - start).as_secs_f64() * plan.rate) as u64;
        let current = targets.borrow().clone();
        while slots < due && !matches!(plan.stop, Stop::Requests(n) if sent >= n) {
            slots += 1;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                skipped += 1;
                continue;
            };
            let planned = workload.next(current.nodes.len());
            // Targets always have a node (an empty ring is never taken); the check
            // keeps a broken promise from becoming a panic.
            let Some(node) = current.nodes.get(planned.node) else {
                skipped += 1;
                continue;
            };
            sent += 1;
            let write = (planned.op == Op::Put).then(|| writes.fetch_add(1, Ordering::SeqCst) + 1);
            let request = Request {
                planned,
                url: node.keys_url.clone(),
                write,
                run: plan.run,
                value_bytes: plan.value_bytes,
            };
            let (clients, writes, done_tx) = (clients.clone(), writes.clone(), done_tx.clone());
            tokio::spawn(async move {
                let done = request.send(&clients, &writes).await;
                // The receiver outlives every request (it drains them all).
                let _ = done_tx.send(done).await;
                drop(permit);
            });
        }
        let mut next = start + Duration::from_secs_f64((slots + 1) as f64 / plan.rate);
        if let Some(deadline) = deadline {
            next = next.min(deadline);
        }
        tokio::select! {
            biased;
            () = stop_signals.recv() => break true,
            Some(done) = done_rx.recv() => count(&mut stats, recorder.as_mut(), plan.run, done)?,
            () = tokio::time::sleep_until(next) => {}
        }
        bar.update(progress(plan.stop, start, sent), || {
            format!("{sent} sent, {skipped} skipped, {}", stats.line())
        });
    };
    drop(done_tx);
    while let Some(done) = done_rx.recv().await {
        count(&mut stats, recorder.as_mut(), plan.run, done)?;
        bar.update(progress(plan.stop, start, sent), || stats.line());
    }
    let elapsed = start.elapsed();
    bar.finish();
    if let Some(recorder) = recorder {
        recorder.finish()?;
    }
    Ok(Driven {
        stats,
        sent,
        skipped,
        elapsed,
        interrupted,
    })
}

/// Ctrl-C or SIGTERM: both end the run with a summary (and a complete record).
#[derive(Debug)]
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        let watch = |kind| signal(kind).context("cannot watch for Ctrl-C and SIGTERM");
        Ok(Self {
            interrupt: watch(SignalKind::interrupt())?,
            terminate: watch(SignalKind::terminate())?,
        })
    }

    /// The next Ctrl-C or SIGTERM.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

fn progress(stop: Stop, start: Instant, sent: u64) -> u64 {
    match stop {
        Stop::After(_) => u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        Stop::Requests(_) | Stop::Interrupted => sent,
    }
}

/// Counts a finished request, and records it if it was a write.
fn count(
    stats: &mut Stats,
    recorder: Option<&mut Recorder>,
    run: u64,
    done: Done,
) -> anyhow::Result<()> {
    stats.add(done.op, &done.exchange);
    if let (Some(recorder), Some(w)) = (recorder, done.write) {
        let ack = done
            .exchange
            .result
            .as_ref()
            .is_ok_and(|reply| (200..300).contains(&reply.status));
        recorder.write(&Written {
            run: record::hex(run),
            key: done.key,
            seq: w.seq,
            done: w.done,
            ack,
            bytes: w.bytes,
            xxh3: record::hex(w.digest),
        })?;
    }
    Ok(())
}

/// One request, ready to send.
#[derive(Debug)]
struct Request {
    planned: Planned,
    url: String,
    /// The write counter's number, for a write.
    write: Option<u64>,
    run: u64,
    value_bytes: usize,
}

impl Request {
    async fn send(self, clients: &Clients, writes: &AtomicU64) -> Done {
        let key = key_name(self.planned.key);
        let url = format!("{}{key}", self.url);
        match self.write {
            None => {
                let exchange = clients
                    .send(self.planned.client, Method::GET, &url, bytes::Bytes::new())
                    .await;
                Done {
                    op: Op::Get,
                    key,
                    write: None,
                    exchange,
                }
            }
            Some(seq) => {
                // The value is built here, not in the sending loop: a 1 MiB value
                // must not delay the requests due after it.
                let body = value::value(self.run, seq, &key, self.value_bytes);
                let (bytes, digest) = (body.len(), value::digest(&body));
                let exchange = clients
                    .send(self.planned.client, Method::PUT, &url, body)
                    .await;
                let done = writes.load(Ordering::SeqCst);
                Done {
                    op: Op::Put,
                    key,
                    write: Some(WriteId {
                        seq,
                        done,
                        bytes,
                        digest,
                    }),
                    exchange,
                }
            }
        }
    }
}
