//! A real `nats-server` for tests: free loopback port, temporary JetStream store,
//! SIGKILL and restart, cleanup on drop.
//!
//! # How it works
//! Each [`NatsServer`] owns a supervisor thread that spawns the process, kills it and
//! reaps it. The process runs under `setpriv --pdeathsig KILL` when `setpriv` exists,
//! so it dies with that thread even if the test process is killed; the supervisor also
//! SIGKILLs it once [`ServerOptions::max_lifetime`] has passed, and the Go runtime is
//! capped with `GOMEMLIMIT`. Readiness is read from the server's log ("Server is ready"),
//! which also gives the port the server picked (`-p -1`) on the first start; restarts
//! reuse that port and the same store.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringside_events::{Definitions, ServiceUser, provision};
use ringside_natsd::log::{Startup, read_from, startup, tail};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub use ringside_natsd::{NATS_SERVER_ENV, SERVICE_USERS, STORE_DIR_ENV};

/// Per-service passwords for `nats/local.conf`, generated per server
/// (see [`ringside_natsd::Passwords`]).
pub type LocalAuth = ringside_natsd::Passwords;

/// Errors of the test harness. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// No usable `nats-server` binary (missing, too old, or not answering).
    #[error(transparent)]
    Binary(#[from] ringside_natsd::NatsdError),
    /// Starting a process, reading its log or making a directory failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The server did not report readiness in time (or exited first).
    #[error("nats-server not ready after {waited:?}: {reason}\n--- log tail ---\n{log_tail}")]
    NotReady {
        /// How long the harness waited.
        waited: Duration,
        /// Why it gave up (timeout, or the exit status).
        reason: String,
        /// The end of the server's log.
        log_tail: String,
    },
    /// The supervisor thread is gone (lifetime exceeded, or it panicked).
    #[error("the nats-server supervisor has stopped (max lifetime exceeded?)")]
    SupervisorGone,
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

enum Request {
    Spawn {
        program: PathBuf,
        args: Vec<OsString>,
        env: Vec<(String, String)>,
        log: File,
        reply: oneshot::Sender<io::Result<u32>>,
    },
    Kill {
        reply: oneshot::Sender<io::Result<Option<ExitStatus>>>,
    },
    Status {
        reply: oneshot::Sender<Option<ExitStatus>>,
    },
}

/// Owns the child process; see the module docs for why a thread.
fn supervise(requests: mpsc::Receiver<Request>, max_lifetime: Duration) {
    let deadline = Instant::now() + max_lifetime;
    let mut child: Option<Child> = None;
    let pdeathsig = Path::new("/usr/bin/setpriv").is_file();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match requests.recv_timeout(left) {
            Ok(Request::Spawn {
                program,
                args,
                env,
                log,
                reply,
            }) => {
                let result = spawn(&program, &args, env, log, pdeathsig).map(|c| {
                    let pid = c.id();
                    child = Some(c);
                    pid
                });
                let _ = reply.send(result);
            }
            Ok(Request::Kill { reply }) => {
                let _ = reply.send(kill(&mut child));
            }
            Ok(Request::Status { reply }) => {
                let status = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                let _ = reply.send(status);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "testkit: nats-server exceeded its max lifetime of {max_lifetime:?}; killing it."
                );
                let _ = kill(&mut child);
                return;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = kill(&mut child);
                return;
            }
        }
    }
}

