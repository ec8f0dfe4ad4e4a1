//! The `ringside` binary: one binary, many targets.
//!
//! `main` only parses the command line and dispatches; each command lives in its own
//! module and returns `anyhow::Result`, so errors reach the user as one clear line and
//! a non-zero exit code.
//!
//! # Layout
//! - `ring_cmd`: `ringside ring lookup|plan`, what-if planning without any server.
//! - `output`: the `--output table|json` switch shared by the tools.

mod output;
mod ring_cmd;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ring(args) => ring_cmd::run(args, &mut std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
