//! `ringside load`: keyed PUT/GET traffic against the ring's nodes, from many client
//! addresses, at a steady rate, with a summary at the end; and `ringside load --verify`,
//! which proves afterwards that no acknowledged write was lost.
//!
//! # How it fits
//! The targets are `--nodes`, or every member of the running ring (the reducer's
//! `GetRing`, found through `up.json` like `ringside scale` finds it, or `--grpc`),
//! re-read every second so joins and leaves under load are followed. Each request goes
//! to a random target, so most keys reach a node that does not own them and are
//! forwarded. Clients bind their own loopback source addresses, so nodes count real
//! distinct client IPs; only loopback is ever a target. Every value written names the
//! run, a write counter and its key, so reading it back says which write it came from.
//! docs/load.md is the user's guide.
//!
//! # Layout
//! - `workload`: the seeded request sequence (read or write, key, node, client).
//! - `client`: the K clients, each bound to its own 127.0.x.y, and one exchange.
//! - `targets`: `--nodes` and the ring as GetRing serves it (addresses, shares).
//! - `drive`: the open-loop sender with its in-flight bound.
//! - `value`: the checkable values.
//! - `record`: `--record` lines and the verdict on a key read back.
//! - `verify`: `--verify`, reading every recorded key back.
//! - `report`: the counts and the summary (table or JSON).
//! - `histogram`: latencies in fixed memory.
//! - `progress`: the progress bar on stderr.

mod client;
mod drive;
mod histogram;
mod progress;
mod record;
mod report;
mod targets;
mod value;
mod verify;
mod workload;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use ringside_events::RingName;
use ringside_kit::settings;
use tokio::sync::watch;

use crate::local::StateDir;
use crate::output::Output;
use client::{Clients, MAX_CLIENTS};
use drive::{Plan, Stop};
use report::{RunFacts, Summary};
use targets::{Node, RingSource, Targets};
use workload::Shape;

/// Slowest rate: one request every 100 s keeps every due time within an Instant's range.
const MIN_RATE: f64 = 0.01;
/// Most distinct keys (`--zipf` keeps 8 bytes per key).
const MAX_KEYS: usize = 10_000_000;
/// Largest value: big enough to test the nodes' 1 MiB limit, small enough for memory.
const MAX_VALUE_BYTES: usize = 16 << 20;

/// `ringside load`
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Node API addresses to send to, comma-separated (IPv4:port in 127.0.0.0/8)
    /// [default: every member of the running ring].
    #[arg(long, value_delimiter = ',', value_parser = targets::parse_loopback, value_name = "ADDR")]
    nodes: Vec<SocketAddr>,
    /// The reducer's gRPC RingService to read the ring from (with --nodes: only for
    /// the ring shares) [default: the one of the running `ringside up`].
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// Ring name [default: the running `ringside up`'s ring, else the default ring].
    #[arg(long, value_parser = parse_ring)]
    ring: Option<RingName>,
    /// State directory of the running `ringside up`.
    #[arg(long, default_value = ".ringside", env = "RINGSIDE_STATE_DIR")]
    state_dir: PathBuf,
    /// Distinct client source addresses: 127.0.1.1, 127.0.1.2, ... (each a pooled
    /// keep-alive client).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Target rate in requests per second (open loop: due requests are sent whatever
    /// the answers do).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long to send (500ms, 30s, 5m, 1h; a bare number is seconds); 0 runs until
    /// Ctrl-C.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Send this many requests, then stop (instead of --duration).
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Most requests in flight; a request due beyond it is skipped and counted.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Distinct keys: user:0 .. user:N-1.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Zipf exponent S > 0 of key popularity (user:0 the most popular) [default:
    /// uniform].
    #[arg(long, value_name = "S")]
    zipf: Option<f64>,
    /// Fraction of requests that are reads (GET); the others are writes (PUT).
    #[arg(long, default_value_t = 0.9)]
    reads: f64,
    /// Bytes per value written (never less than the value's header, about 60 bytes).
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Seed of the request sequence (keys, mix, target nodes) [default: random,
    /// printed in the summary].
    #[arg(long)]
    seed: Option<u64>,
    /// Time limit of one request, connecting included.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Record every write in FILE (JSON lines: key, write counter, value digest,
    /// acknowledged or not), for --verify.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Send no load: read back every key recorded in FILE and count missing, stale,
    /// corrupt and unreadable keys (exit status 1 if any).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["record", "duration", "requests", "rate", "keys", "zipf", "reads", "value_bytes", "seed"]
    )]
    verify: Option<PathBuf>,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

