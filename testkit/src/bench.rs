//! Small shared pieces of the workspace's benchmarks (`harness = false` binaries).
//!
//! # Layout
//! - [`Flags`]: the command line of a benchmark (`--name VALUE` options and bare
//!   `--name` flags; the `--bench` cargo adds is ignored), read by name with defaults,
//!   and [`Flags::finish`] to reject what no one asked for.
//! - [`Summary`]: min and median of the samples of a figure (rates or times).
//! - [`per_second`]: a count over an elapsed time.
//! - [`write_json`]: writes a report where `--json PATH` says, creating its directory.
//! - [`ordered_from`]: an ordered consumer of some subjects of a stream.
//! - [`ordered_read_rate`]: the raw baseline of reading a stream (an ordered consumer
//!   and nothing else), which the benchmarks' ratios divide by.
//! - [`closed_loop`]: HTTP requests from a fixed number of keep-alive connections,
//!   each sending its next request when the last is answered: requests per second
//!   and latency percentiles ([`percentile`]).
//! - [`wait_for`]: polls until the system under test reaches a state (or panics).
//! - [`load_average`], [`pass`]: the load line every table starts with, PASS or MISS.
//! - [`run_measured`]: a command run to its end with its wall time, peak resident
//!   memory and the size of its output, which is counted, not kept.
//!
//! # How it fits
//! Every benchmark parses its arguments with [`Flags`] and summarises its rounds with
//! [`Summary`], so their command lines and their `{"min", "median"}` JSON objects
//! (documented in `docs/benchmarks.md`) behave alike. Errors are values
//! ([`FlagError`]); a benchmark's `main` turns them into a panic with their message.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;

/// A command line that a benchmark cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// An option that takes a value was given none.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A bare flag was given a value.
    #[error("{name} takes no value (got {value})")]
    UnexpectedValue {
        /// The flag.
        name: String,
        /// What followed it.
        value: String,
    },
    /// A value that does not parse as the option's type.
    #[error("{name} {value}: {reason}")]
    BadValue {
        /// The option.
        name: String,
        /// The value given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// An argument that is neither an option nor a flag of this benchmark.
    #[error("unknown argument {0}")]
    Unknown(String),
}

/// The command line of a benchmark: `--name VALUE` options and bare `--name` flags.
///
/// A word that starts with `--` is a name; the word after it is its value unless it is
/// a name too. Given twice, the last one counts. Read each with [`Flags::value`] or
/// [`Flags::flag`], then call [`Flags::finish`], which rejects anything not read.
#[derive(Debug)]
pub struct Flags {
    /// Names and values (`None` for a bare flag), in command-line order.
    given: Vec<(String, Option<String>)>,
    /// Names read so far (known to the benchmark).
    known: BTreeSet<String>,
}

impl Flags {
    /// The process's command line (without the program name).
    pub fn from_args() -> Result<Self, FlagError> {
        Self::parse(std::env::args().skip(1))
    }

