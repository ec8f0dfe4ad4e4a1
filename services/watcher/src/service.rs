//! [`Watcher`]: a membership source as a service of the kit. Both sources run the same
//! way: bind the metrics address, then serve `/livez`, `/readyz` and `/metrics` there
//! (the kit's router) while the source runs; what differs is the [`Source`].

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use ringside_kit::{ConfigError, Readiness, Schema, ServiceError, Telemetry};
use tokio::net::TcpListener;

use crate::WatcherError;

/// A membership source, as a [`Watcher`] runs it.
pub trait Source: Sized + Send + 'static {
    /// Its settings.
    const SCHEMA: &'static Schema;
    /// Its parsed configuration.
    type Config: Send + 'static;

    /// Parses and checks the configuration map.
    fn config(map: &BTreeMap<String, String>) -> Result<Self::Config, ConfigError>;

    /// Where `/livez`, `/readyz` and `/metrics` are served.
    fn metrics_addr(config: &Self::Config) -> SocketAddr;

    /// The source, its readiness conditions added to `readiness` and its instruments
    /// made on `telemetry`; nothing runs yet.
    fn new(config: Self::Config, readiness: &Readiness, telemetry: &Telemetry) -> Self;

    /// Publishes the ring's membership until `shutdown` completes (then returns `Ok`)
    /// or a fatal error.
    fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> impl Future<Output = Result<(), WatcherError>> + Send;
}

/// A membership source with its metrics address bound, not yet running.
#[derive(Debug)]
pub struct Watcher<S> {
    source: S,
    listener: TcpListener,
    addr: SocketAddr,
    readiness: Readiness,
    telemetry: Telemetry,
}

impl<S: Source> Watcher<S> {
    /// Binds the metrics address (port 0 picks a free one) and sets up the source.
    pub async fn bind(config: S::Config) -> Result<Self, WatcherError> {
        let addr = S::metrics_addr(&config);
        let (listener, bound) = ringside_kit::error::bind("metrics", addr).await?;
        let telemetry = Telemetry::new(crate::NAME).map_err(ServiceError::from)?;
        let readiness = Readiness::new();
        telemetry.export_readiness(&readiness);
        Ok(Watcher {
            source: S::new(config, &readiness, &telemetry),
            listener,
            addr: bound,
            readiness,
            telemetry,
        })
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The readiness `/readyz` answers from.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The source.
    pub(crate) fn source(&self) -> &S {
        &self.source
    }

    /// Runs the source until `shutdown` completes or a fatal error, serving the probes
    /// until it ends. Both run in the caller's task: dropping the future stops both.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), WatcherError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = ringside_kit::http::serve(
            self.listener,
            ringside_kit::http::router(&self.readiness, &self.telemetry),
            async move {
                // A dropped sender also means stop.
                let _ = stopped.await;
            },
        );
        let source = async move {
            let result = self.source.run(shutdown).await;
            let _ = stop.send(());
            result
        };
        let (served, result) = tokio::join!(http, source);
        result?;
        served.map_err(|e| ServiceError::serve("metrics", e).into())
    }
}

impl<S: Source> ringside_kit::Service for Watcher<S> {
    const NAME: &'static str = crate::NAME;
    const SCHEMA: &'static Schema = S::SCHEMA;
    type Config = S::Config;
    type Error = WatcherError;

    fn config(map: &BTreeMap<String, String>) -> Result<S::Config, ConfigError> {
        S::config(map)
    }

    async fn bind(config: S::Config) -> Result<Self, WatcherError> {
        Watcher::bind(config).await
    }

    fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![("metrics", self.addr)]
    }

    async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WatcherError> {
        Watcher::run(self, shutdown).await
    }
}

/// Checks that `S` refuses each `(key, value)` as an invalid value of that key.
#[cfg(test)]
pub(crate) fn assert_invalid<S: Source>(pairs: &[(&'static str, &str)]) {
    for (key, value) in pairs {
        let map = ringside_testkit::settings(&[(key, value)]);
        match S::config(&map) {
            Err(ConfigError::Invalid { key: k, .. }) if k == *key => {}
            Err(other) => panic!("{key}={value}: {other}"),
            Ok(_) => panic!("{key}={value} was taken"),
        }
    }
}
