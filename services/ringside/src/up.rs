//! `ringside up`: the event-sourced core running locally in one command, and
//! `ringside scale`, which changes the number of stand-in members it runs.
//!
//! `up` starts `nats-server` as a child process (store under the state directory,
//! loopback only, per-service passwords generated on first run), provisions the
//! streams and buckets, then runs the reducer, the heartbeat watcher and the stand-in
//! members as tasks of this process. They still talk only through NATS, each as its
//! own NATS user, exactly as they would as separate processes.
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
use ringside_natsd::{LocalServer, NatsdError, Passwords, ServerConfig};
use ringside_reducer::{Reducer, ReducerConfig};
use ringside_ring::{RingConfig, Strategy};
use ringside_watcher::heartbeat::{self, Beacon, HeartbeatConfig, new_incarnation};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::local::{Running, StateDir};

/// `ringside up`
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Stand-in members to start with (they only heartbeat; see `ringside scale`).
    #[arg(long, default_value_t = 3)]
    members: u32,
    /// Ring name.
    #[arg(long, default_value = "default")]
    ring: String,
    /// State directory: NATS store, passwords, logs.
    #[arg(long, default_value = ".ringside", env = "RINGSIDE_STATE_DIR")]
    state_dir: PathBuf,
    /// NATS client port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 4222)]
    nats_port: u16,
    /// Reducer gRPC address (RingService); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7420")]
    grpc: SocketAddr,
    /// Reducer metrics address (/metrics, /livez, /readyz); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9420")]
    metrics: SocketAddr,
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
    let mut nats = Nats::start(&args, &state, config_file, &passwords).await?;
    let url = nats.url();
    let system = System::start(&args, &ring, &url, &passwords).await;
    let system = match system {
        Ok(system) => system,
        Err(e) => {
            let _ = nats.server.stop(SERVER_GRACE).await;
            return Err(e);
        }
    };
    state.record(&Running {
        pid: std::process::id(),
        ring: ring.to_string(),
        nats_url: url.clone(),
        grpc: system.grpc,
        metrics: system.metrics,
    })?;
    print_banner(&args, &ring, &url, &system);
    let outcome = system
        .run_until_signal(&ring, &url, &passwords, &mut nats)
        .await;
    let server_stop = nats.server.stop(SERVER_GRACE).await;
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
    ) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let exe = std::env::current_exe().context("cannot locate the ringside binary")?;
        let mut roots: Vec<&std::path::Path> = vec![&cwd];
        roots.extend(exe.ancestors().skip(1));
        let binary = ringside_natsd::find_binary(&roots)?;
        let mut config = ServerConfig {
            binary,
            config_file,
            store_dir: state.store(),
            log_file: state.server_log(),
            port: args.nats_port,
            passwords: passwords.clone(),
            startup_timeout: Duration::from_secs(30),
            memory_limit_bytes: 1 << 30,
        };
        let server = Self::launch(&config).await?;
        // A restart takes the same port, so the services' URL stays right.
        config.port = server.port();
        Ok(Self {
            log: config.log_file.clone(),
            config,
            server,
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
        self.server = Self::launch(&self.config).await?;
        Ok(())
    }
}

/// The services of a running `up`, each a task with its own stop signal.
struct System {
    grpc: SocketAddr,
    metrics: SocketAddr,
    reducer: Service,
    watcher: Service,
    stand_ins: StandIns,
}

/// A running task and the switch that asks it to stop.
struct Service {
    name: &'static str,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    fn spawn<F>(name: &'static str, run: impl FnOnce(watch::Receiver<bool>) -> F) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        Self {
            name,
            stop,
            task: tokio::spawn(run(stopped)),
        }
    }

    /// Asks the task to stop and waits for it until `deadline`; past it, the task is
    /// aborted (a service stuck on an unreachable NATS must not hold `up` open).
    async fn stop_by(mut self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match tokio::time::timeout_at(deadline, &mut self.task).await {
            Ok(Ok(result)) => result.with_context(|| format!("the {} failed", self.name)),
            Ok(Err(e)) => Err(anyhow::anyhow!(
                "the {} task ended abnormally: {e}",
                self.name
            )),
            Err(_) => {
                self.task.abort();
                tracing::warn!(
                    service = self.name,
                    "Did not stop in time; aborted it (it resumes from the stream at the next start)."
                );
                Ok(())
            }
        }
    }
}

/// Resolves when the switch turns on (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The shared part of every service's configuration map.
fn base_map(ring: &RingName, url: &str, passwords: &Passwords) -> BTreeMap<String, String> {
    let mut map = BTreeMap::from([
        ("RINGSIDE_RING".to_string(), ring.to_string()),
        ("RINGSIDE_NATS_URL".to_string(), url.to_string()),
    ]);
    map.extend(passwords.env());
    map
}

