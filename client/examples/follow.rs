//! A tiny service embedding the ring client: it follows a ring as one of its members
//! would, and prints who owns some keys and which ranges the member gained and lost
//! each time the ring changes. Ctrl-C stops it cleanly.
//!
//! ```sh
//! RINGSIDE_NATS_URL=nats://127.0.0.1:4222 RINGSIDE_RING=default \
//! RINGSIDE_NATS_PASSWORD_NODE=... \
//!   cargo run -p ringside-client --example follow -- node-1 user:1 user:2 cart:9
//! ```
//!
//! The first argument is the member whose ranges to print, the others are keys to look
//! up (default: `user:1 user:2 user:3`). With `RINGSIDE_NATS_PASSWORD_NODE` set it
//! connects as the `node` user (what `ringside up` sets up), else without credentials.

use std::error::Error;

use ringside_client::{Change, ClientConfig, KeyRange, RingView, follow};
use ringside_events::{RingName, ServiceUser};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let member = args.next().ok_or("usage: follow MEMBER [KEY ...]")?;
    let mut keys: Vec<String> = args.collect();
    if keys.is_empty() {
        keys = ["user:1", "user:2", "user:3"].map(String::from).to_vec();
    }
    let url = std::env::var("RINGSIDE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let ring = RingName::new(std::env::var("RINGSIDE_RING").unwrap_or_else(|_| "default".into()))?;
    let options = match std::env::var(ServiceUser::Node.password_env()) {
        Ok(password) => ServiceUser::Node.connect_options(password),
        Err(_) => async_nats::ConnectOptions::new(),
    };
    let nats = options.connect(&url).await?;

    // The two halves: the follower runs on its own task until Ctrl-C; the client
    // answers from the ring it keeps.
    let (follower, client) = follow(nats, ClientConfig::new(ring).label(member.clone()));
    let following = tokio::spawn(follower.run(async {
        let _ = tokio::signal::ctrl_c().await;
    }));
    let mut changes = client.subscribe(Some(&member));
    client.ready().await?;
    while let Some(change) = changes.next().await {
        match change {
            Change::Synced { ring, reason } => {
                println!(
                    "synced at epoch {} ({reason:?}): reconcile everything",
                    ring.epoch()
                );
                print_owners(&ring, &keys);
            }
            Change::Rebalanced {
                rebalance,
                gained,
                lost,
            } => {
                println!(
                    "epoch {}: {} moved, {member} gained {} and lost {}",
                    rebalance.epoch(),
                    rebalance.moved().count(),
                    ranges(&gained),
                    ranges(&lost)
                );
                // The ring after this epoch, or a later one if the follower moved on.
                if let Some(ring) = client.ring() {
                    print_owners(&ring, &keys);
                }
            }
        }
    }
    // The subscription ends when the follower has stopped.
    following.await?;
    Ok(())
}

fn print_owners(ring: &RingView, keys: &[String]) {
    for key in keys {
        match ring.lookup(key.as_bytes()) {
            Ok(owner) => println!("  {key} -> {} at {}", owner.id, owner.address),
            Err(e) => println!("  {key} -> none ({e})"),
        }
    }
}

fn ranges(ranges: &[KeyRange]) -> String {
    let share: u128 = ranges.iter().map(KeyRange::width).sum();
    format!(
        "{} range(s), {:.3} of the ring",
        ranges.len(),
        share as f64 / 2f64.powi(64)
    )
}
