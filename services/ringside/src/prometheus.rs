//! The Prometheus of `ringside up`: Debian's `prometheus` as a child process on
//! loopback, its configuration generated under `<state>/prometheus/`, scraping every
//! service `up` runs and evaluating the rules of `deploy/prometheus/rules.yaml` (built
//! into the binary, as the NATS configuration is).
//!
//! ```text
//! <state>/prometheus/
//!   prometheus.yml   scrape and rule configuration
//!   rules.yaml       deploy/prometheus/rules.yaml
//!   targets.json     the services' /metrics addresses (file_sd), rewritten as they change
//!   data/            the TSDB (kept across runs; `up --fresh` removes it)
//!   prometheus.log   its log
//! ```
//!
//! Targets come from the same endpoint map as `up.json`: each `<service>.metrics`
//! listener (and `up.status`) is a target with `job` the service's kind (`reducer`,
//! `watcher`, `collector`, `node`, `up`) and `service` its name (`node-2`).
//! Prometheus watches the file, so a node started or stopped is scraped or dropped
//! within a scrape interval.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::json;
use tokio::process::Child;
use tokio::time::Instant;

/// `deploy/prometheus/rules.yaml`.
const RULES: &str = include_str!("../../../deploy/prometheus/rules.yaml");
/// The binary's name on `PATH` (Debian's package).
const BINARY: &str = "prometheus";
/// The environment variable naming another binary.
pub(crate) const BINARY_ENV: &str = "RINGSIDE_PROMETHEUS";
/// The file_sd file, in its directory.
const TARGETS_FILE: &str = "targets.json";
/// How long it gets to answer `/-/ready`.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long it gets to stop after SIGTERM before SIGKILL.
const STOP_WITHIN: Duration = Duration::from_secs(5);
/// Its Go runtime's soft memory limit, and the TSDB's size bound.
const MEMORY_LIMIT: &str = "512MiB";
const RETENTION_SIZE: &str = "1GB";

/// How `up` runs Prometheus.
#[derive(Clone, Debug)]
pub(crate) struct PrometheusConfig {
    /// The binary.
    pub(crate) binary: PathBuf,
    /// Where its configuration, data and log go.
    pub(crate) dir: PathBuf,
    /// Its web address (port 0: a free port is picked).
    pub(crate) listen: SocketAddr,
    /// Scrape and rule evaluation interval.
    pub(crate) interval: Duration,
}

impl PrometheusConfig {
    /// The binary to run: `$RINGSIDE_PROMETHEUS`, else `prometheus` on `PATH`; `None`
    /// when there is none.
    pub(crate) fn find_binary() -> Option<PathBuf> {
        match std::env::var_os(BINARY_ENV).filter(|v| !v.is_empty()) {
            Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
            None => ringside_natsd::child::find_in_path(BINARY),
        }
    }

    fn config_file(&self) -> PathBuf {
        self.dir.join("prometheus.yml")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("prometheus.log")
    }

    /// `prometheus.yml`: one job reading the targets file; the rules.
    fn config_text(&self) -> String {
        let interval = format!("{}ms", self.interval.as_millis());
        // JSON is YAML; serde writes it correctly quoted.
        json!({
            "global": {
                "scrape_interval": interval,
                "evaluation_interval": interval,
                "scrape_timeout": interval,
            },
            "rule_files": ["rules.yaml"],
            "scrape_configs": [{
                "job_name": "ringside",
                "file_sd_configs": [{"files": [TARGETS_FILE], "refresh_interval": "30s"}],
            }],
        })
        .to_string()
    }
}

/// The scrape targets of an endpoint map (`up.json`'s): file_sd groups.
pub(crate) fn targets(endpoints: &BTreeMap<String, SocketAddr>) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = endpoints
        .iter()
        .filter_map(|(key, addr)| {
            let (service, listener) = key.rsplit_once('.')?;
            if !matches!(listener, "metrics" | "status") {
                return None;
            }
            // `node-2` is a node; every other service is its own kind.
            let kind = match service.split_once('-') {
                Some(("node", n)) if n.parse::<u32>().is_ok() => "node",
                _ => service,
            };
            Some(json!({
                "targets": [addr.to_string()],
                "labels": {"job": kind, "service": service},
            }))
        })
        .collect();
    serde_json::Value::Array(groups)
}