impl System {
    async fn start(
        args: &UpArgs,
        ring: &RingName,
        url: &str,
        passwords: &Passwords,
    ) -> anyhow::Result<Self> {
        let admin = connect(url, ServiceUser::Admin, passwords).await?;
        provision(&jetstream::new(admin), &Definitions::builtin()?)
            .await
            .context("cannot provision the streams and buckets")?;

        let mut map = base_map(ring, url, passwords);
        map.extend([
            ("RINGSIDE_REDUCER_INSTANCE".to_string(), "local".to_string()),
            (
                "RINGSIDE_REDUCER_GRPC_ADDR".to_string(),
                args.grpc.to_string(),
            ),
            (
                "RINGSIDE_REDUCER_METRICS_ADDR".to_string(),
                args.metrics.to_string(),
            ),
            (
                "RINGSIDE_REDUCER_STRATEGY".to_string(),
                args.strategy.to_string(),
            ),
            (
                "RINGSIDE_REDUCER_VNODES".to_string(),
                args.vnodes.to_string(),
            ),
        ]);
        let reducer = Reducer::bind(ReducerConfig::from_map(&map)?)
            .await
            .context("cannot start the reducer (is the gRPC or metrics port in use? see --grpc, --metrics)")?;
        let (grpc, metrics) = (reducer.grpc_addr(), reducer.metrics_addr());
        let reducer = Service::spawn("reducer", |stop| async move {
            reducer.run(stopped(stop)).await.map_err(Into::into)
        });

        map.insert(
            "RINGSIDE_HEARTBEAT_INTERVAL".to_string(),
            format!("{}ms", args.heartbeat_ms),
        );
        map.insert("HOSTNAME".to_string(), "ringside-up".to_string());
        let watcher_config = HeartbeatConfig::from_map(&map)?;
        let watcher = Service::spawn("heartbeat watcher", |stop| async move {
            heartbeat::run(watcher_config, stopped(stop))
                .await
                .map_err(Into::into)
        });

        let node = connect(url, ServiceUser::Node, passwords).await?;
        let mut stand_ins = StandIns {
            beacon: Beacon::new(node.clone(), ring.clone()),
            client: node,
            interval: Duration::from_millis(args.heartbeat_ms.max(50)),
            running: Vec::new(),
        };
        stand_ins.scale_to(args.members);
        wait_serving(grpc, ring).await?;
        Ok(Self {
            grpc,
            metrics,
            reducer,
            watcher,
            stand_ins,
        })
    }

    /// Follows scale decisions and restarts nats-server when it dies, until
    /// SIGINT/SIGTERM; then stops in reverse order, within [`STOP_WITHIN`].
    async fn run_until_signal(
        mut self,
        ring: &RingName,
        url: &str,
        passwords: &Passwords,
        nats: &mut Nats,
    ) -> anyhow::Result<()> {
        let mut signal = std::pin::pin!(crate::service::signalled());
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
                () = wait_finished(&self.reducer), if !self.reducer.task.is_finished() => {
                    break Err(anyhow::anyhow!("the reducer stopped unexpectedly"));
                }
                () = wait_finished(&self.watcher), if !self.watcher.task.is_finished() => {
                    break Err(anyhow::anyhow!("the heartbeat watcher stopped unexpectedly"));
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
            stopped = stopping => outcome.and(stopped),
            () = crate::service::signalled() => {
                println!("Stopping at once.");
                outcome
            }
        }
    }

    /// The stop sequence: stand-ins' goodbyes folded (when all is well), then the
    /// watcher and the reducer, each bounded by `deadline`.
    async fn stop_by(
        mut self,
        ring: &RingName,
        fold_goodbyes: bool,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<()> {
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
        let watcher = self.watcher.stop_by(deadline).await;
        let reducer = self.reducer.stop_by(deadline).await;
        watcher.and(reducer)
    }
}

/// Polls until the task has finished (used to notice a crashed service).
async fn wait_finished(service: &Service) {
    while !service.task.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stand-in members: heartbeat beacons named `stand-in-1`, `stand-in-2`, ...
struct StandIns {
    beacon: Beacon,
    client: async_nats::Client,
    interval: Duration,
    running: Vec<Service>,
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
            self.running
                .push(Service::spawn("stand-in", |stop| async move {
                    beacon.run(member, interval, stopped(stop)).await?;
                    Ok(())
                }));
        }
        while self.running.len() > count {
            if let Some(service) = self.running.pop() {
                // Stopping makes the beacon send its goodbye; don't wait here.
                let _ = service.stop.send(true);
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + STOP_WITHIN;
                    if let Err(e) = service.stop_by(deadline).await {
                        tracing::warn!(error = %format!("{e:#}"), "A stand-in member failed.");
                    }
                });
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

fn print_banner(args: &UpArgs, ring: &RingName, url: &str, system: &System) {
    let dir = args.state_dir.display();
    println!(
        "\nringside is up: ring '{ring}', {} stand-in members (they only heartbeat).\n\
         \n  NATS        {url}  (store and passwords in {dir}/)\
         \n  gRPC        {grpc}  (ringside.v1.RingService: GetRing, Lookup, Successors, WatchRing)\
         \n  metrics     http://{metrics}/metrics\
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

/// Waits (at most 30 s) until the reducer answers GetRing, i.e. has caught up.
async fn wait_serving(grpc: SocketAddr, ring: &RingName) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut client = ring_client(grpc).await?;
    loop {
        match ring_state(&mut client, ring).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(e.context("the reducer did not catch up within 30 s"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
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