    /// Parses `args` (without the program name); `--bench`, which cargo adds, is dropped.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, FlagError> {
        let mut given: Vec<(String, Option<String>)> = Vec::new();
        for arg in args {
            if arg.starts_with("--") {
                if arg != "--bench" {
                    given.push((arg, None));
                }
                continue;
            }
            match given.last_mut() {
                Some((_, value @ None)) => *value = Some(arg),
                _ => return Err(FlagError::Unknown(arg)),
            }
        }
        Ok(Self {
            given,
            known: BTreeSet::new(),
        })
    }

    /// The last occurrence of `name`, if any; marks `name` as known.
    fn last(&mut self, name: &str) -> Option<&(String, Option<String>)> {
        self.known.insert(name.to_string());
        self.given.iter().rev().find(|(n, _)| n == name)
    }

    /// The value of option `name` (e.g. `"--rounds"`) parsed as `T`, or `default`.
    pub fn value<T>(&mut self, name: &str, default: T) -> Result<T, FlagError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        Ok(self.optional(name)?.unwrap_or(default))
    }

    /// The value of option `name` parsed as `T`, if given.
    pub fn optional<T>(&mut self, name: &str) -> Result<Option<T>, FlagError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.last(name) {
            None => Ok(None),
            Some((_, None)) => Err(FlagError::MissingValue(name.to_string())),
            Some((_, Some(value))) => {
                value
                    .parse()
                    .map(Some)
                    .map_err(|e: T::Err| FlagError::BadValue {
                        name: name.to_string(),
                        value: value.clone(),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Whether bare flag `name` (e.g. `"--quick"`) is given.
    pub fn flag(&mut self, name: &str) -> Result<bool, FlagError> {
        match self.last(name) {
            None => Ok(false),
            Some((_, None)) => Ok(true),
            Some((_, Some(value))) => Err(FlagError::UnexpectedValue {
                name: name.to_string(),
                value: value.clone(),
            }),
        }
    }

    /// The process's arguments read by `read`, then [`Flags::finish`]; panics with the
    /// message of a command line the benchmark cannot run with (a benchmark's `main`).
    pub fn read_or_exit<T>(read: impl FnOnce(&mut Flags) -> Result<T, FlagError>) -> T {
        let parsed = Flags::from_args().and_then(|mut flags| {
            let args = read(&mut flags)?;
            flags.finish()?;
            Ok(args)
        });
        parsed.unwrap_or_else(|e| panic!("{e}"))
    }

    /// `--json PATH`: where to write the benchmark's JSON report, if anywhere.
    pub fn json_path(&mut self) -> Result<Option<String>, FlagError> {
        self.optional("--json")
    }

    /// Rejects the first argument that no [`Flags::value`] or [`Flags::flag`] read.
    pub fn finish(self) -> Result<(), FlagError> {
        match self
            .given
            .into_iter()
            .find(|(n, _)| !self.known.contains(n))
        {
            Some((name, _)) => Err(FlagError::Unknown(name)),
            None => Ok(()),
        }
    }
}

/// A baseline read ([`ordered_read_rate`]) that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The server refused or dropped the consumer or a message.
    #[error("reading the stream with an ordered consumer")]
    Nats(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Fewer messages than asked for.
    #[error("the stream ended after {read} of {count} messages")]
    Short {
        /// Messages read.
        read: usize,
        /// Messages asked for.
        count: usize,
    },
}

/// Reads `count` messages of `stream` with an ordered pull consumer made from `config`
/// and nothing else (the payload length is looked at, so the read is not optimised
/// away): messages per second, timed from the first fetch.
pub async fn ordered_read_rate(
    stream: &stream::Stream,
    config: consumer::pull::OrderedConfig,
    count: usize,
) -> Result<f64, ReadError> {
    let consumer = stream.create_consumer(config).await.map_err(nats_error)?;
    let start = Instant::now();
    let mut messages = consumer.messages().await.map_err(nats_error)?.take(count);
    let mut read = 0;
    while let Some(message) = messages.next().await {
        std::hint::black_box(message.map_err(nats_error)?.payload.len());
        read += 1;
    }
    if read < count {
        return Err(ReadError::Short { read, count });
    }
    Ok(per_second(count, start.elapsed()))
}

/// The messages of `subjects` in stream `stream`, from `deliver` on, through an
/// ordered consumer: what a benchmark watches a system's events with.
pub async fn ordered_from(
    js: &async_nats::jetstream::Context,
    stream: &str,
    subjects: Vec<String>,
    deliver: consumer::DeliverPolicy,
) -> Result<consumer::pull::Ordered, ReadError> {
    let config = consumer::pull::OrderedConfig {
        filter_subjects: subjects,
        deliver_policy: deliver,
        ..Default::default()
    };
    js.get_stream(stream)
        .await
        .map_err(nats_error)?
        .create_consumer(config)
        .await
        .map_err(nats_error)?
        .messages()
        .await
        .map_err(nats_error)
}

/// Any async-nats error as a [`ReadError::Nats`].
fn nats_error(e: impl std::error::Error + Send + Sync + 'static) -> ReadError {
    ReadError::Nats(Box::new(e))
}

/// Min and median of the samples of a figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The smallest sample.
    pub min: f64,
    /// The median (upper median of an even count).
    pub median: f64,
}

impl Summary {
    /// Min and median of `samples`; `None` when there are none.
    pub fn of(mut samples: Vec<f64>) -> Option<Self> {
        samples.sort_by(f64::total_cmp);
        Some(Self {
            min: *samples.first()?,
            median: samples[samples.len() / 2],
        })
    }

    /// `{"min": .., "median": ..}`, as the benchmarks' JSON reports hold it.
    pub fn json(self) -> serde_json::Value {
        serde_json::json!({"min": self.min, "median": self.median})
    }
}

/// `count` per second of `elapsed`.
pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Writes `report` (pretty JSON) to `path`, creating its directory first.
pub fn write_json(path: &Path, report: &serde_json::Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)?)
}

