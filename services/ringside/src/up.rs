//! `ringside up`: the whole system running locally in one command, and `ringside
//! scale`, which changes the number of nodes it runs.
//!
//! `up` starts `nats-server` as a child process (store under the state directory,
//! loopback only, per-service passwords generated on first run), provisions the
//! streams and buckets, then runs each service of [`Target`] as its own child process
//! under the [`Supervisor`] (`ringside reducer`, `ringside watcher heartbeat`, the
//! nodes: the same commands pods run, each as its own NATS user with only its own
//! password), among them the
//! nodes (`ringside node`). Everything talks only through NATS (and the nodes to each
//! other, by address). nats-server and the services are started again when they die.
//!
//! `ringside scale N` publishes a `ScaleDecided` event on the ring's scale subject;
//! `up` follows those events and starts nodes (they join through their heartbeats) or
//! stops the newest (each says goodbye, hands its keys over and exits).
//!
//! Stopping (Ctrl-C or SIGTERM) runs the start in reverse: the nodes leave, then the
//! watcher, the reducer (which writes a snapshot) and the server stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer};
use clap::Args;
use futures::StreamExt as _;
use ringside_events::{
    Body, Definitions, Event, Publisher, RingName, ServiceUser, codec, pb, provision, subject,
};
use ringside_kit::{Condition, Readiness, Telemetry, settings};
use ringside_natsd::{LocalServer, NatsdError, Passwords, ServerConfig};
use ringside_ring::{RingConfig, Strategy};
use tokio::sync::watch;

use crate::autoscale::{AutoscaleArgs, LocalAutoscaler};
use crate::local::{Running, StateDir};
use crate::prometheus::{LocalPrometheus, PrometheusConfig};
use crate::services::Target;
use crate::supervisor::{Spec, Supervisor};

/// `ringside up`
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Nodes to start with (`ringside scale` changes how many run).
    #[arg(long, visible_alias = "members", default_value_t = 3)]
    nodes: u32,
    /// Copies of each key (the owner and R-1 successors).
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// Ring name.
    #[arg(long, default_value = settings::RING.default_value())]
    ring: String,
    /// State directory: NATS store, passwords, logs.
    #[arg(long, default_value = ".ringside", env = "RINGSIDE_STATE_DIR")]
    state_dir: PathBuf,
    /// NATS client port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 4222)]
    nats_port: u16,
    /// Reducer gRPC address (RingService); port 0 picks a free port.
    #[arg(long, default_value = ringside_reducer::config::GRPC_ADDR.default_value())]
    grpc: SocketAddr,
    /// Reducer metrics address (/metrics, /livez, /readyz); port 0 picks a free port.
    #[arg(long, default_value = ringside_reducer::config::METRICS_ADDR.default_value())]
    metrics: SocketAddr,
    /// `up`'s own /livez, /readyz (200 while nats-server and every service run) and
    /// /metrics (services that exited); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9400")]
    status: SocketAddr,
    /// Token strategy of a new ring.
    #[arg(long, default_value_t = RingConfig::default().strategy)]
    strategy: Strategy,
    /// Virtual nodes per member of a new ring.
    #[arg(long, default_value_t = RingConfig::default().vnodes)]
    vnodes: u32,
    /// Heartbeat interval of the nodes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Start over: delete the stored history (stream, snapshots, stored metrics) first.
    #[arg(long)]
    fresh: bool,
    /// The dashboard's address (the bridge: dashboard, WebSocket, JSON API); port 0
    /// picks a free port.
    #[arg(long, default_value = ringside_bridge::config::ADDR.default_value())]
    dashboard: SocketAddr,
    /// Prometheus's web address (port 0 picks a free port); not 9090, which a
    /// Prometheus installed as a system service takes.
    #[arg(long, default_value = "127.0.0.1:9490")]
    prometheus: SocketAddr,
    /// Run no Prometheus.
    #[arg(long)]
    no_prometheus: bool,
    /// How often Prometheus scrapes the services and evaluates the rules (`5s`).
    #[arg(long, default_value = "5s", value_parser = interval)]
    scrape_interval: Duration,
    #[command(flatten)]
    autoscale: AutoscaleArgs,
}

