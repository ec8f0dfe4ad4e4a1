//! Connecting to NATS as a service user, with a readiness condition (`nats`) that
//! follows the connection: a service that cannot reach NATS says so on `/readyz`.

use std::time::Duration;

use ringside_events::ServiceUser;

use crate::readiness::{Condition, Readiness};

/// Why a service could not connect.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}")]
pub struct ConnectError {
    /// The server URL.
    pub url: String,
    /// The client's error.
    #[source]
    pub source: async_nats::ConnectError,
}

/// Connects to `url` as `user` (with its password, or without credentials when
/// `None`); registers a `nats` condition on `readiness` that holds while connected.
/// The client reconnects by itself; the condition follows.
pub async fn connect(
    user: ServiceUser,
    password: Option<String>,
    url: &str,
    readiness: &Readiness,
) -> Result<async_nats::Client, ConnectError> {
    let options = match password {
        Some(password) => user.connect_options(password),
        None => async_nats::ConnectOptions::new().name(format!("ringside-{}", user.name())),
    };
    connect_with(options, url, readiness.condition("nats")).await
}

/// [`connect`] with options of the caller's.
pub async fn connect_with(
    options: async_nats::ConnectOptions,
    url: &str,
    connected: Condition,
) -> Result<async_nats::Client, ConnectError> {
    let condition = connected.clone();
    let client = options
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let condition = condition.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("Connected to NATS.");
                        condition.set(true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("Lost the connection to NATS; not ready until it is back.");
                        condition.set(false);
                    }
                    _ => {}
                }
            }
        })
        .connect(url)
        .await
        .map_err(|source| ConnectError {
            url: url.to_owned(),
            source,
        })?;
    connected.set(true);
    Ok(client)
}
