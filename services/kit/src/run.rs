//! What every long-running command shares besides settings: structured logs on
//! stderr, the stop signal as a future, and the one line a service prints once its
//! listeners are bound (`ringside up` and scripts read it to find ports picked with 0).

use std::io::Write as _;
use std::net::SocketAddr;

/// Structured logs on stderr; `RUST_LOG` filters (default `info`).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only if a subscriber is already installed, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

/// Completes at the first SIGTERM or SIGINT.
pub async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received."),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received."),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGTERM; only SIGINT stops this.");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Prints `<service> listening name=addr ...` on stdout and flushes it.
pub fn announce(service: &str, listeners: &[(&str, SocketAddr)]) -> std::io::Result<()> {
    let mut line = format!("{service} listening");
    for (name, addr) in listeners {
        line.push_str(&format!(" {name}={addr}"));
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// The listeners of an [`announce`] line of `service`, or `None` if it is not one.
pub fn parse_announcement(service: &str, line: &str) -> Option<Vec<(String, SocketAddr)>> {
    let rest = line.strip_prefix(service)?.strip_prefix(" listening")?;
    rest.split_whitespace()
        .map(|pair| {
            let (name, addr) = pair.split_once('=')?;
            Some((name.to_owned(), addr.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_parses_back() {
        let line = "reducer listening grpc=127.0.0.1:7420 metrics=127.0.0.1:9420";
        let parsed = parse_announcement("reducer", line).unwrap();
        assert_eq!(parsed[1].0, "metrics");
        assert_eq!(parsed[1].1.port(), 9420);
        assert!(parse_announcement("watcher", line).is_none());
        assert!(parse_announcement("reducer", "reducer listening grpc=nowhere").is_none());
    }
}