fn parse_ring(s: &str) -> Result<RingName, String> {
    RingName::new(s).map_err(|e| format!("invalid ring name '{s}': {e}"))
}

/// `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("'{s}': the unit must be ms, s, m or h")),
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .ok_or_else(|| format!("'{s}' is not a duration (500ms, 30s, 5m, 1h)"))
}

impl LoadArgs {
    /// Refuses values clap cannot check alone, each with what is allowed.
    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=MAX_CLIENTS).contains(&self.clients),
            "--clients must be 1 to {MAX_CLIENTS} (one per address 127.0.x.y)"
        );
        ensure!(
            self.rate.is_finite() && self.rate >= MIN_RATE,
            "--rate must be at least {MIN_RATE} requests per second"
        );
        ensure!(
            self.max_in_flight >= 1,
            "--max-in-flight must be at least 1"
        );
        ensure!(
            (1..=MAX_KEYS).contains(&self.keys),
            "--keys must be 1 to {MAX_KEYS}"
        );
        ensure!(
            (0.0..=1.0).contains(&self.reads),
            "--reads must be a fraction from 0 to 1"
        );
        if let Some(s) = self.zipf {
            ensure!(
                s.is_finite() && s > 0.0,
                "--zipf must be a positive exponent"
            );
        }
        ensure!(
            self.value_bytes <= MAX_VALUE_BYTES,
            "--value-bytes must be at most {MAX_VALUE_BYTES}"
        );
        ensure!(!self.timeout.is_zero(), "--timeout must be more than 0");
        if self.requests == Some(0) {
            bail!("--requests must be at least 1");
        }
        Ok(())
    }
}

/// Runs `ringside load ...`, writing the summary to `out`. Fails (exit status 1) when
/// `--verify` finds a lost, damaged or unreadable key.
pub(crate) fn run(args: LoadArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    args.check()?;
    crate::service::block_on(async {
        let following = Following::start(&args).await?;
        let clients = Arc::new(Clients::new(args.clients, args.timeout));
        let result = match &args.verify {
            Some(path) => verify_record(&args, path, clients, &following, out).await,
            None => send_load(&args, clients, &following, out).await,
        };
        following.stop();
        result
    })
}

async fn send_load(
    args: &LoadArgs,
    clients: Arc<Clients>,
    following: &Following,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let recorder = args
        .record
        .as_deref()
        .map(record::Recorder::create)
        .transpose()?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let plan = Plan {
        rate: args.rate,
        stop: match (args.requests, args.duration) {
            (Some(n), _) => Stop::Requests(n),
            (None, d) if d.is_zero() => Stop::Interrupted,
            (None, d) => Stop::After(d),
        },
        max_in_flight: args.max_in_flight,
        value_bytes: args.value_bytes,
        shape: Shape {
            keys: args.keys,
            zipf: args.zipf,
            reads: args.reads,
            clients: args.clients,
        },
        seed,
        // Not from the seed: two runs with one seed must still tell their values apart.
        run: rand::random(),
    };
    let first_ring = following.targets.borrow().ring.clone();
    let driven = drive::drive(plan, clients, following.targets.clone(), recorder).await?;
    let summary = Summary::new(
        &driven.stats,
        RunFacts {
            run: plan.run,
            seed,
            elapsed: driven.elapsed,
            target_rate: args.rate,
            sent: driven.sent,
            skipped: driven.skipped,
            max_in_flight: args.max_in_flight,
            clients: args.clients,
            interrupted: driven.interrupted,
            first_ring,
            last_ring: following.targets.borrow().ring.clone(),
            refresh_failures: following.failures.load(Ordering::Relaxed),
            record: args.record.as_ref().map(|p| p.display().to_string()),
        },
    );
    summary.write(args.output, out)
}

