//! `ringside up`: the event-sourced core running locally in one command, and
//! `ringside scale`, which changes the number of stand-in members it runs.
//!
//! `up` starts `nats-server` as a child process (store under the state directory,
//! loopback only, per-service passwords generated on first run), provisions the
//! streams and buckets, then runs each service of [`Target`] as its own child process
//! under the [`Supervisor`] (`ringside reducer`, `ringside watcher heartbeat`: the same
//! commands a pod runs, each as its own NATS user with only its own password), and the
//! stand-in members as tasks of this process. Everything talks only through NATS.
//! nats-server and the services are started again when they die.
//!
//! Stand-in members only heartbeat: they are labelled `stand-in` and exist so that
//! joins and leaves flow through the real pipeline until real nodes exist.
//! `ringside scale N` publishes a `ScaleDecided` event on the ring's scale subject;
//! `up` follows those events and starts or stops stand-ins to match.
//!
//! Stopping (Ctrl-C or SIGTERM) runs the start in reverse: stand-ins say goodbye,
//! the watcher records their leaves and the reducer folds them (bounded wait), then
//! the watcher, the reducer (which writes a snapshot) and the server stop.

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
use ringside_watcher::heartbeat::{Beacon, new_incarnation};
use tokio::sync::watch;

use crate::local::{Running, StateDir};
use crate::services::Target;
use crate::supervisor::{Spec, Supervisor};

/// `ringside up`
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Stand-in members to start with (they only heartbeat; see `ringside scale`).
    #[arg(long, default_value_t = 3)]
    members: u32,
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
    /// Heartbeat interval of the stand-ins, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Start over: delete the stored history (stream, snapshots) first.
    #[arg(long)]
    fresh: bool,
}

/// `ringside scale`
#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    /// Number of stand-in members wanted.
    replicas: u32,
    /// State directory of the running `ringside up`.
    #[arg(long, default_value = ".ringside", env = "RINGSIDE_STATE_DIR")]
    state_dir: PathBuf,
    /// Wait until the ring has this many members (at most this many seconds; 0: don't).
    #[arg(long, default_value_t = 0)]
    wait: u64,
}

/// How long the services get to stop after Ctrl-C before they are aborted.
const STOP_WITHIN: Duration = Duration::from_secs(8);
/// Of [`STOP_WITHIN`], how long the stand-ins' goodbyes get to be folded.
const GOODBYES_WITHIN: Duration = Duration::from_secs(5);
/// How long nats-server gets to stop after SIGTERM before SIGKILL.
const SERVER_GRACE: Duration = Duration::from_secs(5);

/// Most stand-ins `up` runs (each beats on core NATS; this is a local demo).
const MAX_STAND_INS: u32 = 200;

/// Runs `ringside up` until SIGINT or SIGTERM.
pub(crate) async fn up(args: UpArgs) -> anyhow::Result<()> {
    if args.members > MAX_STAND_INS {
        bail!(
            "--members {} is more than {MAX_STAND_INS} stand-ins",
            args.members
        );
    }
    let ring = RingName::new(args.ring.as_str())
        .with_context(|| format!("invalid ring name '{}'", args.ring))?;
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
    let status = ringside_kit::http::bind(args.status)
        .await
        .with_context(|| format!("cannot listen on {} (--status)", args.status))?;
    let status_addr = status.local_addr()?;
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
    let mut endpoints = system.supervisor.endpoints();
    endpoints.insert("up.status".to_owned(), status_addr);
    state.record(&Running {
        pid: std::process::id(),
        ring: ring.to_string(),
        nats_url: url.clone(),
        grpc: system.grpc,
        metrics: system.metrics,
        endpoints,
    })?;
    print_banner(&args, &ring, &url, &system, status_addr);
    let outcome = system
        .run_until_signal(&ring, &url, &passwords, &mut nats)
        .await;
    let server_stop = nats.server.stop(SERVER_GRACE).await;
    let _ = stop_status.send(());
    let _ = status_server.await;
    state.clear();
    outcome?;
    server_stop.context("stopping nats-server")?;
    println!("Stopped. `ringside up` again resumes this history; `--fresh` starts over.");
    Ok(())
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

/// The services of a running `up`: supervised child processes, and the stand-ins.
struct System {
    supervisor: Supervisor,
    grpc: SocketAddr,
    metrics: SocketAddr,
    stand_ins: StandIns,
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
    ])
}

