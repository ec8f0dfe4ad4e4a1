//! `ringside watcher kubernetes|heartbeat`: a membership source, as it runs in a pod
//! (Kubernetes) or next to VMs and local nodes (heartbeat).
//!
//! The configuration is one map of strings (CONVENTIONS.md #8): the process
//! environment (`RINGSIDE_*`, `HOSTNAME`) with the flags given on the command line laid
//! over it; `WatcherConfig::from_map` or `HeartbeatConfig::from_map` parses and checks
//! it (docs/watcher.md lists every key). The NATS user is `watcher`, with the password
//! from `RINGSIDE_NATS_PASSWORD_WATCHER`.
//!
//! With a health address (`--health-addr`, `RINGSIDE_WATCHER_HEALTH_ADDR`) the command
//! serves `/livez` (200 while it runs) and `/readyz` (200 once ready: the Kubernetes
//! watcher has stored its first sync; the heartbeat watcher is listening, as the lease
//! holder or a standby) and prints one line on stdout once bound,
//!
//! ```text
//! watcher listening health=127.0.0.1:9430
//! ```
//!
//! which scripts and tests read to find the port it picked (`127.0.0.1:0`). Readiness
//! is also logged. SIGTERM or SIGINT stops it (the heartbeat watcher releases its
//! lease); the exit code is then 0.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Args;
use ringside_watcher::WatcherConfig;
use ringside_watcher::config::{self as keys, KEY_HEALTH_ADDR};
use ringside_watcher::heartbeat::config as hb_keys;
use ringside_watcher::heartbeat::{self, HeartbeatConfig, Status};
use tokio::sync::watch;

use crate::service::{block_on, init_logs, signalled};

/// Flags of `ringside watcher`; each overrides its environment variable.
#[derive(Debug, Clone, Args)]
pub(crate) struct WatcherArgs {
    /// The membership source.
    #[arg(value_enum)]
    source: Source,
    /// NATS server URL [env: RINGSIDE_NATS_URL; default nats://127.0.0.1:4222].
    #[arg(long)]
    nats_url: Option<String>,
    /// Ring whose membership to publish [env: RINGSIDE_RING; default `default`].
    #[arg(long)]
    ring: Option<String>,
    /// Address of /readyz and /livez [env: RINGSIDE_WATCHER_HEALTH_ADDR; default:
    /// none].
    #[arg(long)]
    health_addr: Option<String>,
    /// kubernetes: namespace to watch [env: RINGSIDE_WATCHER_NAMESPACE; default: the
    /// service account's].
    #[arg(long)]
    namespace: Option<String>,
    /// kubernetes: label selector of the node pods [env: RINGSIDE_WATCHER_SELECTOR;
    /// default app.kubernetes.io/name=ringside-node].
    #[arg(long)]
    selector: Option<String>,
    /// heartbeat: expected beat interval [env: RINGSIDE_HEARTBEAT_INTERVAL; default 1s].
    #[arg(long)]
    interval: Option<String>,
    /// heartbeat: intervals without a beat that make a leave [env:
    /// RINGSIDE_HEARTBEAT_MISSED_BEATS; default 3].
    #[arg(long)]
    missed_beats: Option<String>,
    /// heartbeat: how often the lease holder restates the member set [env:
    /// RINGSIDE_HEARTBEAT_SYNC_INTERVAL; default 30s].
    #[arg(long)]
    sync_interval: Option<String>,
    /// heartbeat: lease time-to-live, at most 10s [env: RINGSIDE_HEARTBEAT_LEASE_TTL;
    /// default 6s].
    #[arg(long)]
    lease_ttl: Option<String>,
}

/// The membership sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    /// Kubernetes pods: members are the Ready node pods of one namespace.
    Kubernetes,
    /// Node heartbeats on NATS: members are the nodes that beat (local mode, VMs).
    Heartbeat,
}

impl WatcherArgs {
    /// The flags given, as configuration keys; a flag of the other source is an error
    /// (its key would be silently ignored).
    fn overrides(&self) -> anyhow::Result<Vec<(&'static str, &String)>> {
        let common = [
            (keys::KEY_NATS_URL, &self.nats_url),
            (keys::KEY_RING, &self.ring),
            (KEY_HEALTH_ADDR, &self.health_addr),
        ];
        let kubernetes = [
            (keys::KEY_NAMESPACE, &self.namespace),
            (keys::KEY_SELECTOR, &self.selector),
        ];
        let heartbeat = [
            (hb_keys::KEY_INTERVAL, &self.interval),
            (hb_keys::KEY_MISSED_BEATS, &self.missed_beats),
            (hb_keys::KEY_SYNC_INTERVAL, &self.sync_interval),
            (hb_keys::KEY_LEASE_TTL, &self.lease_ttl),
        ];
        let (ours, theirs): (&[_], &[_]) = match self.source {
            Source::Kubernetes => (&kubernetes, &heartbeat),
            Source::Heartbeat => (&heartbeat, &kubernetes),
        };
        if let Some((key, _)) = theirs.iter().find(|(_, v)| v.is_some()) {
            anyhow::bail!(
                "the flag for {key} does not apply to the {:?} source",
                self.source
            );
        }
        Ok(common
            .iter()
            .chain(ours)
            .filter_map(|(key, value)| Some((*key, value.as_ref()?)))
            .collect())
    }
}

