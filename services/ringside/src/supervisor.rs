//! The supervisor of `ringside up`: each service of [`Target`] runs as its own child
//! process (`ringside <service>`, its settings in the environment, only its own NATS
//! password), started in dependency order, each waited for until its `/readyz`
//! answers 200 before the next starts, and stopped in reverse.
//!
//! A child that exits on its own is started again on the same addresses; one that
//! keeps exiting ([`MAX_QUICK_EXITS`] times, each within [`QUICK_EXIT_WINDOW`] of the
//! previous) stops the system with a message naming it, its exit status and its last
//! log lines. Children run under `setpriv --pdeathsig TERM` where `setpriv` exists, so
//! a SIGKILLed `up` still stops them (gracefully: the reducer writes its snapshot).
//! Their stderr is copied to ours, line by line, and the last lines are kept for that
//! message. A setting of a service in `up`'s own environment (`RINGSIDE_NODE_REPLICAS`
//! for the nodes, say) reaches that service, unless `up` sets it itself.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use ringside_kit::{Condition, Metric, Readiness, Setting, Telemetry};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout};
use tokio::time::Instant;

use ringside_natsd::child::Stopped;

use crate::services::Target;

/// Exits in a row, each within [`QUICK_EXIT_WINDOW`] of the previous, after which a
/// service is given up (and the system stopped).
pub(crate) const MAX_QUICK_EXITS: u32 = 5;
/// An exit this long after the previous one starts the count again.
pub(crate) const QUICK_EXIT_WINDOW: Duration = Duration::from_secs(60);
/// How long a child gets to announce its listeners and then to become ready.
const START_WITHIN: Duration = Duration::from_secs(60);
/// Log lines of a child kept for the message when it keeps failing.
const KEPT_LINES: usize = 20;
/// Variables of our environment the children inherit (besides their settings).
const INHERITED: [&str; 3] = ["PATH", "RUST_LOG", "RUST_BACKTRACE"];

/// How to run one service.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Which.
    pub(crate) target: Target,
    /// Its settings (keys of its schema), its password among them.
    pub(crate) settings: BTreeMap<String, String>,
    /// The setting of each listener it announces, by listener name, so a restart
    /// binds the same addresses (a port 0 becomes the port it got).
    pub(crate) listeners: Vec<(&'static str, &'static Setting)>,
}

/// Exits of supervised services, by service.
pub(crate) const RESTARTS: Metric = Metric::counter(
    "ringside_up_service_exits_total",
    "Supervised services that exited on their own (and were started again), by service.",
);

/// One running child.
struct Running {
    spec: Spec,
    /// Holds while it runs (a readiness condition of `up`, named after the service).
    up: Condition,
    child: Child,
    listeners: Vec<(String, SocketAddr)>,
    recent: Arc<Mutex<VecDeque<String>>>,
    exits: u32,
    last_exit: Option<Instant>,
}

/// The supervised services, in start order.
pub(crate) struct Supervisor {
    exe: PathBuf,
    running: Vec<Running>,
    readiness: Readiness,
    exits: Counter<u64>,
}

/// A child that exited on its own.
pub(crate) struct Exit {
    index: usize,
    status: String,
}

impl Supervisor {
    /// Starts `specs` in order, each ready before the next; on a failure, stops the
    /// ones started and says which failed and why. Each service is a condition of
    /// `readiness` (held while it runs); exits are counted on `telemetry`.
    pub(crate) async fn start(
        exe: &Path,
        specs: Vec<Spec>,
        readiness: &Readiness,
        telemetry: &Telemetry,
    ) -> anyhow::Result<Self> {
        let mut supervisor = Self {
            exe: exe.to_path_buf(),
            running: Vec::new(),
            readiness: readiness.clone(),
            exits: telemetry.counter(&RESTARTS),
        };
        for spec in specs {
            if let Err(e) = supervisor.add(spec).await {
                supervisor
                    .stop(Instant::now() + Duration::from_secs(8))
                    .await;
                return Err(e);
            }
        }
        Ok(supervisor)
    }

    /// Starts one more service (waits until it is ready).
    pub(crate) async fn add(&mut self, spec: Spec) -> anyhow::Result<()> {
        let up = self.readiness.condition(spec.target.name());
        let running = self.launch(spec, up).await?;
        self.running.push(running);
        Ok(())
    }