/// A duration flag from 1 s to 300 s.
pub(crate) fn interval(text: &str) -> Result<Duration, String> {
    settings::parse_duration(text)
        .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(300)).contains(d))
        .ok_or_else(|| format!("'{text}' is not a duration from 1s to 300s (e.g. 5s, 500ms)"))
}

/// `ringside scale`
#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    /// Number of nodes wanted.
    nodes: u32,
    /// State directory of the running `ringside up`.
    #[arg(long, default_value = ".ringside", env = "RINGSIDE_STATE_DIR")]
    state_dir: PathBuf,
    /// Wait until the ring has this many members (at most this many seconds; 0: don't).
    #[arg(long, default_value_t = 0)]
    wait: u64,
}

/// How long the services get to stop after Ctrl-C before they are killed.
const STOP_WITHIN: Duration = Duration::from_secs(8);
/// How long `scale` waits for a reducer that is catching up to serve the ring.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);
/// How long a node scaled away gets to hand its keys over and stop.
const LEAVE_WITHIN: Duration = Duration::from_secs(30);
/// How long nats-server gets to stop after SIGTERM before SIGKILL.
const SERVER_GRACE: Duration = Duration::from_secs(5);

/// Most nodes `up` runs (each is a process; this is one machine).
const MAX_NODES: u32 = 32;

/// Runs `ringside up` until SIGINT or SIGTERM.
pub(crate) async fn up(args: UpArgs) -> anyhow::Result<()> {
    if args.nodes > MAX_NODES {
        bail!("--nodes {} is more than {MAX_NODES} nodes", args.nodes);
    }
    let ring = RingName::new(args.ring.as_str())
        .with_context(|| format!("invalid ring name '{}'", args.ring))?;
    let autoscaling = args.autoscale.config(MAX_NODES)?;
    let state = StateDir::new(&args.state_dir);
    if let Some(running) = state.running()? {
        bail!(
            "ringside up is already running with state in {} (pid {}, NATS {}); stop it first \
             (Ctrl-C in its terminal) or use another --state-dir",
            state.root().display(),
            running.pid,
            running.nats_url
        );
    }
    if args.fresh {
        state.wipe_history()?;
        println!(
            "Starting over: removed the stored history in {}.",
            state.root().display()
        );
    }
    let config_file = state.prepare()?;
    let passwords = Passwords::load_or_generate(&state.credentials())?;
    let telemetry = Telemetry::new("up")?;
    let readiness = Readiness::new();
    telemetry.export_readiness(&readiness);
    let (status, status_addr) = ringside_kit::error::bind("status", args.status)
        .await
        .context("--status")?;
    let (stop_status, status_stopped) = tokio::sync::oneshot::channel::<()>();
    let status_server = tokio::spawn(ringside_kit::http::serve(
        status,
        ringside_kit::http::router(&readiness, &telemetry),
        async move {
            let _ = status_stopped.await;
        },
    ));
    let mut nats = Nats::start(&args, &state, config_file, &passwords, &readiness).await?;
    let url = nats.url();
    let system = System::start(&args, &ring, &url, &passwords, &readiness, &telemetry).await;
    let system = match system {
        Ok(system) => system,
        Err(e) => {
            let _ = nats.server.stop(SERVER_GRACE).await;
            return Err(e);
        }
    };
    let mut system = system;
    let mut fixed = BTreeMap::from([("up.status".to_owned(), status_addr)]);
    if !args.no_prometheus {
        let mut endpoints = fixed.clone();
        endpoints.extend(system.supervisor.endpoints());
        system.prometheus = start_prometheus(&args, &state, &endpoints, &readiness).await;
    }
    if let Some(prometheus) = &system.prometheus {
        fixed.insert("prometheus.web".to_owned(), prometheus.server.addr());
    }
    let record = Record {
        state: &state,
        running: Running {
            pid: std::process::id(),
            ring: ring.to_string(),
            nats_url: url.clone(),
            grpc: system.grpc,
            metrics: system.metrics,
            endpoints: fixed,
        },
        prometheus: system
            .prometheus
            .as_ref()
            .map(|p| p.server.dir().to_owned()),
    };
    record.write(&system.supervisor)?;
    let autoscaler = match (&system.prometheus, args.autoscale.enabled()) {
        (Some(prometheus), true) => {
            let autoscaler = LocalAutoscaler {
                autoscaler: ringside_autoscale::Autoscaler::new(autoscaling)?,
                prometheus: prometheus.server.addr(),
                publisher: Publisher::new(connect(&url, ServiceUser::Collector, &passwords).await?),
                ring: ring.clone(),
                every: args.autoscale.every(),
                nodes: system.nodes_running.subscribe(),
            };
            Some(tokio::spawn(autoscaler.run()))
        }
        (None, true) => {
            println!(
                "Autoscaling is off: it reads its metrics from Prometheus, which does not run."
            );
            None
        }
        (_, false) => None,
    };
    print_banner(
        &args,
        &ring,
        &url,
        &system,
        status_addr,
        autoscaler.is_some(),
    );
    let outcome = system
        .run_until_signal(&ring, &url, &passwords, &mut nats, &record)
        .await;
    if let Some(autoscaler) = autoscaler {
        autoscaler.abort();
    }
    let server_stop = nats.server.stop(SERVER_GRACE).await;
    let _ = stop_status.send(());
    let _ = status_server.await;
    state.clear();
    outcome?;
    server_stop.context("stopping nats-server")?;
    println!("Stopped. `ringside up` again resumes this history; `--fresh` starts over.");
    Ok(())
}

