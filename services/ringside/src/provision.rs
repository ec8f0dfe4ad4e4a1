//! `ringside provision`: creates the streams and KV buckets of `nats/streams` and
//! `nats/kv` on a NATS server (or updates what differs), as the `admin` user. `ringside
//! up` does the same for its own server; in Kubernetes a Job runs this command once
//! NATS is deployed (docs/kubernetes.md).
//!
//! The server may still be starting when the Job starts (a NATS cluster elects its
//! JetStream leader after its pods are up), so a failed attempt is tried again every
//! two seconds until `--wait` has passed; only then is it an error.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use clap::Args;
use ringside_events::{Definitions, ServiceUser, provision};

/// `ringside provision`'s flags.
#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    /// NATS server URL.
    #[arg(
        long,
        env = "RINGSIDE_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// Copies of every stream and bucket: 3 on a 3-server NATS cluster (an ack then
    /// means a quorum stored the event).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: u8,
    /// How long to keep trying while the server is unreachable or JetStream not ready
    /// (`90s`, `5m`).
    #[arg(long, default_value = "120s", value_parser = parse_wait)]
    wait: Duration,
}

fn parse_wait(raw: &str) -> Result<Duration, String> {
    ringside_kit::settings::parse_duration(raw)
        .ok_or_else(|| format!("'{raw}' is not a duration (90s, 5m)"))
}

/// Provisions, printing one line per stream; the password is the `admin` user's from
/// `$RINGSIDE_NATS_PASSWORD_ADMIN` (none: connect without credentials).
pub(crate) async fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    let user = ServiceUser::Admin;
    let password = std::env::var(user.password_env()).ok();
    let defs = Definitions::builtin()?.with_replicas(usize::from(args.replicas));
    let deadline = Instant::now() + args.wait;
    loop {
        match attempt(&args.nats_url, user, password.clone(), &defs).await {
            Ok(done) => {
                for p in done {
                    println!("{}: {:?}", p.stream, p.outcome);
                }
                return Ok(());
            }
            Err(err) if Instant::now() < deadline => {
                eprintln!("ringside provision: {err:#}; trying again in 2 s.");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(err) => {
                return Err(err.context(format!(
                    "gave up provisioning {} after {:?}",
                    args.nats_url, args.wait
                )));
            }
        }
    }
}

async fn attempt(
    url: &str,
    user: ServiceUser,
    password: Option<String>,
    defs: &Definitions,
) -> anyhow::Result<Vec<ringside_events::provision::Provisioned>> {
    let options = match password {
        Some(password) => user.connect_options(password),
        None => async_nats::ConnectOptions::new(),
    };
    let client = options
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url} as '{user}'"))?;
    let done = provision(&jetstream::new(client), defs)
        .await
        .context("cannot provision the streams and buckets")?;
    Ok(done)
}