    /// Starts services at once (waits until all are ready; on a failure, the others
    /// that started keep running).
    pub(crate) async fn add_all(&mut self, specs: Vec<Spec>) -> anyhow::Result<()> {
        let launches = specs.into_iter().map(|spec| {
            let up = self.readiness.condition(spec.target.name());
            self.launch(spec, up)
        });
        let mut failed = None;
        for launched in futures::future::join_all(launches).await {
            match launched {
                Ok(running) => self.running.push(running),
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// How many of the running services `matches` picks.
    pub(crate) fn count(&self, matches: impl Fn(Target) -> bool) -> usize {
        self.running
            .iter()
            .filter(|r| matches(r.spec.target))
            .count()
    }

    /// Stops one service (SIGTERM; SIGKILL at `deadline`) and forgets it.
    pub(crate) async fn remove(&mut self, target: Target, deadline: Instant) {
        if let Some(i) = self.running.iter().position(|r| r.spec.target == target) {
            let running = self.running.remove(i);
            stop_one(running, deadline).await;
        }
    }

    /// Every announced listener, as `<service>.<listener>`.
    pub(crate) fn endpoints(&self) -> BTreeMap<String, SocketAddr> {
        self.running
            .iter()
            .flat_map(|r| {
                r.listeners.iter().map(|(name, addr)| {
                    (format!("{}.{name}", endpoint_prefix(r.spec.target)), *addr)
                })
            })
            .collect()
    }

    /// The address a running service announced under `name` (`grpc`, `metrics`).
    pub(crate) fn listener(&self, target: Target, name: &str) -> Option<SocketAddr> {
        let running = self.running.iter().find(|r| r.spec.target == target)?;
        running
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
    }

    /// Completes when a child exits on its own (cancel-safe: `up` selects on it).
    pub(crate) async fn exited(&mut self) -> Exit {
        if self.running.is_empty() {
            return std::future::pending().await;
        }
        let waits = self
            .running
            .iter_mut()
            .map(|r| Box::pin(r.child.wait()))
            .collect::<Vec<_>>();
        let (status, index, _) = futures::future::select_all(waits).await;
        Exit {
            index,
            status: status.map_or_else(|e| format!("unknown ({e})"), describe),
        }
    }

    /// Starts an exited child again on its addresses, or gives up on it (an error
    /// naming it, its status and its last log lines) when it keeps exiting.
    pub(crate) async fn restart(&mut self, exit: Exit) -> anyhow::Result<()> {
        let running = &mut self.running[exit.index];
        running.up.set(false);
        self.exits.add(
            1,
            &[KeyValue::new("service", running.spec.target.service())],
        );
        let now = Instant::now();
        running.exits = match running.last_exit {
            Some(at) if now.duration_since(at) < QUICK_EXIT_WINDOW => running.exits + 1,
            _ => 1,
        };
        running.last_exit = Some(now);
        let name = running.spec.target.name();
        if running.exits > MAX_QUICK_EXITS {
            bail!(
                "the {name} exited ({}) {} times within {} s of each other; giving up. Its last log lines:\n{}",
                exit.status,
                running.exits,
                QUICK_EXIT_WINDOW.as_secs(),
                last_lines(&running.recent)
            );
        }
        println!("The {name} exited ({}); starting it again.", exit.status);
        let mut spec = running.spec.clone();
        for (listener, setting) in &spec.listeners {
            if let Some((_, addr)) = running.listeners.iter().find(|(n, _)| n == listener) {
                spec.settings
                    .insert(setting.key.to_owned(), addr.to_string());
            }
        }
        let (exits, last_exit, up) = (running.exits, running.last_exit, running.up.clone());
        let mut restarted = self
            .launch(spec, up)
            .await
            .with_context(|| format!("the {name} could not be started again"))?;
        restarted.exits = exits;
        restarted.last_exit = last_exit;
        self.running[exit.index] = restarted;
        println!("The {name} is back.");
        Ok(())
    }

    /// Stops every child: the nodes together first (each leaves the ring and hands
    /// its keys over), then the others, the last started first. SIGTERM, then SIGKILL
    /// for those still running at `deadline`.
    pub(crate) async fn stop(&mut self, deadline: Instant) {
        let (nodes, others): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| matches!(r.spec.target, Target::Node(_)));
        futures::future::join_all(nodes.into_iter().map(|r| stop_one(r, deadline))).await;
        for running in others.into_iter().rev() {
            stop_one(running, deadline).await;
        }
    }

    /// Spawns a child, reads its announcement and waits until it is ready.
    async fn launch(&self, spec: Spec, up: Condition) -> anyhow::Result<Running> {
        let name = spec.target.name();
        let mut command = ringside_natsd::child::tied_to_parent(&self.exe, "TERM");
        command
            .args(spec.target.argv())
            .env_clear()
            .envs(
                INHERITED
                    .iter()
                    .filter_map(|k| Some((*k, std::env::var_os(k)?))),
            )
            .envs(
                ringside_kit::settings::environment()
                    .into_iter()
                    .filter(|(key, _)| {
                        spec.target.schema().knows(key) && !spec.settings.contains_key(key)
                    }),
            )
            .envs(&spec.settings)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start the {name} ({})", self.exe.display()))?;
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(copy_log(stderr, Arc::clone(&recent)));
        }
        let stdout = child
            .stdout
            .take()
            .with_context(|| format!("no stdout of the {name}"))?;
        let deadline = Instant::now() + START_WITHIN;
        let listeners = tokio::select! {
            announced = tokio::time::timeout_at(deadline, announcement(spec.target, stdout)) => match announced {
                Ok(Ok(listeners)) => listeners,
                Ok(Err(e)) => return Err(failed_start(&name, &e.to_string(), &recent)),
                Err(_) => return Err(failed_start(&name, "did not announce its listeners in time", &recent)),
            },
            status = child.wait() => {
                let status = status.map_or_else(|e| e.to_string(), describe);
                return Err(failed_start(&name, &format!("exited ({status})"), &recent));
            }
        };
        let metrics = listeners
            .iter()
            .find(|(n, _)| n == "metrics")
            .map(|(_, addr)| *addr)
            .with_context(|| format!("the {name} announced no metrics listener"))?;
        tokio::select! {
            ready = wait_ready(metrics, deadline) => {
                if !ready {
                    let _ = child.kill().await;
                    return Err(failed_start(&name, "was not ready in time (its /readyz)", &recent));
                }
            }
            status = child.wait() => {
                let status = status.map_or_else(|e| e.to_string(), describe);
                return Err(failed_start(&name, &format!("exited ({status})"), &recent));
            }
        }
        tracing::info!(service = %name, pid = child.id(), ?listeners, "Started.");
        up.set(true);
        Ok(Running {
            spec,
            up,
            child,
            listeners,
            recent,
            exits: 0,
            last_exit: None,
        })
    }
}

/// How a target's listeners are named in `up.json` (`reducer.grpc`, `node-2.api`).
fn endpoint_prefix(target: Target) -> String {
    match target {
        Target::Node(_) => target.name(),
        other => other.service().to_owned(),
    }
}

/// SIGTERM, then SIGKILL if it still runs at `deadline`.
async fn stop_one(mut running: Running, deadline: Instant) {
    let name = running.spec.target.name();
    running.up.set(false);
    let grace = deadline.saturating_duration_since(Instant::now());
    match ringside_natsd::child::terminate(&mut running.child, grace).await {
        Ok(Stopped::Exited(status)) if !status.success() => {
            tracing::warn!(service = %name, status = %describe(status), "Stopped with an error.");
        }
        Ok(Stopped::Exited(_)) => {}
        Ok(Stopped::Killed) => tracing::warn!(
            service = %name,
            "Did not stop in time; killed (it resumes from the stream at the next start)."
        ),
        Err(e) => tracing::warn!(service = %name, error = %e, "Could not stop it."),
    }
}

/// Reads the child's stdout until its `<service> listening ...` line, then keeps
/// draining it in a task (a child must never block on a full pipe).
async fn announcement(
    target: Target,
    stdout: ChildStdout,
) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(listeners) = ringside_kit::run::parse_announcement(target.service(), &line) {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(listeners);
        }
    }
    bail!("closed its stdout without announcing its listeners")
}