impl System {
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
        let node = connect(url, ServiceUser::Node, passwords).await?;
        let mut stand_ins = StandIns {
            beacon: Beacon::new(node.clone(), ring.clone()),
            client: node,
            interval: Duration::from_millis(args.heartbeat_ms.max(50)),
            running: Vec::new(),
        };
        stand_ins.scale_to(args.members);
        Ok(Self {
            supervisor,
            grpc,
            metrics,
            stand_ins,
        })
    }

    /// Follows scale decisions, restarts what dies (nats-server, a service), until
    /// SIGINT/SIGTERM; then stops in reverse order, within [`STOP_WITHIN`].
    async fn run_until_signal(
        mut self,
        ring: &RingName,
        url: &str,
        passwords: &Passwords,
        nats: &mut Nats,
    ) -> anyhow::Result<()> {
        let mut signal = std::pin::pin!(ringside_kit::run::signalled());
        let admin = connect(url, ServiceUser::Admin, passwords).await?;
        let mut decisions = scale_decisions(admin, ring).await?;
        let mut quick_restarts = 0;
        let mut last_restart: Option<tokio::time::Instant> = None;
        let outcome = loop {
            tokio::select! {
                () = &mut signal => break Ok(()),
                decision = decisions.next() => match decision {
                    Some(desired) => {
                        let desired = desired.min(MAX_STAND_INS);
                        println!("scale: {} -> {desired} stand-in members", self.stand_ins.len());
                        self.stand_ins.scale_to(desired);
                    }
                    None => break Err(anyhow::anyhow!("the scale subscription ended; is nats-server still running?")),
                },
                status = nats.server.exited() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    let now = tokio::time::Instant::now();
                    quick_restarts = match last_restart {
                        Some(at) if now.duration_since(at) < RESTART_WINDOW => quick_restarts + 1,
                        _ => 1,
                    };
                    last_restart = Some(now);
                    if quick_restarts > MAX_QUICK_RESTARTS {
                        break Err(anyhow::anyhow!(
                            "nats-server exited ({status}) {quick_restarts} times within {} s; giving up (log: {})",
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
                exit = self.supervisor.exited() => {
                    if let Err(e) = self.supervisor.restart(exit).await {
                        break Err(e);
                    }
                }
            }
        };
        println!(
            "Stopping: stand-ins say goodbye, then the watcher, the reducer and nats-server stop \
             (within {} s; Ctrl-C again to stop at once).",
            STOP_WITHIN.as_secs()
        );
        let deadline = tokio::time::Instant::now() + STOP_WITHIN;
        let stopping = self.stop_by(ring, outcome.is_ok(), deadline);
        tokio::select! {
            () = stopping => outcome,
            () = ringside_kit::run::signalled() => {
                println!("Stopping at once.");
                outcome
            }
        }
    }

    /// The stop sequence: stand-ins' goodbyes folded (when all is well), then the
    /// services in reverse order, each bounded by `deadline`.
    async fn stop_by(
        mut self,
        ring: &RingName,
        fold_goodbyes: bool,
        deadline: tokio::time::Instant,
    ) {
        let leaving = self.stand_ins.len();
        self.stand_ins.scale_to(0);
        self.stand_ins.drain().await;
        if leaving > 0 && fold_goodbyes {
            // Let the goodbyes become leaves and the leaves epochs before the watcher
            // and the reducer stop; bounded, as whatever is left is caught up on the
            // next start.
            let within = GOODBYES_WITHIN
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            if let Err(e) = wait_ring_size(self.grpc, ring, 0, within).await {
                tracing::warn!(error = %format!("{e:#}"), "The goodbyes were not all folded before stopping; the next start catches up.");
            }
        }
        self.supervisor.stop(deadline).await;
    }
}

/// Stand-in members: heartbeat beacons named `stand-in-1`, `stand-in-2`, ...
struct StandIns {
    beacon: Beacon,
    client: async_nats::Client,
    interval: Duration,
    /// The switch of each running stand-in's beacon task: turned on, the beacon says
    /// goodbye and its task ends.
    running: Vec<watch::Sender<bool>>,
}

impl StandIns {
    fn len(&self) -> usize {
        self.running.len()
    }

    /// Starts or stops stand-ins (the newest first) to have `count`.
    fn scale_to(&mut self, count: u32) {
        let count = count as usize;
        while self.running.len() < count {
            let index = self.running.len() + 1;
            let member = pb::Member {
                id: format!("stand-in-{index}"),
                address: format!("127.0.0.1:{}", 17000 + index),
                weight: 1,
                uid: Some(new_incarnation()),
                labels: BTreeMap::from([("role".to_string(), "stand-in".to_string())]),
                ..Default::default()
            };
            let beacon = self.beacon.clone();
            let interval = self.interval;
            let (stop, mut stopped) = watch::channel(false);
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                if let Err(e) = beacon.run(member, interval, stopped).await {
                    tracing::warn!(error = %e, "A stand-in member failed.");
                }
            });
            self.running.push(stop);
        }
        while self.running.len() > count {
            if let Some(stop) = self.running.pop() {
                let _ = stop.send(true);
            }
        }
    }

    /// Waits (bounded) for stopped stand-ins to have sent their goodbyes.
    async fn drain(&mut self) {
        // A flush waits for the server, which may be gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
        tokio::time::sleep(self.interval.min(Duration::from_millis(300))).await;
    }
}