/// Rewrites the targets file of the Prometheus configured in `dir` (atomically:
/// Prometheus reads the file when it changes).
pub(crate) fn write_targets(
    dir: &Path,
    endpoints: &BTreeMap<String, SocketAddr>,
) -> anyhow::Result<()> {
    let path = dir.join(TARGETS_FILE);
    let temporary = path.with_extension("json.new");
    std::fs::write(&temporary, targets(endpoints).to_string())
        .and_then(|()| std::fs::rename(&temporary, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A running Prometheus.
pub(crate) struct LocalPrometheus {
    config: PrometheusConfig,
    child: Child,
    addr: SocketAddr,
}

impl LocalPrometheus {
    /// Writes the configuration and `targets`, starts Prometheus and waits until it is
    /// ready.
    pub(crate) async fn start(
        mut config: PrometheusConfig,
        targets: &BTreeMap<String, SocketAddr>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(config.dir.join("data"))
            .with_context(|| format!("cannot create {}", config.dir.display()))?;
        // Prometheus runs in its directory: every path it is given must not be relative
        // to ours.
        config.dir = std::path::absolute(&config.dir)
            .with_context(|| format!("cannot resolve {}", config.dir.display()))?;
        if config.listen.port() == 0 {
            config.listen = free_port(config.listen)?;
        }
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write(config.config_file(), &config.config_text())?;
        write(config.dir.join("rules.yaml"), RULES)?;
        let child = spawn(&config)?;
        let mut prometheus = Self {
            addr: config.listen,
            config,
            child,
        };
        prometheus.write_targets(targets)?;
        prometheus.wait_ready().await?;
        Ok(prometheus)
    }

    /// Its web address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Its log.
    pub(crate) fn log_file(&self) -> PathBuf {
        self.config.log_file()
    }

    /// Rewrites the targets.
    pub(crate) fn write_targets(
        &self,
        endpoints: &BTreeMap<String, SocketAddr>,
    ) -> anyhow::Result<()> {
        write_targets(&self.config.dir, endpoints)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if crate::local::http_status(self.addr, "/-/ready").await == Some(200) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    ringside_natsd::log::tail(
                        &ringside_natsd::log::read_from(&self.log_file(), 0),
                        10
                    )
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus was not ready within {} s (log: {})",
                    READY_WITHIN.as_secs(),
                    self.log_file().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Completes when the process exits.
    pub(crate) async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Starts it again (same address, data and targets) after it exited.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        self.child = spawn(&self.config)?;
        self.wait_ready().await
    }

    /// Stops it: SIGTERM (it flushes its head block), SIGKILL after a grace period.
    pub(crate) async fn stop(mut self) {
        if let Err(e) = ringside_natsd::child::terminate(&mut self.child, STOP_WITHIN).await {
            tracing::warn!(error = %e, "Could not stop prometheus.");
        }
    }
}

fn spawn(config: &PrometheusConfig) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.log_file())
        .with_context(|| format!("cannot open {}", config.log_file().display()))?;
    let data = config.dir.join("data");
    let mut command = ringside_natsd::child::tied_to_parent(&config.binary, "TERM");
    command
        .arg(format!("--config.file={}", config.config_file().display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--storage.tsdb.retention.size={RETENTION_SIZE}"))
        .arg("--storage.tsdb.retention.time=7d")
        .arg(format!("--web.listen-address={}", config.listen))
        .current_dir(&config.dir)
        .env_clear()
        .env("GOMEMLIMIT", MEMORY_LIMIT)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot duplicate the log handle")?)
        .stderr(log);
    command
        .spawn()
        .with_context(|| format!("cannot start {}", config.binary.display()))
}

/// A free port on `addr`'s address (Prometheus cannot be told to pick one and say
/// which).
fn free_port(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot find a free port on {}", addr.ip()))?;
    Ok(listener.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metrics_listener_is_a_target_with_its_kind() {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let endpoints = BTreeMap::from([
            ("collector.metrics".to_owned(), addr(1)),
            ("node-12.api".to_owned(), addr(2)),
            ("node-12.metrics".to_owned(), addr(2)),
            ("reducer.grpc".to_owned(), addr(3)),
            ("up.status".to_owned(), addr(4)),
        ]);
        assert_eq!(
            targets(&endpoints),
            json!([
                {"targets": ["127.0.0.1:1"], "labels": {"job": "collector", "service": "collector"}},
                {"targets": ["127.0.0.1:2"], "labels": {"job": "node", "service": "node-12"}},
                {"targets": ["127.0.0.1:4"], "labels": {"job": "up", "service": "up"}},
            ])
        );
    }

    #[test]
    fn the_rules_are_built_in_and_the_config_names_them() {
        let config = PrometheusConfig {
            binary: PathBuf::from(BINARY),
            dir: PathBuf::from("/nonexistent"),
            listen: "127.0.0.1:9090".parse().unwrap(),
            interval: Duration::from_secs(5),
        };
        let text: serde_json::Value = serde_json::from_str(&config.config_text()).unwrap();
        assert_eq!(text["rule_files"], json!(["rules.yaml"]));
        assert_eq!(text["global"]["scrape_interval"], "5000ms");
        assert!(RULES.contains("RingsideRingImbalanceHigh"));
    }
}
