//! How the tools connect to NATS: the server URL and a service user of
//! `nats/permissions.conf` (`admin` by default; `bridge` is enough for the read-only
//! tools), with the password from a flag or the user's `RINGSIDE_NATS_PASSWORD_<USER>`.
//!
//! Next to a running `ringside up` nothing needs to be given: without `--nats-url` the
//! URL comes from its state directory (`--state-dir`, default `.ringside`), and without
//! a password from the flag or the environment, from its `credentials.env`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use ringside_events::ServiceUser;

use crate::local::{Recorded, StateDir};

/// Connection flags shared by `tail` and `replay`.
#[derive(Debug, Clone, Args)]
pub(crate) struct NatsArgs {
    /// NATS server URL [default: the running `ringside up`'s, else
    /// nats://127.0.0.1:4222; refused if `up.json` is left by an `up` that is gone].
    #[arg(long, global = true, env = "RINGSIDE_NATS_URL")]
    pub(crate) nats_url: Option<String>,
    /// NATS user (admin, or bridge for read-only access).
    #[arg(long, global = true, default_value = "admin", value_parser = parse_user)]
    pub(crate) user: ServiceUser,
    /// Password of the user [default: $RINGSIDE_NATS_PASSWORD_{USER}; none: connect
    /// without credentials].
    #[arg(long, global = true)]
    pub(crate) password: Option<String>,
    /// State directory of a local `ringside up` (URL and passwords).
    #[arg(
        long,
        global = true,
        default_value = ".ringside",
        env = "RINGSIDE_STATE_DIR"
    )]
    pub(crate) state_dir: std::path::PathBuf,
}

/// Where the tools connect when nothing says otherwise.
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

fn parse_user(name: &str) -> Result<ServiceUser, String> {
    ServiceUser::ALL
        .into_iter()
        .find(|u| u.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = ServiceUser::ALL.iter().map(|u| u.name()).collect();
            format!("unknown user '{name}' (known: {})", names.join(", "))
        })
}

impl NatsArgs {
    /// The server URL and where it came from: the flag, else the running `ringside
    /// up`'s, else the default. A record left by an `up` that is gone is refused: its
    /// port may now be another system's.
    pub(crate) fn url(&self) -> anyhow::Result<(String, String)> {
        if let Some(url) = &self.nats_url {
            return Ok((url.clone(), "--nats-url or $RINGSIDE_NATS_URL".to_string()));
        }
        let state = StateDir::new(&self.state_dir);
        match state.record_of_up()? {
            Recorded::Running(running) => Ok((
                running.nats_url,
                format!(
                    "the ringside up running with state in {} (pid {})",
                    state.root().display(),
                    running.pid
                ),
            )),
            Recorded::Stale(running) => bail!(
                "{} was left by a ringside up (pid {}) that is no longer running, so its \
                 server {} is gone; start it again (`ringside up`), pass --nats-url for \
                 another server, or delete the file",
                state.record_path().display(),
                running.pid,
                running.nats_url
            ),
            Recorded::Absent => Ok((
                DEFAULT_NATS_URL.to_string(),
                format!(
                    "the default: no ringside up runs with state in {}; --nats-url chooses",
                    state.root().display()
                ),
            )),
        }
    }

    /// The password: the flag, the user's variable, else the local `credentials.env`.
    fn password(&self) -> anyhow::Result<Option<String>> {
        if let Some(password) = self
            .password
            .clone()
            .or_else(|| std::env::var(self.user.password_env()).ok())
        {
            return Ok(Some(password));
        }
        let file = StateDir::new(&self.state_dir).credentials();
        if !file.is_file() {
            return Ok(None);
        }
        let passwords = ringside_natsd::Passwords::load(&file)?;
        Ok(passwords.password(self.user.name()).map(str::to_owned))
    }

    /// Connects, failing after a few seconds if the server does not answer.
    pub(crate) async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let (url, origin) = self.url()?;
        // Say which system is read: the answer is only as good as the server asked.
        eprintln!("ringside: reading {url} ({origin}).");
        let password = self.password()?;
        let options = match password {
            Some(password) => self.user.connect_options(password),
            None => async_nats::ConnectOptions::new(),
        };
        options
            .connection_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to {url} as '{}' (password from --password, ${}, or {})",
                    self.user,
                    self.user.password_env(),
                    StateDir::new(&self.state_dir).credentials().display()
                )
            })
    }
}
