//! [`ServiceError`]: the ways any service's start-up and serving fail, shared so that
//! each service's own error type keeps only what is its own.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::TelemetryError;
use crate::nats::ConnectError;

/// Why a service could not start, or stopped while serving.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A listen address could not be bound.
    #[error("binding the {what} address {addr}")]
    Bind {
        /// Which listener ("metrics", "gRPC", "api").
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A server failed while running.
    #[error("the {what} server failed")]
    Serve {
        /// Which server.
        what: &'static str,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Connecting to NATS failed.
    #[error("connecting to NATS")]
    Nats(#[from] ConnectError),
    /// The metrics could not be set up.
    #[error("setting up metrics")]
    Telemetry(#[from] TelemetryError),
}

impl ServiceError {
    /// A [`ServiceError::Serve`] for the server `what`.
    pub fn serve(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Serve {
            what,
            source: source.into(),
        }
    }
}

/// Binds the listener `what` on `addr` (port 0 picks a free one) and returns it with
/// the address it got.
pub async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), ServiceError> {
    let err = |source| ServiceError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}
