//! How the tools connect to NATS: the server URL and a service user of
//! `nats/permissions.conf` (`admin` by default; `bridge` is enough for the read-only
//! tools), with the password from a flag or the user's `RINGSIDE_NATS_PASSWORD_<USER>`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ringside_events::ServiceUser;

/// Connection flags shared by `tail` and `replay`.
#[derive(Debug, Clone, Args)]
pub(crate) struct NatsArgs {
    /// NATS server URL.
    #[arg(
        long,
        global = true,
        default_value = "nats://127.0.0.1:4222",
        env = "RINGSIDE_NATS_URL"
    )]
    pub(crate) nats_url: String,
    /// NATS user (admin, or bridge for read-only access).
    #[arg(long, global = true, default_value = "admin", value_parser = parse_user)]
    pub(crate) user: ServiceUser,
    /// Password of the user [default: $RINGSIDE_NATS_PASSWORD_<USER>; none: connect
    /// without credentials].
    #[arg(long, global = true)]
    pub(crate) password: Option<String>,
}

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
    /// Connects, failing after a few seconds if the server does not answer.
    pub(crate) async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let password = self
            .password
            .clone()
            .or_else(|| std::env::var(self.user.password_env()).ok());
        let options = match password {
            Some(password) => self.user.connect_options(password),
            None => async_nats::ConnectOptions::new(),
        };
        options
            .connection_timeout(Duration::from_secs(5))
            .connect(&self.nats_url)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to {} as '{}' (password from --password or ${})",
                    self.nats_url,
                    self.user,
                    self.user.password_env()
                )
            })
    }
}