/// Copies a child's log lines to our stderr, keeping the last [`KEPT_LINES`].
async fn copy_log(stderr: tokio::process::ChildStderr, recent: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{line}");
        let mut kept = recent.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        kept.push_back(line);
    }
}

fn last_lines(recent: &Mutex<VecDeque<String>>) -> String {
    let kept = recent.lock().unwrap_or_else(PoisonError::into_inner);
    if kept.is_empty() {
        return "  (none)".to_string();
    }
    kept.iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn failed_start(name: &str, what: &str, recent: &Mutex<VecDeque<String>>) -> anyhow::Error {
    anyhow::anyhow!(
        "the {name} {what}. Its last log lines:\n{}",
        last_lines(recent)
    )
}

/// Polls `GET /readyz` on `addr` until 200 or `deadline`.
async fn wait_ready(addr: SocketAddr, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if crate::local::http_status(addr, "/readyz").await == Some(200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// An exit status in words (`exit status: 1`, `signal: 9 (SIGKILL)`).
fn describe(status: ExitStatus) -> String {
    status.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runbook_lists_ups_metrics() {
        let docs = include_str!("../../../docs/runbook.md");
        let mut listed = ringside_kit::telemetry::names_in_docs(docs, "ringside_up_");
        listed.sort();
        assert_eq!(listed, ["ringside_up_ready", RESTARTS.name]);
    }
}
