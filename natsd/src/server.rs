//! [`LocalServer`]: `nats-server` as a supervised child process on loopback, the one
//! way this project starts a server (`ringside up` and every test, through
//! `ringside-testkit`).
//!
//! The child is tied to us ([`crate::child::tied_to_parent`], SIGKILL), so it dies
//! with us even if we are SIGKILLed; it is also killed when the handle is dropped. Its
//! Go runtime is capped with `GOMEMLIMIT`. Readiness and the port it picked (`-p -1`)
//! are read from its log ("Server is ready"). A graceful [`LocalServer::stop`] sends
//! SIGTERM (the server flushes and closes its store) and SIGKILLs after a grace period;
//! [`LocalServer::kill`] is the crash a test plays.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::log::{Startup, read_from, startup, tail};
use crate::{NatsdError, Passwords, STORE_DIR_ENV, io_err};

/// How to start a local server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The `nats-server` binary ([`crate::find_binary`]).
    pub binary: PathBuf,
    /// The config file (`nats/local.conf`), which reads the store dir and passwords
    /// from the environment this module passes; `None`: a plain server with JetStream
    /// in `store_dir` and no authentication (`-js -sd`).
    pub config_file: Option<PathBuf>,
    /// JetStream store directory (kept across runs).
    pub store_dir: PathBuf,
    /// The server's log file (appended to).
    pub log_file: PathBuf,
    /// Client port on 127.0.0.1; 0 lets the server pick a free one.
    pub port: u16,
    /// Service passwords (`nats/local.conf` reads them); `None` for a plain server.
    pub passwords: Option<Passwords>,
    /// How long to wait for "Server is ready".
    pub startup_timeout: Duration,
    /// Soft memory cap of the server's Go runtime (`GOMEMLIMIT`), in bytes.
    pub memory_limit_bytes: u64,
    /// More environment for the server process.
    pub env: Vec<(String, String)>,
}

/// A running local server.
#[derive(Debug)]
pub struct LocalServer {
    child: Child,
    port: u16,
    log_file: PathBuf,
}

impl LocalServer {
    /// Starts the server and waits until it is ready for clients.
    pub async fn start(config: &ServerConfig) -> Result<Self, NatsdError> {
        std::fs::create_dir_all(&config.store_dir)
            .map_err(io_err(format!("creating {}", config.store_dir.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log_file)
            .map_err(io_err(format!("opening {}", config.log_file.display())))?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let port = if config.port == 0 {
            "-1".to_string()
        } else {
            config.port.to_string()
        };
        // nats-server reads the store directory as a config value: a relative path such
        // as `.ringside/nats` does not parse (a leading `.` reads as a number), so it
        // always gets an absolute one.
        let store_dir = std::path::absolute(&config.store_dir).map_err(io_err(format!(
            "resolving the store directory {}",
            config.store_dir.display()
        )))?;
        let mut cmd = crate::child::tied_to_parent(&config.binary, "KILL");
        cmd.args(["-a", "127.0.0.1", "-p", &port]);
        match &config.config_file {
            // A config file sets JetStream up itself (the server refuses a second
            // store_dir); it finds the store in $RINGSIDE_NATS_STORE_DIR.
            Some(file) => cmd.arg("-c").arg(file),
            None => cmd.args(["-js", "-sd"]).arg(&store_dir),
        };
        cmd.env(STORE_DIR_ENV, &store_dir)
            .env("GOMEMLIMIT", config.memory_limit_bytes.to_string())
            .envs(config.passwords.iter().flat_map(Passwords::env))
            .envs(config.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(io_err("duplicating the log handle"))?,
            )
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(io_err(format!("starting {}", config.binary.display())))?;
        let mut server = Self {
            child,
            port: 0,
            log_file: config.log_file.clone(),
        };
        server.port = server
            .wait_ready(offset, config.port, config.startup_timeout)
            .await?;
        Ok(server)
    }

    async fn wait_ready(
        &mut self,
        offset: u64,
        asked: u16,
        timeout: Duration,
    ) -> Result<u16, NatsdError> {
        let started = Instant::now();
        loop {
            let text = read_from(&self.log_file, offset);
            match startup(&text) {
                Startup::Ready(port) => return Ok(port),
                Startup::PortInUse => {
                    let _ = self.child.kill().await;
                    return Err(NatsdError::PortInUse { port: asked });
                }
                Startup::Starting => {}
            }
            let exited = self
                .child
                .try_wait()
                .map_err(io_err("checking the nats-server process"))?;
            let waited = started.elapsed();
            if exited.is_some() || waited > timeout {
                let _ = self.child.kill().await;
                return Err(NatsdError::NotReady {
                    waited,
                    reason: exited
                        .map_or_else(|| "timed out".to_string(), |s| format!("exited: {s}")),
                    log_tail: tail(&text, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILLs the server and reaps it (a crash, for tests).
    pub async fn kill(&mut self) -> Result<(), NatsdError> {
        self.child
            .kill()
            .await
            .map_err(io_err("killing nats-server"))
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>, NatsdError> {
        self.child
            .try_wait()
            .map_err(io_err("checking the nats-server process"))
    }

    /// Completes when the process exits, whatever ends it (cancel-safe: a supervisor
    /// selects on it).
    pub async fn exited(&mut self) -> Result<ExitStatus, NatsdError> {
        self.child
            .wait()
            .await
            .map_err(io_err("waiting for nats-server"))
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) -> Result<ExitStatus, NatsdError> {
        match crate::child::terminate(&mut self.child, grace).await {
            Ok(crate::child::Stopped::Exited(status)) => Ok(status),
            Ok(crate::child::Stopped::Killed) => {
                tracing::warn!(?grace, "nats-server did not stop in time; killed it.");
                self.child
                    .wait()
                    .await
                    .map_err(io_err("waiting for nats-server"))
            }
            Err(e) => Err(io_err("stopping nats-server")(e)),
        }
    }
}