fn spawn(
    program: &Path,
    args: &[OsString],
    env: Vec<(String, String)>,
    log: File,
    pdeathsig: bool,
) -> io::Result<Child> {
    let mut cmd = if pdeathsig {
        let mut c = Command::new("/usr/bin/setpriv");
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.spawn()
}

fn kill(child: &mut Option<Child>) -> io::Result<Option<ExitStatus>> {
    match child.take() {
        Some(mut c) => {
            // SIGKILL on unix; an already exited child is fine, wait() reaps it either way.
            let _ = c.kill();
            c.wait().map(Some)
        }
        None => Ok(None),
    }
}

/// A running (or killed, awaiting restart) `nats-server` with its own store.
pub struct NatsServer {
    requests: Option<mpsc::Sender<Request>>,
    supervisor: Option<JoinHandle<()>>,
    binary: PathBuf,
    options: ServerOptions,
    port: Option<u16>,
    pid: Option<u32>,
    running: bool,
    log_path: PathBuf,
    store: PathBuf,
    // Dropped last (fields drop in order, after Drop::drop has killed the process).
    _dir: TempDir,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("port", &self.port)
            .field("running", &self.running)
            .field("store", &self.store)
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
        let store = dir.path().join("jetstream");
        std::fs::create_dir_all(&store).map_err(io_err("creating the JetStream store dir"))?;
        let (tx, rx) = mpsc::channel();
        let lifetime = options.max_lifetime;
        let supervisor = std::thread::Builder::new()
            .name("nats-server-supervisor".into())
            .spawn(move || supervise(rx, lifetime))
            .map_err(io_err("spawning the supervisor thread"))?;
        let mut server = Self {
            requests: Some(tx),
            supervisor: Some(supervisor),
            binary,
            options,
            port: None,
            pid: None,
            running: false,
            log_path: dir.path().join("nats-server.log"),
            store,
            _dir: dir,
        };
        server.launch().await?;
        Ok(server)
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, TestkitError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or(TestkitError::SupervisorGone)?
            .send(make(reply))
            .map_err(|_| TestkitError::SupervisorGone)?;
        answer.await.map_err(|_| TestkitError::SupervisorGone)
    }

    async fn launch(&mut self) -> Result<(), TestkitError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io_err("opening the server log"))?;
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let port = self
            .port
            .map_or_else(|| "-1".to_string(), |p| p.to_string());
        let mut args: Vec<OsString> = ["-a", "127.0.0.1", "-p", &port].map(OsString::from).into();
        match &self.options.config_file {
            // A config file sets up JetStream itself (the server refuses a second
            // store_dir); it finds the store in $RINGSIDE_NATS_STORE_DIR.
            Some(config) => args.extend(["-c".into(), config.clone().into_os_string()]),
            None => {
                args.extend(["-js", "-sd"].map(OsString::from));
                args.push(self.store.clone().into_os_string());
            }
        }
        let mut env: Vec<(String, String)> = vec![
            (
                "GOMEMLIMIT".into(),
                self.options.memory_limit_bytes.to_string(),
            ),
            (STORE_DIR_ENV.into(), self.store.display().to_string()),
        ];
        if let Some(auth) = &self.options.auth {
            env.extend(auth.env());
        }
        env.extend(self.options.env.clone());
        let program = self.binary.clone();
        let pid = self
            .request(|reply| Request::Spawn {
                program,
                args,
                env,
                log,
                reply,
            })
            .await?
            .map_err(io_err(format!("spawning {}", self.binary.display())))?;
        self.pid = Some(pid);
        self.running = true;
        let port = self.wait_ready(log_offset).await?;
        self.port = Some(port);
        Ok(())
    }

    /// Polls the log (from this start's offset) for readiness and the client port.
    async fn wait_ready(&mut self, offset: u64) -> Result<u16, TestkitError> {
        let started = Instant::now();
        loop {
            let text = read_from(&self.log_path, offset);
            if let Startup::Ready(port) = startup(&text) {
                return Ok(port);
            }
            let waited = started.elapsed();
            let exited = self.request(|reply| Request::Status { reply }).await?;
            if exited.is_some() || waited > self.options.startup_timeout {
                let _ = self.kill().await;
                return Err(TestkitError::NotReady {
                    waited,
                    reason: exited
                        .map_or_else(|| "timed out".to_string(), |s| format!("exited: {s}")),
                    log_tail: tail(&text, 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port.unwrap_or(0))
    }

    /// The client port (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(0)
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid.filter(|_| self.running)
    }

    /// The JetStream store directory (kept across restarts, removed on drop).
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// Whether the server process is supposed to be running.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The whole server log so far (all starts).
    pub fn log(&self) -> String {
        read_from(&self.log_path, 0)
    }

    /// SIGKILLs the server and reaps it; the store and port stay for [`Self::restart`].
    pub async fn kill(&mut self) -> Result<(), TestkitError> {
        self.running = false;
        self.request(|reply| Request::Kill { reply })
            .await?
            .map_err(io_err("killing nats-server"))?;
        Ok(())
    }

    /// Starts the server again on the same port and store (killing it first if needed).
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        if self.running {
            self.kill().await?;
        }
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
        if !self.running {
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

    /// Connects as `admin` and provisions the builtin streams and buckets (`nats/`), as
    /// `ringside up` does: the usual start of a test that stores events.
    pub async fn connect_provisioned(&self) -> Result<async_nats::Client, TestkitError> {
        let admin = self.connect_as(ServiceUser::Admin).await?;
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
        // Closing the channel makes the supervisor SIGKILL and reap the server; joining it
        // means no zombie and no stray process outlives the test.
        drop(self.requests.take());
        if let Some(handle) = self.supervisor.take() {
            let _ = handle.join();
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