/// The first three fields of `/proc/loadavg` (empty where there is none).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Polls `check` every 50 ms until it holds; panics after `within`, naming `what`
/// (a benchmark's setup either reaches its state or the run is void).
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `PASS` or `MISS`, as the tables print a target.
pub fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// The `p`th percentile (nearest rank) of `sorted` samples; 0 when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What [`closed_loop`] sends: `method` on each of `paths` in turn, with `body`.
#[derive(Clone, Debug)]
pub struct Requests {
    /// `GET`, `PUT`, ...
    pub method: &'static str,
    /// The paths, taken in order (each connection takes the next one).
    pub paths: Arc<Vec<String>>,
    /// The body of every request (empty for none).
    pub body: Arc<[u8]>,
}

/// When [`closed_loop`] stops.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// After this long, going round the paths as often as it takes.
    Elapsed(Duration),
    /// Once every path has been sent once.
    EachOnce,
}

/// What a [`closed_loop`] measured.
#[derive(Clone, Debug)]
pub struct LoopRun {
    /// Answered requests per second.
    pub per_second: f64,
    /// Every answered request's latency in milliseconds, sorted.
    pub latencies_ms: Vec<f64>,
    /// Answers whose status was not 2xx.
    pub failed: usize,
}

impl LoopRun {
    /// The `p`th latency percentile in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies_ms, p)
    }
}

/// Sends `requests` to `addr` from `connections` keep-alive connections, each sending
/// its next request as soon as the last is answered (a fixed number in flight), until
/// `until`. Timed from after the connections are open.
pub async fn closed_loop(
    addr: SocketAddr,
    connections: usize,
    requests: &Requests,
    until: Until,
) -> std::io::Result<LoopRun> {
    let mut open = Vec::with_capacity(connections);
    for _ in 0..connections {
        open.push(crate::http::Connection::open(addr).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers = open.into_iter().map(|mut connection| {
        let (next, requests) = (Arc::clone(&next), requests.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let path = match until {
                    Until::EachOnce if i >= requests.paths.len() => break,
                    Until::Elapsed(d) if start.elapsed() >= d => break,
                    _ => &requests.paths[i % requests.paths.len()],
                };
                let sent = Instant::now();
                let (status, _) = connection
                    .send(requests.method, path, &requests.body)
                    .await?;
                if (200..300).contains(&status) {
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                } else {
                    failed += 1;
                }
            }
            Ok::<_, std::io::Error>((latencies, failed))
        })
    });
    let mut run = LoopRun {
        per_second: 0.0,
        latencies_ms: Vec::new(),
        failed: 0,
    };
    for worker in futures::future::join_all(workers).await {
        let (latencies, failed) = worker.map_err(std::io::Error::other)??;
        run.latencies_ms.extend(latencies);
        run.failed += failed;
    }
    run.per_second = per_second(run.latencies_ms.len(), start.elapsed());
    run.latencies_ms.sort_by(f64::total_cmp);
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse(args.iter().map(|a| a.to_string())).unwrap()
    }

    #[test]
    fn options_flags_defaults_and_the_cargo_bench_flag() {
        let mut f = flags(&[
            "--rounds",
            "7",
            "--quick",
            "--json",
            "out/x.json",
            "--bench",
        ]);
        assert_eq!(f.value("--rounds", 3usize).unwrap(), 7);
        assert_eq!(f.value("--messages", 20_000usize).unwrap(), 20_000);
        assert!(f.flag("--quick").unwrap());
        assert!(!f.flag("--verbose").unwrap());
        assert_eq!(f.json_path().unwrap().as_deref(), Some("out/x.json"));
        f.finish().unwrap();
    }

    #[test]
    fn the_last_occurrence_counts() {
        let mut f = flags(&["--runs", "1", "--runs", "2"]);
        assert_eq!(f.value("--runs", 5u32).unwrap(), 2);
    }

    #[test]
    fn bad_command_lines_are_errors_naming_the_argument() {
        let mut f = flags(&["--rounds"]);
        let e = f.value("--rounds", 3usize).unwrap_err();
        assert_eq!(e.to_string(), "--rounds needs a value");

        let mut f = flags(&["--rounds", "x"]);
        let e = f.value("--rounds", 3usize).unwrap_err();
        assert!(e.to_string().starts_with("--rounds x: "), "{e}");

        let mut f = flags(&["--quick", "5"]);
        assert!(matches!(
            f.flag("--quick"),
            Err(FlagError::UnexpectedValue { .. })
        ));

        let mut f = flags(&["--rounds", "2", "--typo", "1"]);
        f.value("--rounds", 3usize).unwrap();
        assert_eq!(
            f.finish().unwrap_err().to_string(),
            "unknown argument --typo"
        );

        let e = Flags::parse(["stray".to_string()]).unwrap_err();
        assert_eq!(e.to_string(), "unknown argument stray");
    }

    #[test]
    fn summary_is_min_and_upper_median() {
        let s = Summary::of(vec![3.0, 1.0, 4.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median), (1.0, 3.0));
        assert_eq!(s.json(), serde_json::json!({"min": 1.0, "median": 3.0}));
        assert_eq!(Summary::of(Vec::new()), None);
    }

    #[test]
    fn percentile_is_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn a_closed_loop_sends_each_path_once_over_keep_alive_connections() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new().route(
                "/k/{key}",
                axum::routing::put(|body: String| async move { body }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
            let requests = Requests {
                method: "PUT",
                paths: Arc::new((0..50).map(|i| format!("/k/{i}")).collect()),
                body: Arc::from(&b"value"[..]),
            };
            let run = closed_loop(addr, 4, &requests, Until::EachOnce)
                .await
                .unwrap();
            assert_eq!((run.latencies_ms.len(), run.failed), (50, 0));
            let mut connection = crate::http::Connection::open(addr).await.unwrap();
            assert_eq!(
                connection.send("PUT", "/k/a", b"abc").await.unwrap(),
                (200, 3)
            );
            assert_eq!(
                connection.send("GET", "/nothing", b"").await.unwrap(),
                (404, 0)
            );
        });
    }

    #[test]
    fn write_json_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench/x.json");
        write_json(&path, &serde_json::json!({"a": 1})).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, serde_json::json!({"a": 1}));
    }
}