/// `up.json`, what the tools read to find the running system, and Prometheus's
/// targets: rewritten whenever the services' listeners change (a node added, a
/// service restarted).
struct Record<'a> {
    state: &'a StateDir,
    /// The fixed part (and `up`'s own endpoints).
    running: Running,
    /// Prometheus's directory, when it runs.
    prometheus: Option<PathBuf>,
}

impl Record<'_> {
    fn write(&self, supervisor: &Supervisor) -> anyhow::Result<()> {
        let mut running = self.running.clone();
        running.endpoints.extend(supervisor.endpoints());
        if let Some(dir) = &self.prometheus {
            crate::prometheus::write_targets(dir, &running.endpoints)?;
        }
        self.state.record(&running)
    }
}

/// The Prometheus of `up`, and its readiness condition.
struct Prometheus {
    server: LocalPrometheus,
    up: Condition,
    restarts: QuickRestarts,
}

/// Starts Prometheus scraping `endpoints`; `None` (and a message saying why and what
/// runs without it) if there is no binary or it does not start: the rest of the system
/// runs on.
async fn start_prometheus(
    args: &UpArgs,
    state: &StateDir,
    endpoints: &BTreeMap<String, SocketAddr>,
    readiness: &Readiness,
) -> Option<Prometheus> {
    let Some(binary) = PrometheusConfig::find_binary() else {
        println!(
            "Prometheus not found (no `prometheus` on PATH, nor ${}): running without it, \
             so no stored metrics, rules or autoscaling. `./dev setup` installs it \
             (Debian's `prometheus`); --no-prometheus silences this.",
            crate::prometheus::BINARY_ENV
        );
        return None;
    };
    let config = PrometheusConfig {
        binary,
        dir: state.prometheus(),
        listen: args.prometheus,
        interval: args.scrape_interval,
    };
    match LocalPrometheus::start(config, endpoints).await {
        Ok(server) => {
            let up = readiness.condition("prometheus");
            up.set(true);
            Some(Prometheus {
                server,
                up,
                restarts: QuickRestarts::default(),
            })
        }
        Err(e) => {
            println!("Prometheus did not start, running without it: {e:#}");
            None
        }
    }
}

/// Counts restarts in a row, each within [`RESTART_WINDOW`] of the previous.
#[derive(Debug, Default)]
struct QuickRestarts {
    count: u32,
    last: Option<tokio::time::Instant>,
}

impl QuickRestarts {
    /// Notes a restart; whether it is more than [`MAX_QUICK_RESTARTS`] in a row.
    fn too_many(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        self.count = match self.last {
            Some(at) if now.duration_since(at) < RESTART_WINDOW => self.count + 1,
            _ => 1,
        };
        self.last = Some(now);
        self.count > MAX_QUICK_RESTARTS
    }
}

