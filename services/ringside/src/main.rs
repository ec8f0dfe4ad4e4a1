//! The `ringside` binary: one binary, many targets.
//!
//! `main` only parses the command line and dispatches; each command lives in its own
//! module and returns `anyhow::Result`, so errors reach the user as one clear line and
//! a non-zero exit code.
//!
//! # Layout
//! - `ring_cmd`: `ringside ring lookup|plan`, what-if planning without any server.
//! - `tail_cmd`: `ringside tail`, the ring's events live, decoded.
//! - `replay`: `ringside replay ...`, post-mortems from the stream or an export.
//! - `load`: `ringside load`, keyed traffic from many client addresses, and `--verify`.
//! - `services`: `ringside <service>` (reducer, watcher) and the list `up` supervises.
//! - `provision`: `ringside provision`, the streams and buckets on a server (a
//!   Kubernetes Job runs it).
//! - `up`: `ringside up` (the whole system locally) and `ringside scale`.
//! - `supervisor`: the child processes `up` runs its services as.
//! - `local`: the state directory `ringside up` keeps and the other commands read.
//! - `service`: the runtime of `up`, `scale` and the tools.
//! - `nats_args`: the NATS connection flags of `tail` and `replay`.
//! - `output`: the `--output table|json` switch shared by the tools.
//!
//! # Memory
//! The global allocator is mimalloc, not glibc's malloc. At 1000 members the reducer's
//! fold allocates and frees megabytes per epoch (a new slot vector, the event, member
//! details) while about 6 MB stay live; glibc kept what was freed (its main arena at
//! the start-up peak, an arena per thread on top): about 35 MB of a 53 MB RSS. mimalloc
//! hands freed pages back within a second; docs/reducer.md ("Memory") has the figures.

mod autoscale;
mod load;
mod local;
mod nats_args;
mod output;
mod prometheus;
mod provision;
mod replay;
mod ring_cmd;
mod service;
mod services;
mod supervisor;
mod tail_cmd;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The process's allocator (see the module docs, "Memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringside: a consistent-hash ring service that explains every rebalance.
#[derive(Debug, Parser)]
#[command(name = "ringside", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Every target of the binary.
#[derive(Debug, Subcommand)]
enum Command {
    /// What-if planning on a ring computed locally (no server needed).
    Ring(ring_cmd::RingArgs),
    /// The ring's events as they arrive, decoded, one line each.
    Tail(tail_cmd::TailArgs),
    /// Post-mortems: the ring at any point, a key's owners, diffs, export, verify.
    Replay(replay::ReplayArgs),
    /// A long-running service, as it runs in a pod.
    #[command(flatten)]
    Service(services::ServiceCommand),
    /// Run the whole system locally: nats-server, reducer, heartbeat watcher, members.
    Up(up::UpArgs),
    /// Keyed PUT/GET traffic to the ring's nodes from many client addresses; `--verify`
    /// checks a recorded run's acknowledged writes.
    Load(load::LoadArgs),
    /// Change the number of stand-in members of the running `ringside up`.
    Scale(up::ScaleArgs),
    /// Create or update the streams and KV buckets on a NATS server, as `admin`.
    Provision(provision::ProvisionArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ring(args) => ring_cmd::run(args, &mut std::io::stdout().lock()),
        Command::Tail(args) => tail_cmd::run(args, &mut std::io::stdout().lock()),
        Command::Replay(args) => replay::run(args, &mut std::io::stdout().lock()),
        Command::Service(service) => service.run(),
        Command::Up(args) => {
            ringside_kit::run::init_logs();
            service::block_on(up::up(args))
        }
        Command::Scale(args) => service::block_on(up::scale(args)),
        Command::Load(args) => load::run(args, &mut std::io::stdout().lock()),
        Command::Provision(args) => service::block_on(provision::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