/// The environment's `RINGSIDE_*` and `HOSTNAME` variables with the flags over them.
fn config_map(
    env: impl Iterator<Item = (String, String)>,
    args: &WatcherArgs,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map: BTreeMap<String, String> = env
        .filter(|(k, _)| k.starts_with("RINGSIDE_") || k == keys::KEY_HOSTNAME)
        .collect();
    for (key, value) in args.overrides()? {
        map.insert(key.to_owned(), value.clone());
    }
    Ok(map)
}

/// Whether the running watcher is ready, whichever source it is.
#[derive(Clone, Debug)]
enum Readiness {
    Kubernetes(watch::Receiver<bool>),
    Heartbeat(watch::Receiver<Status>),
}

impl Readiness {
    fn is_ready(&self) -> bool {
        match self {
            Readiness::Kubernetes(ready) => *ready.borrow(),
            Readiness::Heartbeat(status) => status.borrow().is_ready(),
        }
    }

    /// Completes once ready (or never, if the watcher is gone before).
    async fn ready(mut self) {
        let reached = match &mut self {
            Readiness::Kubernetes(ready) => ready.wait_for(|r| *r).await.is_ok(),
            Readiness::Heartbeat(status) => status.wait_for(|s| s.is_ready()).await.is_ok(),
        };
        if !reached {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs the chosen watcher until SIGTERM or SIGINT.
pub(crate) fn run(args: WatcherArgs) -> anyhow::Result<()> {
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let map = config_map(env, &args)?;
    let health = keys::health_addr(&map)?;
    match args.source {
        Source::Kubernetes => {
            let config = WatcherConfig::from_map(&map)?;
            init_logs();
            block_on(async move {
                let (ready, readiness) = watch::channel(false);
                let work =
                    ringside_watcher::kubernetes::run_with_readiness(config, ready, signalled());
                supervise(work, Readiness::Kubernetes(readiness), health).await
            })
        }
        Source::Heartbeat => {
            let config = HeartbeatConfig::from_map(&map)?;
            init_logs();
            block_on(async move {
                let (status, readiness) = watch::channel(Status::Starting);
                let work = heartbeat::run_with_status(config, status, signalled());
                supervise(work, Readiness::Heartbeat(readiness), health).await
            })
        }
    }
}

/// Runs `work`, with the health endpoint if asked for and a log line once ready.
async fn supervise(
    work: impl Future<Output = Result<(), ringside_watcher::WatcherError>>,
    readiness: Readiness,
    health: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let server = match health {
        Some(addr) => Some(serve_health(addr, readiness.clone()).await?),
        None => None,
    };
    let logger = tokio::spawn(async move {
        readiness.ready().await;
        tracing::info!("Watcher ready.");
    });
    let result = work.await;
    logger.abort();
    if let Some(server) = server {
        server.abort();
    }
    result.context("the watcher stopped")
}

/// Binds the health endpoint, prints where, and serves it in a task.
async fn serve_health(
    addr: SocketAddr,
    readiness: Readiness,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({KEY_HEALTH_ADDR})"))?;
    let bound = listener.local_addr()?;
    let router = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(readiness);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "watcher listening health={bound}")?;
    stdout.flush()?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "The health endpoint failed.");
        }
    }))
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: WatcherArgs,
    }

    fn map(env: &[(&str, &str)], argv: &[&str]) -> anyhow::Result<BTreeMap<String, String>> {
        let cli =
            Cli::try_parse_from(std::iter::once("watcher").chain(argv.iter().copied())).unwrap();
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        config_map(env, &cli.args)
    }

    #[test]
    fn flags_override_the_environment_and_other_variables_are_left_out() {
        let m = map(
            &[
                ("RINGSIDE_RING", "from-env"),
                ("RINGSIDE_HEARTBEAT_MISSED_BEATS", "4"),
                ("HOSTNAME", "vm-1"),
                ("PATH", "/usr/bin"),
            ],
            &["heartbeat", "--ring", "blue", "--lease-ttl", "2s"],
        )
        .unwrap();
        let config = HeartbeatConfig::from_map(&m).unwrap();
        assert_eq!(config.nats.ring.as_str(), "blue");
        assert_eq!(config.missed_beats, 4);
        assert_eq!(config.lease_ttl, std::time::Duration::from_secs(2));
        assert_eq!(config.nats.producer, "watcher/vm-1");
        assert!(!m.contains_key("PATH"));
    }

    #[test]
    fn the_kubernetes_flags_reach_its_config() {
        let m = map(
            &[],
            &[
                "kubernetes",
                "--namespace",
                "ring",
                "--selector",
                "app=n",
                "--health-addr",
                "127.0.0.1:0",
            ],
        )
        .unwrap();
        let config = WatcherConfig::from_map(&m).unwrap();
        assert_eq!(config.namespace.as_deref(), Some("ring"));
        assert_eq!(config.label_selector, "app=n");
        assert_eq!(
            keys::health_addr(&m).unwrap(),
            Some("127.0.0.1:0".parse().unwrap())
        );
    }

    #[test]
    fn an_unknown_source_names_the_valid_ones() {
        let err = Cli::try_parse_from(["watcher", "consul"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kubernetes") && err.contains("heartbeat"),
            "{err}"
        );
    }

    #[test]
    fn a_flag_of_the_other_source_is_an_error() {
        let err = map(&[], &["kubernetes", "--lease-ttl", "2s"]).unwrap_err();
        assert!(
            err.to_string().contains("RINGSIDE_HEARTBEAT_LEASE_TTL"),
            "{err}"
        );
        assert!(map(&[], &["heartbeat", "--namespace", "x"]).is_err());
    }
}