/// The nats-server child of `up`, and what it takes to start it again.
struct Nats {
    config: ServerConfig,
    server: LocalServer,
    log: PathBuf,
    /// Holds while the server runs (a readiness condition of `up`).
    up: Condition,
}

/// Restarts of nats-server in a row, each within [`RESTART_WINDOW`] of the previous
/// one, after which `up` gives up and stops.
const MAX_QUICK_RESTARTS: u32 = 5;
/// A restart this long after the previous one starts the count again.
const RESTART_WINDOW: Duration = Duration::from_secs(60);

impl Nats {
    async fn start(
        args: &UpArgs,
        state: &StateDir,
        config_file: PathBuf,
        passwords: &Passwords,
        readiness: &Readiness,
    ) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let exe = std::env::current_exe().context("cannot locate the ringside binary")?;
        let mut roots: Vec<&std::path::Path> = vec![&cwd];
        roots.extend(exe.ancestors().skip(1));
        let binary = ringside_natsd::find_binary(&roots)?;
        let mut config = ServerConfig {
            binary,
            config_file: Some(config_file),
            store_dir: state.store(),
            log_file: state.server_log(),
            port: args.nats_port,
            passwords: Some(passwords.clone()),
            startup_timeout: Duration::from_secs(30),
            memory_limit_bytes: 1 << 30,
            env: Vec::new(),
        };
        let server = Self::launch(&config).await?;
        // A restart takes the same port, so the services' URL stays right.
        config.port = server.port();
        let up = readiness.condition("nats-server");
        up.set(true);
        Ok(Self {
            log: config.log_file.clone(),
            config,
            server,
            up,
        })
    }

    async fn launch(config: &ServerConfig) -> anyhow::Result<LocalServer> {
        LocalServer::start(config).await.map_err(|e| match e {
            NatsdError::NotReady { .. } => anyhow::Error::new(e).context(format!(
                "nats-server did not start; if its store is damaged, `ringside up --fresh` \
                 starts over (log: {})",
                config.log_file.display()
            )),
            other => other.into(),
        })
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// Starts the server again after it died, on the same port and store.
    async fn restart(&mut self) -> anyhow::Result<()> {
        self.up.set(false);
        self.server = Self::launch(&self.config).await?;
        self.up.set(true);
        Ok(())
    }
}

/// The services of a running `up`: supervised child processes.
struct System {
    supervisor: Supervisor,
    grpc: SocketAddr,
    metrics: SocketAddr,
    /// How to start node `n`.
    node: NodeSpecs,
    /// Prometheus, when it runs.
    prometheus: Option<Prometheus>,
    /// The number of nodes running, for the autoscaler.
    nodes_running: watch::Sender<u32>,
}

/// What every node's settings share; [`NodeSpecs::spec`] adds its id.
struct NodeSpecs {
    settings: BTreeMap<String, String>,
}

impl NodeSpecs {
    fn new(
        args: &UpArgs,
        ring: &RingName,
        url: &str,
        passwords: &Passwords,
    ) -> anyhow::Result<Self> {
        use ringside_node::config as node;
        let mut settings = base_settings(ring, url, Target::Node(0), passwords)?;
        settings.extend([
            (node::ADDR.key.to_owned(), "127.0.0.1:0".to_owned()),
            (node::REPLICAS.key.to_owned(), args.replicas.to_string()),
            (
                node::HEARTBEAT.key.to_owned(),
                format!("{}ms", args.heartbeat_ms),
            ),
        ]);
        Ok(Self { settings })
    }

    /// Node `n` (`node-<n>`).
    fn spec(&self, n: u32) -> Spec {
        use ringside_node::config as node;
        let target = Target::Node(n);
        let mut settings = self.settings.clone();
        settings.insert(node::ID.key.to_owned(), target.name());
        Spec {
            target,
            settings,
            listeners: vec![("api", &node::ADDR), ("metrics", &node::ADDR)],
        }
    }
}