/// The `desired_replicas` of every `ScaleDecided` stored from now on.
async fn scale_decisions(
    admin: async_nats::Client,
    ring: &RingName,
) -> anyhow::Result<impl futures::Stream<Item = u32> + Unpin> {
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
            Ok(Body::ScaleDecided(decision)) => Some(decision.desired_replicas),
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

fn print_banner(args: &UpArgs, ring: &RingName, url: &str, system: &System, status: SocketAddr) {
    let dir = args.state_dir.display();
    println!(
        "\nringside is up: ring '{ring}', {} stand-in members (they only heartbeat).\n\
         \n  NATS        {url}  (store and passwords in {dir}/)\
         \n  gRPC        {grpc}  (ringside.v1.RingService: GetRing, Lookup, Successors, WatchRing)\
         \n  metrics     http://{metrics}/metrics  (the reducer's; every service's: {dir}/up.json)\
         \n  status      http://{status}/readyz  (200 while nats-server and every service run)\
         \n\nIn another terminal:\
         \n  ringside tail                       # decoded events, live\
         \n  ringside scale 5 --wait 30          # 5 stand-in members (joins flow through the pipeline)\
         \n  ringside replay state               # the ring now; replay verify checks the whole history\
         \n  nats sub 'ringside.{ring}.stored.>' -s {url} --user admin --password $RINGSIDE_NATS_PASSWORD_ADMIN\
         \n       (nats CLI, optional; the password is in {dir}/credentials.env)\
         \n\nCtrl-C stops everything.",
        args.members,
        grpc = system.grpc,
        metrics = system.metrics,
    );
}

/// Runs `ringside scale N`: records the decision; `up` acts on it.
pub(crate) async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    if args.replicas > MAX_STAND_INS {
        bail!("{} is more than {MAX_STAND_INS} stand-ins", args.replicas);
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
        desired_replicas: args.replicas,
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
        "Asked for {} stand-in members (the ring has {current}); decision stored at sequence {}.",
        args.replicas, stored.sequence
    );
    if args.wait > 0 {
        let epoch = wait_ring_size(
            running.grpc,
            &ring,
            args.replicas,
            Duration::from_secs(args.wait),
        )
        .await?;
        println!("The ring has {} members at epoch {epoch}.", args.replicas);
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
    let snapshot = client
        .get_ring(pb::GetRingRequest {
            ring: ring.to_string(),
        })
        .await
        .context("GetRing failed")?
        .into_inner();
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