/// What [`run_measured`] saw of one run of a command.
#[derive(Debug)]
pub struct Measured {
    /// How it ended.
    pub status: std::process::ExitStatus,
    /// Wall time from spawn to exit.
    pub took: Duration,
    /// Its peak resident memory (`VmHWM`), in bytes, as last read before it exited.
    pub peak_rss: u64,
    /// Bytes it wrote to stdout.
    pub stdout_bytes: u64,
    /// The first bytes of its stdout (at most the `keep` asked for).
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: String,
}

/// Runs `command` to its end, reading its stdout as it comes (counted, the first
/// `keep` bytes kept: a long output never piles up here) and its `VmHWM` every 5 ms
/// (peak resident memory only grows, so the last reading is the peak but for what the
/// last 5 ms added).
pub fn run_measured(command: &mut std::process::Command, keep: usize) -> std::io::Result<Measured> {
    use std::io::Read as _;
    use std::process::Stdio;
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("the child's pipes are missing"));
    };
    let stdout = std::thread::spawn(move || -> std::io::Result<(u64, Vec<u8>)> {
        let (mut total, mut kept) = (0u64, Vec::new());
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = out.read(&mut buf)?;
            if n == 0 {
                return Ok((total, kept));
            }
            total += n as u64;
            let room = keep.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&buf[..room]);
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).map(|_| s)
    });
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_rss = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(hwm) = std::fs::read_to_string(&status_path)
            .ok()
            .as_deref()
            .and_then(vm_hwm)
        {
            peak_rss = peak_rss.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    let joined = |e| std::io::Error::other(format!("a pipe reader panicked: {e:?}"));
    let (stdout_bytes, stdout) = stdout.join().map_err(joined)??;
    let stderr = stderr.join().map_err(joined)??;
    Ok(Measured {
        status,
        took,
        peak_rss,
        stdout_bytes,
        stdout,
        stderr,
    })
}

/// `VmHWM` of a `/proc/PID/status` page, in bytes.
fn vm_hwm(status: &str) -> Option<u64> {
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    kb.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}
