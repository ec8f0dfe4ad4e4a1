//! A real `nats-server` for tests: free loopback port, temporary JetStream store,
//! SIGKILL and restart, cleanup on drop.
//!
//! # How it works
//! The process is a [`ringside_natsd::LocalServer`], the same supervised child `ringside
//! up` runs (under `setpriv --pdeathsig KILL`, `GOMEMLIMIT`, readiness and the port it
//! picked read from its log). On top of it: a temporary store and log, removed on drop;
//! restarts on the same port and store; and a watchdog thread that SIGKILLs the server
//! once [`ServerOptions::max_lifetime`] has passed, whatever the test does.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringside_events::{Definitions, ServiceUser, provision};
use ringside_natsd::log::read_from;
use ringside_natsd::{LocalServer, NatsdError, ServerConfig};
use tempfile::TempDir;

pub use ringside_natsd::{NATS_SERVER_ENV, SERVICE_USERS, STORE_DIR_ENV};

/// Per-service passwords for `nats/local.conf`, generated per server
/// (see [`ringside_natsd::Passwords`]).
pub type LocalAuth = ringside_natsd::Passwords;

/// Errors of the test harness. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// No usable `nats-server` binary (missing, too old, or not answering), or the
    /// server did not start (its error carries the log's tail).
    #[error(transparent)]
    Server(#[from] NatsdError),
    /// Starting a process, reading its log or making a directory failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// [`NatsServer::password`] named a user the server was not started with.
    #[error("no credentials for user '{0}' (start the server with ServerOptions::local_conf)")]
    UnknownUser(String),
    /// The server is not running (killed and not restarted).
    #[error("nats-server is not running")]
    NotRunning,
    /// Provisioning the builtin streams and buckets failed.
    #[error("provisioning the builtin streams and buckets failed")]
    Provision(#[source] ringside_events::provision::ProvisionError),
    /// Connecting a client failed.
    #[error("connecting to {url} failed")]
    Connect {
        /// The server URL.
        url: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TestkitError {
    let what = what.into();
    move |source| TestkitError::Io { what, source }
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// A config file passed with `-c`. The address and port flags still win; the file
    /// must enable JetStream itself, with `store_dir: $RINGSIDE_NATS_STORE_DIR`.
    pub config_file: Option<PathBuf>,
    /// Credentials for `connect_as`; their environment variables are passed to the server.
    pub auth: Option<LocalAuth>,
    /// Extra environment for the server process only.
    pub env: BTreeMap<String, String>,
    /// How long to wait for "Server is ready".
    pub startup_timeout: Duration,
    /// The supervisor SIGKILLs the server after this long, whatever the test does.
    pub max_lifetime: Duration,
    /// Soft memory cap for the server's Go runtime (`GOMEMLIMIT`), in bytes.
    pub memory_limit_bytes: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            config_file: None,
            auth: None,
            env: BTreeMap::new(),
            startup_timeout: Duration::from_secs(15),
            max_lifetime: Duration::from_secs(15 * 60),
            memory_limit_bytes: 1 << 30,
        }
    }
}

impl ServerOptions {
    /// Options for `nats/local.conf` with freshly generated service passwords.
    pub fn local_conf() -> Result<Self, TestkitError> {
        Ok(Self {
            config_file: Some(crate::workspace_root().join("nats").join("local.conf")),
            auth: Some(LocalAuth::generate()?),
            ..Self::default()
        })
    }
}

/// Finds the `nats-server` binary: `$RINGSIDE_NATS_SERVER`, else
/// `<workspace>/.venv/bin/nats-server`, else `PATH`; checks its version.
pub fn server_binary() -> Result<PathBuf, TestkitError> {
    Ok(ringside_natsd::find_binary(&[&crate::workspace_root()])?)
}

/// SIGKILLs the server whose pid it holds once the lifetime has passed; ends when told
/// (or when its sender is dropped).
struct Watchdog {
    pid: Arc<AtomicI32>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn start(lifetime: Duration) -> Result<Self, TestkitError> {
        let pid = Arc::new(AtomicI32::new(0));
        let (stop, stopped) = mpsc::channel::<()>();
        let watched = Arc::clone(&pid);
        let thread = std::thread::Builder::new()
            .name("nats-server-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(lifetime) {
                    eprintln!(
                        "testkit: nats-server exceeded its max lifetime of {lifetime:?}; killing it."
                    );
                    sigkill(watched.load(Ordering::Relaxed));
                }
            })
            .map_err(io_err("spawning the watchdog thread"))?;
        Ok(Self {
            pid,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn watch(&self, pid: Option<u32>) {
        let pid = pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        self.pid.store(pid, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// SIGKILL to `pid` (0: nobody).
fn sigkill(pid: i32) {
    if pid > 0 {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) state ...`: the state follows the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z"))
}

/// A running (or killed, awaiting restart) `nats-server` with its own store.
pub struct NatsServer {
    config: ServerConfig,
    options: ServerOptions,
    server: Option<LocalServer>,
    watchdog: Watchdog,
    // Dropped last (fields drop in order, after Drop::drop has killed the process).
    _dir: TempDir,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("port", &self.config.port)
            .field("running", &self.server.is_some())
            .field("store", &self.config.store_dir)
            .finish()
    }
}

impl NatsServer {
    /// Starts a plain server (JetStream on, no auth) with default options.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with_config(ServerOptions::default()).await
    }

    /// Starts a server with `nats/local.conf` and generated service passwords.
    pub async fn start_local_conf() -> Result<Self, TestkitError> {
        Self::start_with_config(ServerOptions::local_conf()?).await
    }

    /// Starts a server with the given options.
    pub async fn start_with_config(options: ServerOptions) -> Result<Self, TestkitError> {
        let binary = server_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("ringside-nats-")
            .tempdir()
            .map_err(io_err("creating the server's temp dir"))?;
        let config = ServerConfig {
            binary,
            config_file: options.config_file.clone(),
            store_dir: dir.path().join("jetstream"),
            log_file: dir.path().join("nats-server.log"),
            port: 0,
            passwords: options.auth.clone(),
            startup_timeout: options.startup_timeout,
            memory_limit_bytes: options.memory_limit_bytes,
            env: options.env.clone().into_iter().collect(),
        };
        let mut server = Self {
            watchdog: Watchdog::start(options.max_lifetime)?,
            config,
            options,
            server: None,
            _dir: dir,
        };
        server.launch().await?;
        Ok(server)
    }

    async fn launch(&mut self) -> Result<(), TestkitError> {
        let server = LocalServer::start(&self.config).await?;
        // Restarts keep the port the first start picked.
        self.config.port = server.port();
        self.watchdog.watch(server.pid());
        self.server = Some(server);
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.config.port)
    }

    /// The client port (stable across restarts).
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(LocalServer::pid)
    }

    /// The JetStream store directory (kept across restarts, removed on drop).
    pub fn store_dir(&self) -> &Path {
        &self.config.store_dir
    }

    /// Whether the server process is supposed to be running.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// The whole server log so far (all starts).
    pub fn log(&self) -> String {
        read_from(&self.config.log_file, 0)
    }

    /// SIGKILLs the server and reaps it; the store and port stay for [`Self::restart`].
    pub async fn kill(&mut self) -> Result<(), TestkitError> {
        self.watchdog.watch(None);
        if let Some(mut server) = self.server.take() {
            server.kill().await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and store (killing it first if needed).
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill().await?;
        self.launch().await
    }

    /// The password of a service user (servers started with [`ServerOptions::local_conf`]).
    pub fn password(&self, user: &str) -> Result<&str, TestkitError> {
        self.options
            .auth
            .as_ref()
            .and_then(|a| a.password(user))
            .ok_or_else(|| TestkitError::UnknownUser(user.to_string()))
    }

    /// Connects with the given options, plus a fast reconnect policy suited to tests that
    /// kill and restart the server.
    pub async fn connect_with(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::Client, TestkitError> {
        if self.server.is_none() {
            return Err(TestkitError::NotRunning);
        }
        let url = self.url();
        options
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(20 * attempts.min(10) as u64)
            })
            .connection_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .map_err(|source| TestkitError::Connect { url, source })
    }

    /// Connects as a service user of `nats/local.conf`: its generated password and its
    /// inbox prefix (servers started with [`ServerOptions::local_conf`]).
    pub async fn connect_as(&self, user: ServiceUser) -> Result<async_nats::Client, TestkitError> {
        let password = self.password(user.name())?.to_owned();
        self.connect_with(user.connect_options(password)).await
    }

    /// Connects as `admin` (without credentials on a server without accounts) and
    /// provisions the builtin streams and buckets (`nats/`), as `ringside up` does: the
    /// usual start of a test that stores events.
    pub async fn connect_provisioned(&self) -> Result<async_nats::Client, TestkitError> {
        let admin = match self.options.auth {
            Some(_) => self.connect_as(ServiceUser::Admin).await?,
            None => self.connect().await?,
        };
        let definitions = Definitions::builtin().map_err(TestkitError::Provision)?;
        provision(&async_nats::jetstream::new(admin.clone()), &definitions)
            .await
            .map_err(TestkitError::Provision)?;
        Ok(admin)
    }

    /// Connects without credentials (servers started without an auth config).
    pub async fn connect(&self) -> Result<async_nats::Client, TestkitError> {
        self.connect_with(async_nats::ConnectOptions::new()).await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Kill it now and wait (bounded) until it is gone, so no stray server outlives
        // the test; the runtime reaps the zombie.
        let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        sigkill(pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_binary_is_found() {
        let found = server_binary().unwrap();
        assert!(found.ends_with("nats-server"), "{}", found.display());
    }
}
