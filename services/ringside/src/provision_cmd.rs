//! `ringside provision`: creates or updates the streams and buckets (the definitions
//! in `nats/`, built into the binary) on a NATS server, as `ringside up` does locally
//! and the Kubernetes Job does in a cluster. Run as `admin`; idempotent.

use anyhow::Context as _;
use clap::Args;
use ringside_events::{Definitions, provision};

use crate::nats_args::NatsArgs;

/// `ringside provision`
#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Copies of every stream and bucket (3 on a three-server cluster).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: u8,
}

/// Provisions and prints what was created, updated or left as it was.
pub(crate) fn run(args: ProvisionArgs, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    crate::service::block_on(async {
        let client = args.nats.connect().await?;
        let definitions = Definitions::builtin()?.with_replicas(usize::from(args.replicas));
        let done = provision(&async_nats::jetstream::new(client), &definitions)
            .await
            .context("cannot provision the streams and buckets")?;
        for p in done {
            writeln!(out, "{}: {:?}", p.stream, p.outcome)?;
        }
        Ok(())
    })
}