/// What every child's settings start from: the ring, the server, and its own user's
/// password (no other).
fn base_settings(
    ring: &RingName,
    url: &str,
    target: Target,
    passwords: &Passwords,
) -> anyhow::Result<BTreeMap<String, String>> {
    let user = target.user();
    let secret = passwords
        .password(user.name())
        .with_context(|| format!("no password for NATS user '{}'", user.name()))?;
    Ok(BTreeMap::from([
        (settings::RING.key.to_owned(), ring.to_string()),
        (settings::NATS_URL.key.to_owned(), url.to_owned()),
        (user.password_env(), secret.to_owned()),
    ]))
}

/// The services `up` runs, in start order.
fn specs(
    args: &UpArgs,
    ring: &RingName,
    url: &str,
    passwords: &Passwords,
) -> anyhow::Result<Vec<Spec>> {
    use ringside_bridge::config as bridge;
    use ringside_collector::config as collector;
    use ringside_reducer::config as reducer;
    use ringside_watcher::heartbeat::config as heartbeat;
    let mut reducer_settings = base_settings(ring, url, Target::Reducer, passwords)?;
    reducer_settings.extend([
        (reducer::INSTANCE.key.to_owned(), "local".to_owned()),
        (reducer::GRPC_ADDR.key.to_owned(), args.grpc.to_string()),
        (
            reducer::METRICS_ADDR.key.to_owned(),
            args.metrics.to_string(),
        ),
        (reducer::STRATEGY.key.to_owned(), args.strategy.to_string()),
        (reducer::VNODES.key.to_owned(), args.vnodes.to_string()),
    ]);
    let mut watcher_settings = base_settings(ring, url, Target::HeartbeatWatcher, passwords)?;
    watcher_settings.extend([
        (
            heartbeat::INTERVAL.key.to_owned(),
            format!("{}ms", args.heartbeat_ms),
        ),
        (
            ringside_watcher::config::METRICS_ADDR.key.to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        (settings::HOSTNAME.key.to_owned(), "ringside-up".to_owned()),
    ]);
    let mut collector_settings = base_settings(ring, url, Target::Collector, passwords)?;
    collector_settings.insert(
        collector::METRICS_ADDR.key.to_owned(),
        "127.0.0.1:0".to_owned(),
    );
    let mut bridge_settings = base_settings(ring, url, Target::Bridge, passwords)?;
    bridge_settings.extend([
        (bridge::ADDR.key.to_owned(), args.dashboard.to_string()),
        (bridge::REPLICAS.key.to_owned(), args.replicas.to_string()),
    ]);
    Ok(vec![
        Spec {
            target: Target::Reducer,
            settings: reducer_settings,
            listeners: vec![
                ("grpc", &reducer::GRPC_ADDR),
                ("metrics", &reducer::METRICS_ADDR),
            ],
        },
        Spec {
            target: Target::HeartbeatWatcher,
            settings: watcher_settings,
            listeners: vec![("metrics", &ringside_watcher::config::METRICS_ADDR)],
        },
        Spec {
            target: Target::Collector,
            settings: collector_settings,
            listeners: vec![("metrics", &collector::METRICS_ADDR)],
        },
        Spec {
            target: Target::Bridge,
            settings: bridge_settings,
            listeners: vec![("dashboard", &bridge::ADDR), ("metrics", &bridge::ADDR)],
        },
    ])
}

/// Completes when Prometheus exits; never if it does not run.
async fn prometheus_exited(prometheus: Option<&mut Prometheus>) -> String {
    match prometheus {
        Some(p) => p
            .server
            .exited()
            .await
            .map_or_else(|e| e.to_string(), |s| s.to_string()),
        None => std::future::pending().await,
    }
}

impl System {
    /// Starts Prometheus again after it exited (`status`), unless it keeps exiting:
    /// then the system runs on without it.
    async fn restart_prometheus(&mut self, status: String) {
        let Some(mut prometheus) = self.prometheus.take() else {
            return;
        };
        prometheus.up.set(false);
        let log = prometheus.server.log_file();
        if prometheus.restarts.too_many() {
            println!(
                "prometheus exited ({status}) {} times within {} s each; running on without it (log: {}).",
                prometheus.restarts.count,
                RESTART_WINDOW.as_secs(),
                log.display()
            );
            return;
        }
        println!(
            "prometheus exited ({status}); starting it again (log: {}).",
            log.display()
        );
        match prometheus.server.restart().await {
            Ok(()) => {
                prometheus.up.set(true);
                self.prometheus = Some(prometheus);
            }
            Err(e) => {
                println!("prometheus could not be started again, running on without it: {e:#}")
            }
        }
    }

    async fn start(
        args: &UpArgs,
        ring: &RingName,
        url: &str,
        passwords: &Passwords,
        readiness: &Readiness,
        telemetry: &Telemetry,
    ) -> anyhow::Result<Self> {
        let admin = connect(url, ServiceUser::Admin, passwords).await?;
        provision(&jetstream::new(admin), &Definitions::builtin()?)
            .await
            .context("cannot provision the streams and buckets")?;
        let exe = std::env::current_exe().context("cannot locate the ringside binary")?;
        let supervisor = Supervisor::start(
            &exe,
            specs(args, ring, url, passwords)?,
            readiness,
            telemetry,
        )
        .await
        .context(
            "cannot start the services (is the gRPC or metrics port in use? see --grpc, --metrics)",
        )?;
        let listener = |name| {
            supervisor
                .listener(Target::Reducer, name)
                .with_context(|| format!("the reducer announced no {name} listener"))
        };
        let (grpc, metrics) = (listener("grpc")?, listener("metrics")?);
        let mut system = Self {
            supervisor,
            grpc,
            metrics,
            node: NodeSpecs::new(args, ring, url, passwords)?,
            prometheus: None,
            nodes_running: watch::Sender::new(0),
        };
        system.scale_to(args.nodes).await?;
        Ok(system)
    }

    /// The nodes that run.
    fn nodes(&self) -> u32 {
        u32::try_from(self.supervisor.count(|t| matches!(t, Target::Node(_)))).unwrap_or(u32::MAX)
    }

    /// Starts nodes (`node-<n+1>`, ...) or stops the newest (each leaves the ring and
    /// hands its keys over) until `desired` run.
    async fn scale_to(&mut self, desired: u32) -> anyhow::Result<()> {
        let running = self.nodes();
        if desired > running {
            let specs = (running + 1..=desired).map(|n| self.node.spec(n)).collect();
            self.supervisor.add_all(specs).await?;
        }
        for n in (desired + 1..=running).rev() {
            let deadline = tokio::time::Instant::now() + LEAVE_WITHIN;
            self.supervisor.remove(Target::Node(n), deadline).await;
        }
        self.nodes_running.send_replace(self.nodes());
        Ok(())
    }

    /// Follows scale decisions, restarts what dies (nats-server, a service), until
    /// SIGINT/SIGTERM; then stops in reverse order, within [`STOP_WITHIN`].
    async fn run_until_signal(
        mut self,
        ring: &RingName,
        url: &str,
        passwords: &Passwords,
        nats: &mut Nats,
        record: &Record<'_>,
    ) -> anyhow::Result<()> {
        let mut signal = std::pin::pin!(ringside_kit::run::signalled());
        let admin = connect(url, ServiceUser::Admin, passwords).await?;
        let mut decisions = scale_decisions(admin, ring).await?;
        let mut nats_restarts = QuickRestarts::default();
        let outcome = loop {
            tokio::select! {
                () = &mut signal => break Ok(()),
                decision = decisions.next() => match decision {
                    Some((desired, reason)) => {
                        let desired = desired.min(MAX_NODES);
                        println!("scale: {} -> {desired} nodes ({reason})", self.nodes());
                        if let Err(e) = self.scale_to(desired).await {
                            break Err(e.context("scaling the nodes"));
                        }
                        if let Err(e) = record.write(&self.supervisor) {
                            break Err(e);
                        }
                    }
                    None => break Err(anyhow::anyhow!("the scale subscription ended; is nats-server still running?")),
                },
                status = nats.server.exited() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    if nats_restarts.too_many() {
                        break Err(anyhow::anyhow!(
                            "nats-server exited ({status}) {} times within {} s each; giving up (log: {})",
                            nats_restarts.count,
                            RESTART_WINDOW.as_secs(),
                            nats.log.display()
                        ));
                    }
                    println!("nats-server exited ({status}); restarting it on {url} (the store is on disk, the services reconnect).");
                    match nats.restart().await {
                        Ok(()) => println!("nats-server is back on {url}."),
                        Err(e) => break Err(e.context("nats-server exited and could not be restarted")),
                    }
                }
                status = prometheus_exited(self.prometheus.as_mut()) => {
                    self.restart_prometheus(status).await;
                }
                exit = self.supervisor.exited() => {
                    if let Err(e) = self.supervisor.restart(exit).await {
                        break Err(e);
                    }
                    if let Err(e) = record.write(&self.supervisor) {
                        break Err(e);
                    }
                }
            }
        };
        println!(
            "Stopping: the nodes leave, then the watcher, the reducer and nats-server stop \
             (within {} s; Ctrl-C again to stop at once).",
            STOP_WITHIN.as_secs()
        );
        let deadline = tokio::time::Instant::now() + STOP_WITHIN;
        let prometheus = self.prometheus.take();
        let stopping = async move {
            self.supervisor.stop(deadline).await;
            if let Some(prometheus) = prometheus {
                prometheus.server.stop().await;
            }
        };
        tokio::select! {
            () = stopping => outcome,
            () = ringside_kit::run::signalled() => {
                println!("Stopping at once.");
                outcome
            }
        }
    }
}

