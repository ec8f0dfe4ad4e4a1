//! Command-line flags made from a service's [`Schema`]: `--grpc-addr VALUE` for each
//! setting that has a flag, with its environment key and default in `--help`. A given
//! flag overrides the environment; nothing else is restated.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};

use crate::service::Service;
use crate::settings::environment;

/// The flags given for service `S`, by setting key.
pub struct Flags<S> {
    given: BTreeMap<String, String>,
    service: PhantomData<fn() -> S>,
}

impl<S> std::fmt::Debug for Flags<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flags").field("given", &self.given).finish()
    }
}

impl<S> Clone for Flags<S> {
    fn clone(&self) -> Self {
        Self {
            given: self.given.clone(),
            service: PhantomData,
        }
    }
}

impl<S: Service> Flags<S> {
    /// The service's configuration map: the environment's `RINGSIDE_*` variables and
    /// `HOSTNAME`, with the given flags over them.
    pub fn config_map(&self) -> BTreeMap<String, String> {
        let mut map = environment();
        map.extend(self.given.clone());
        map
    }

    /// The flags given, by setting key (for tests).
    pub fn given(&self) -> &BTreeMap<String, String> {
        &self.given
    }
}

impl<S: Service> FromArgMatches for Flags<S> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self {
            given: BTreeMap::new(),
            service: PhantomData,
        };
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for setting in S::SCHEMA.settings.iter().filter(|s| s.flag.is_some()) {
            if let Some(value) = matches.get_one::<String>(setting.key) {
                self.given.insert(setting.key.to_owned(), value.clone());
            }
        }
        Ok(())
    }
}

impl<S: Service> Args for Flags<S> {
    fn augment_args(cmd: Command) -> Command {
        S::SCHEMA.settings.iter().fold(cmd, |cmd, setting| {
            let Some(flag) = setting.flag else {
                return cmd;
            };
            cmd.arg(
                Arg::new(setting.key)
                    .long(flag)
                    .value_name("VALUE")
                    .help(format!(
                        "{} [env: {}] [default: {}]",
                        setting.help,
                        setting.key,
                        setting.default_text().trim_matches('`')
                    )),
            )
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{ConfigError, NATS_URL, RING, Schema, Setting};
    use clap::Parser;
    use std::net::SocketAddr;

    const ADDR: Setting = Setting::new("X_ADDR", "addr", "127.0.0.1:1", "listen address");
    const SECRET: Setting = Setting::env_only("X_SECRET", "none", "a password");

    struct X;
    impl Service for X {
        const NAME: &'static str = "x";
        const SCHEMA: &'static Schema = &Schema {
            service: "x",
            prefixes: &["X_"],
            settings: &[&RING, &NATS_URL, &ADDR, &SECRET],
        };
        type Config = ();
        type Error = std::io::Error;
        fn config(_: &BTreeMap<String, String>) -> Result<(), ConfigError> {
            Ok(())
        }
        async fn bind(_: ()) -> Result<Self, std::io::Error> {
            Ok(X)
        }
        fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
            Vec::new()
        }
        async fn run(
            self,
            shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        ) -> Result<(), std::io::Error> {
            shutdown.await;
            Ok(())
        }
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        flags: Flags<X>,
    }

    #[test]
    fn flags_are_the_settings_with_a_flag() {
        let cli = Cli::parse_from(["x", "--ring", "orders", "--addr", "127.0.0.1:0"]);
        assert_eq!(cli.flags.given().get("RINGSIDE_RING").unwrap(), "orders");
        assert_eq!(cli.flags.given().get("X_ADDR").unwrap(), "127.0.0.1:0");
        assert!(Cli::try_parse_from(["x", "--secret", "p"]).is_err());
        let help = Cli::try_parse_from(["x", "--help"])
            .unwrap_err()
            .to_string();
        assert!(
            help.contains("listen address [env: X_ADDR] [default: 127.0.0.1:1]"),
            "{help}"
        );
    }
}
