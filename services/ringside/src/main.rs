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
//! - `reducer_cmd`: `ringside reducer`, the ring reducer service.
//! - `nats_args`: the NATS connection flags of `tail` and `replay`.
//! - `output`: the `--output table|json` switch shared by the tools.

mod nats_args;
mod output;
mod reducer_cmd;
mod replay;
mod ring_cmd;
mod tail_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// The ring reducer service: folds membership into the ring, serves RingService.
    Reducer(reducer_cmd::ReducerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ring(args) => ring_cmd::run(args, &mut std::io::stdout().lock()),
        Command::Tail(args) => tail_cmd::run(args, &mut std::io::stdout().lock()),
        Command::Replay(args) => replay::run(args, &mut std::io::stdout().lock()),
        Command::Reducer(args) => reducer_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