/// The `desired_replicas` and `reason` of every `ScaleDecided` stored from now on.
async fn scale_decisions(
    admin: async_nats::Client,
    ring: &RingName,
) -> anyhow::Result<impl futures::Stream<Item = (u32, String)> + Unpin> {
    let js = jetstream::new(admin);
    let stream = js
        .get_stream(subject::STREAM_EVENTS)
        .await
        .context("cannot open the RINGSIDE stream")?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject::scale(ring),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .context("cannot follow scale decisions")?;
    let messages = consumer
        .messages()
        .await
        .context("cannot follow scale decisions")?;
    Ok(Box::pin(messages.filter_map(|message| async move {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, "Reading a scale decision failed.");
                return None;
            }
        };
        match codec::decode_on(&message.subject, &message.payload).map(Event::into_body) {
            Ok(Body::ScaleDecided(decision)) => Some((decision.desired_replicas, decision.reason)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "Skipping an undecodable scale decision.");
                None
            }
        }
    })))
}

async fn connect(
    url: &str,
    user: ServiceUser,
    passwords: &Passwords,
) -> anyhow::Result<async_nats::Client> {
    let password = passwords
        .password(user.name())
        .with_context(|| format!("no password for NATS user '{}'", user.name()))?;
    user.connect_options(password)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url} as '{}'", user.name()))
}

