//! [`Service`]: what a long-running service gives the binary, so that every service
//! runs the same way ([`main`]): settings from the environment and flags, logs, bound
//! listeners announced on stdout, then `run` until SIGTERM or SIGINT; and
//! [`InProcess`], the same service started inside a running runtime (benchmarks that
//! run a whole system in one process).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use crate::settings::{ConfigError, Schema};

/// A ringside service, as `ringside <name>` runs it in a pod and `ringside up` runs it
/// locally.
pub trait Service: Sized + Send + 'static {
    /// Its name: the `ringside <name>` command, the metric prefix, the announcement.
    const NAME: &'static str;
    /// Its settings.
    const SCHEMA: &'static Schema;
    /// Its parsed configuration.
    type Config: Send;
    /// Why it stops.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Parses and checks the configuration map.
    fn config(map: &BTreeMap<String, String>) -> Result<Self::Config, ConfigError>;

    /// Binds its listeners (port 0 picks a free one); nothing runs yet.
    fn bind(config: Self::Config) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// The bound listeners, by name (`metrics`, `grpc`), for the announcement.
    fn listeners(&self) -> Vec<(&'static str, SocketAddr)>;

    /// Runs until `shutdown` completes (then stops cleanly and returns `Ok`) or a
    /// fatal error.
    fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Why `ringside <service>` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MainError {
    /// The configuration was refused (nothing started).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The async runtime could not start, or stdout could not be written.
    #[error("{what}")]
    Io {
        /// What failed.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The service failed.
    #[error("the {service} failed")]
    Service {
        /// Which.
        service: &'static str,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Runs service `S` with the configuration `map`: parse (before anything starts), logs,
/// bind, announce (`<name> listening metrics=... grpc=...` on stdout), run until SIGTERM
/// or SIGINT.
pub fn main<S: Service>(map: &BTreeMap<String, String>) -> Result<(), MainError> {
    let config = S::config(map)?;
    crate::run::init_logs();
    let runtime = tokio::runtime::Runtime::new().map_err(|source| MainError::Io {
        what: "cannot start the async runtime",
        source,
    })?;
    let failed = |source: S::Error| MainError::Service {
        service: S::NAME,
        source: Box::new(source),
    };
    runtime.block_on(async {
        let service = S::bind(config).await.map_err(failed)?;
        crate::run::announce(S::NAME, &service.listeners()).map_err(|source| MainError::Io {
            what: "cannot write the listening line to stdout",
            source,
        })?;
        service.run(crate::run::signalled()).await.map_err(failed)
    })
}

/// A service started inside this process's runtime: its bound listeners, and a stop
/// that completes its shutdown future and waits for it to end.
#[derive(Debug)]
pub struct InProcess<E> {
    name: &'static str,
    listeners: Vec<(&'static str, SocketAddr)>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), E>>,
}

/// Why an [`InProcess`] service did not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum InProcessError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Binding or running failed.
    #[error("the {service} failed")]
    Service {
        /// Which.
        service: &'static str,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Its task panicked or was cancelled.
    #[error("the {0} task did not finish")]
    Task(&'static str),
}

impl<E: std::error::Error + Send + Sync + 'static> InProcess<E> {
    /// Parses `map`, binds and spawns service `S` on the current runtime.
    pub async fn start<S: Service<Error = E>>(
        map: &BTreeMap<String, String>,
    ) -> Result<Self, InProcessError> {
        let config = S::config(map)?;
        let service = S::bind(config).await.map_err(|e| InProcessError::Service {
            service: S::NAME,
            source: Box::new(e),
        })?;
        let listeners = service.listeners();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.run(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            name: S::NAME,
            listeners,
            stop,
            task,
        })
    }

    /// The address of listener `name` (`api`, `metrics`, `grpc`), if it has one.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find_map(|(n, a)| (*n == name).then_some(*a))
    }

    /// Asks it to stop (its shutdown future completes) and waits until it has.
    pub async fn stop(self) -> Result<(), InProcessError> {
        let service = self.name;
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|_| InProcessError::Task(service))?
            .map_err(|e| InProcessError::Service {
                service,
                source: Box::new(e),
            })
    }
}

/// What every service's `run` starts from: its metrics (with `ringside_<name>_ready`),
/// its readiness (holding the `nats` condition) and its NATS connection as its user.
#[derive(Debug)]
pub struct Started {
    /// Its metrics.
    pub telemetry: crate::Telemetry,
    /// Its readiness; the service adds its own conditions.
    pub readiness: crate::Readiness,
    /// Its connection (readiness follows it).
    pub nats: async_nats::Client,
}

/// Starts what every service runs on ([`Started`]): metrics named for `service`, a
/// readiness exported as a metric, and a connection to `url` as `user`.
pub async fn start(
    service: &'static str,
    user: ringside_events::ServiceUser,
    password: Option<String>,
    url: &str,
) -> Result<Started, crate::ServiceError> {
    let telemetry = crate::Telemetry::new(service)?;
    let readiness = crate::Readiness::new();
    telemetry.export_readiness(&readiness);
    let nats = crate::nats::connect(user, password, url, &readiness).await?;
    Ok(Started {
        telemetry,
        readiness,
        nats,
    })
}
