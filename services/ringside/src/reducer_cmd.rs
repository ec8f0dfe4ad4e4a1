//! `ringside reducer`: the ring reducer service, as it runs in a pod.
//!
//! The configuration is one map of strings (CONVENTIONS.md #8): the process
//! environment (`RINGSIDE_*`, `HOSTNAME`) with the flags given on the command line laid
//! over it; `ReducerConfig::from_map` parses and checks it (docs/reducer.md lists every
//! key). Once its addresses are bound the command prints one line on stdout,
//!
//! ```text
//! reducer listening grpc=127.0.0.1:7420 metrics=127.0.0.1:9420
//! ```
//!
//! which scripts and tests read to find the ports it picked (`127.0.0.1:0`); logs go
//! to stderr (`RUST_LOG` filters, default `info`). SIGTERM or SIGINT: the event in hand
//! is finished, a snapshot written, and the exit code is 0.

use std::collections::BTreeMap;
use std::io::Write as _;

use clap::Args;
use ringside_reducer::config as keys;
use ringside_reducer::{Reducer, ReducerConfig};

use crate::service::{block_on, init_logs, signalled};

/// Flags of `ringside reducer`; each overrides its environment variable.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReducerArgs {
    /// NATS server URL [env: RINGSIDE_NATS_URL; default nats://127.0.0.1:4222].
    #[arg(long)]
    nats_url: Option<String>,
    /// Ring to fold [env: RINGSIDE_RING; default `default`].
    #[arg(long)]
    ring: Option<String>,
    /// Instance name, unique per running reducer [env: RINGSIDE_REDUCER_INSTANCE;
    /// default: $HOSTNAME, else random].
    #[arg(long)]
    instance: Option<String>,
    /// gRPC address [env: RINGSIDE_REDUCER_GRPC_ADDR; default 127.0.0.1:7420].
    #[arg(long)]
    grpc_addr: Option<String>,
    /// Metrics and probes address [env: RINGSIDE_REDUCER_METRICS_ADDR; default
    /// 127.0.0.1:9420].
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Token strategy of a new ring: balanced or random [env:
    /// RINGSIDE_REDUCER_STRATEGY; default balanced].
    #[arg(long)]
    strategy: Option<String>,
    /// Virtual nodes per unit of weight of a new ring [env: RINGSIDE_REDUCER_VNODES;
    /// default 160].
    #[arg(long)]
    vnodes: Option<String>,
    /// Snapshot every N epochs [env: RINGSIDE_REDUCER_SNAPSHOT_EVERY; default 100].
    #[arg(long)]
    snapshot_every: Option<String>,
    /// Per-epoch snapshots kept [env: RINGSIDE_REDUCER_SNAPSHOT_KEEP; default 50].
    #[arg(long)]
    snapshot_keep: Option<String>,
    /// Largest key Lookup and Successors accept, in bytes [env:
    /// RINGSIDE_REDUCER_MAX_KEY_BYTES; default 4096].
    #[arg(long)]
    max_key_bytes: Option<String>,
    /// Epochs a WatchRing client may lag before its stream is closed [env:
    /// RINGSIDE_REDUCER_WATCH_BUFFER; default 256].
    #[arg(long)]
    watch_buffer: Option<String>,
}

impl ReducerArgs {
    /// The flags as configuration keys (those given only).
    fn overrides(&self) -> impl Iterator<Item = (&'static str, &String)> {
        [
            (keys::KEY_NATS_URL, &self.nats_url),
            (keys::KEY_RING, &self.ring),
            (keys::KEY_INSTANCE, &self.instance),
            (keys::KEY_GRPC_ADDR, &self.grpc_addr),
            (keys::KEY_METRICS_ADDR, &self.metrics_addr),
            (keys::KEY_STRATEGY, &self.strategy),
            (keys::KEY_VNODES, &self.vnodes),
            (keys::KEY_SNAPSHOT_EVERY, &self.snapshot_every),
            (keys::KEY_SNAPSHOT_KEEP, &self.snapshot_keep),
            (keys::KEY_MAX_KEY_BYTES, &self.max_key_bytes),
            (keys::KEY_WATCH_BUFFER, &self.watch_buffer),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value.as_ref()?)))
    }
}

/// The environment's `RINGSIDE_*` and `HOSTNAME` variables with the flags over them.
fn config_map(args: &ReducerArgs) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("RINGSIDE_") || k == keys::KEY_HOSTNAME)
        .collect();
    for (key, value) in args.overrides() {
        map.insert(key.to_string(), value.clone());
    }
    map
}

/// Runs the reducer until SIGTERM or SIGINT.
pub(crate) fn run(args: ReducerArgs) -> anyhow::Result<()> {
    let config = ReducerConfig::from_map(&config_map(&args))?;
    init_logs();
    block_on(async {
        let reducer = Reducer::bind(config).await?;
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "reducer listening grpc={} metrics={}",
            reducer.grpc_addr(),
            reducer.metrics_addr()
        )?;
        stdout.flush()?;
        drop(stdout);
        reducer.run(signalled()).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReducerArgs,
    }

    #[test]
    fn flags_become_configuration_keys() {
        let cli = Cli::parse_from([
            "reducer",
            "--ring",
            "orders",
            "--grpc-addr",
            "127.0.0.1:0",
            "--snapshot-every",
            "7",
        ]);
        let map = config_map(&cli.args);
        assert_eq!(map.get(keys::KEY_RING).map(String::as_str), Some("orders"));
        assert_eq!(
            map.get(keys::KEY_GRPC_ADDR).map(String::as_str),
            Some("127.0.0.1:0")
        );
        let config = ReducerConfig::from_map(&map).unwrap();
        assert_eq!(config.snapshot_every, 7);
        assert_eq!(config.grpc_addr.port(), 0);
    }
}