fn print_banner(
    args: &UpArgs,
    ring: &RingName,
    url: &str,
    system: &System,
    status: SocketAddr,
    autoscaling: bool,
) {
    let dir = args.state_dir.display();
    let dashboard = system
        .supervisor
        .listener(Target::Bridge, "dashboard")
        .map_or_else(|| "(not running)".to_owned(), |a| format!("http://{a}/"));
    println!(
        "\nringside is up: ring '{ring}', {} nodes, {} copies of each key.\n\
         \n  dashboard   {dashboard}  (the live ring, its rebalances, load and history)\
         \n  NATS        {url}  (store and passwords in {dir}/)\
         \n  gRPC        {grpc}  (ringside.v1.RingService: GetRing, Lookup, Successors, WatchRing)\
         \n  metrics     http://{metrics}/metrics  (the reducer's; every service's: {dir}/up.json)\
         \n  status      http://{status}/readyz  (200 while nats-server and every service run)\
         {prometheus}{autoscaler}\
         \n\nIn another terminal:\
         \n  ringside tail                       # decoded events, live\
         \n  ringside load --duration 30s        # keyed traffic from many client addresses\
         \n  ringside load --clients 300         # 300 client addresses: the autoscaler adds nodes\
         \n  ringside scale 5 --wait 30          # 5 nodes: joins, rebalances, key handoffs\
         \n  ringside replay state               # the ring now; replay verify checks the whole history\
         \n  nats sub 'ringside.{ring}.stored.>' -s {url} --user admin --password $RINGSIDE_NATS_PASSWORD_ADMIN\
         \n       (nats CLI, optional; the password is in {dir}/credentials.env)\
         \n\nCtrl-C stops everything.",
        system.nodes(),
        args.replicas,
        grpc = system.grpc,
        metrics = system.metrics,
        autoscaler = if autoscaling {
            format!(
                "\n  autoscaler  {}  (--no-autoscale turns it off)",
                args.autoscale.describe()
            )
        } else {
            String::new()
        },
        prometheus = system
            .prometheus
            .as_ref()
            .map_or_else(String::new, |p| format!(
                "\n  prometheus  http://{}/  (every service's metrics, rules and alerts: /alerts)",
                p.server.addr()
            )),
    );
}