async fn verify_record(
    args: &LoadArgs,
    path: &std::path::Path,
    clients: Arc<Clients>,
    following: &Following,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let book = record::read(path)?;
    let report = verify::verify(book, clients, following.targets.clone(), args.max_in_flight).await;
    report.write(args.output, out)?;
    if report.failed > 0 {
        bail!(
            "{} of {} keys failed verification ({} missing, {} stale, {} corrupt, {} unreadable)",
            report.failed,
            report.keys,
            report.missing,
            report.stale,
            report.corrupt,
            report.unreadable
        );
    }
    Ok(())
}

/// The targets, and the task that keeps them up to date with the ring.
#[derive(Debug)]
struct Following {
    targets: watch::Receiver<Arc<Targets>>,
    failures: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Where the targets come from.
#[derive(Debug)]
enum Source {
    /// `--nodes` alone.
    Nodes(Vec<Node>),
    /// A RingService: the targets (unless `fixed`) and the shares.
    Ring {
        grpc: SocketAddr,
        name: RingName,
        fixed: Option<Vec<Node>>,
    },
}

impl Source {
    fn of(args: &LoadArgs) -> anyhow::Result<Self> {
        let fixed = (!args.nodes.is_empty()).then(|| {
            args.nodes
                .iter()
                .copied()
                .map(Node::new)
                .collect::<Vec<_>>()
        });
        let default_ring = || {
            parse_ring(settings::RING.default_value().unwrap_or_default())
                .map_err(anyhow::Error::msg)
        };
        Ok(match (args.grpc, fixed) {
            (None, Some(nodes)) => Self::Nodes(nodes),
            (Some(grpc), fixed) => Self::Ring {
                grpc,
                name: args.ring.clone().map_or_else(default_ring, Ok)?,
                fixed,
            },
            (None, None) => {
                let state = StateDir::new(&args.state_dir);
                let running = state.running()?.with_context(|| {
                    format!(
                        "no ringside up is running with state in {} (start one, or give --nodes or --grpc)",
                        state.root().display()
                    )
                })?;
                let name = match &args.ring {
                    Some(name) => name.clone(),
                    None => parse_ring(&running.ring).map_err(anyhow::Error::msg)?,
                };
                Self::Ring {
                    grpc: running.grpc,
                    name,
                    fixed: None,
                }
            }
        })
    }
}

impl Following {
    /// Reads the targets once (an error here ends the command), then follows the ring
    /// if there is one to follow.
    async fn start(args: &LoadArgs) -> anyhow::Result<Self> {
        let failures = Arc::new(AtomicU64::new(0));
        let (grpc, name, fixed) = match Source::of(args)? {
            Source::Nodes(nodes) => {
                // Nothing changes these targets: the sender is not needed.
                let (_, targets) = watch::channel(Arc::new(Targets { nodes, ring: None }));
                return Ok(Self {
                    targets,
                    failures,
                    task: None,
                });
            }
            Source::Ring { grpc, name, fixed } => (grpc, name, fixed),
        };
        let mut source = RingSource::connect(grpc, name, fixed).await?;
        let first = source.read().await?;
        let (tx, targets) = watch::channel(Arc::new(first));
        let task = tokio::spawn(source.follow(tx, failures.clone()));
        Ok(Self {
            targets,
            failures,
            task: Some(task),
        })
    }

    fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "10x", "-1s", "1e999s", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