/// Runs `ringside scale N`: records the decision; `up` acts on it.
pub(crate) async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    if args.nodes > MAX_NODES {
        bail!("{} is more than {MAX_NODES} nodes", args.nodes);
    }
    let state = StateDir::new(&args.state_dir);
    let running = state.running()?.with_context(|| {
        format!(
            "no ringside up is running with state in {} (start one with `ringside up`)",
            state.root().display()
        )
    })?;
    let passwords = Passwords::load(&state.credentials())?;
    let ring = RingName::new(running.ring.as_str())?;
    let mut client = ring_client(running.grpc).await?;
    let current = ring_size(&mut client, &ring).await?;
    let admin = connect(&running.nats_url, ServiceUser::Admin, &passwords).await?;
    let now = SystemTime::now();
    let decision = pb::ScaleDecided {
        current_replicas: current,
        desired_replicas: args.nodes,
        metric: "manual".to_string(),
        evaluated_at: Some(ringside_events::event::timestamp(now)),
        reason: "ringside scale".to_string(),
        ..Default::default()
    };
    let event = Event::new(ring.clone(), decision)?
        .with_occurred_at(now)
        .with_producer("ringside-scale");
    let stored = Publisher::new(admin).publish(&event).await?;
    println!(
        "Asked for {} nodes (the ring has {current}); decision stored at sequence {}.",
        args.nodes, stored.sequence
    );
    if args.wait > 0 {
        let epoch = wait_ring_size(
            running.grpc,
            &ring,
            args.nodes,
            Duration::from_secs(args.wait),
        )
        .await?;
        println!("The ring has {} members at epoch {epoch}.", args.nodes);
    }
    Ok(())
}

type RingClient = pb::ring_service_client::RingServiceClient<tonic::transport::Channel>;

async fn ring_client(grpc: SocketAddr) -> anyhow::Result<RingClient> {
    RingClient::connect(format!("http://{grpc}"))
        .await
        .with_context(|| format!("cannot reach the reducer's RingService at {grpc}"))
}

async fn ring_state(client: &mut RingClient, ring: &RingName) -> anyhow::Result<(u32, u64)> {
    // A reducer that is catching up (just restarted) answers Unavailable: wait for it.
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    let answer = loop {
        let answer = client
            .get_ring(pb::GetRingRequest {
                ring: ring.to_string(),
            })
            .await;
        match answer {
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            answer => break answer,
        }
    };
    let snapshot = answer.context("GetRing failed")?.into_inner();
    let snapshot = snapshot.snapshot.unwrap_or_default();
    Ok((
        u32::try_from(snapshot.members.len()).unwrap_or(u32::MAX),
        snapshot.epoch,
    ))
}

/// Waits until the served ring has `size` members; returns its epoch.
async fn wait_ring_size(
    grpc: SocketAddr,
    ring: &RingName,
    size: u32,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut client = ring_client(grpc).await?;
    loop {
        let (members, epoch) = ring_state(&mut client, ring).await?;
        if members == size {
            return Ok(epoch);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the ring still has {members} members after {} s (epoch {epoch})",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ring_size(client: &mut RingClient, ring: &RingName) -> anyhow::Result<u32> {
    Ok(ring_state(client, ring).await?.0)
}
