//! A service's settings, each written once as a [`Setting`] constant: its environment
//! key, its flag, its default and what it means. The clap flags ([`crate::flags`]),
//! the docs table ([`Schema::markdown_table`]), `ringside up` (which sets the keys of
//! its children) and the parsing below all read the same constants.
//!
//! # How it fits
//! A service's configuration is one map of strings (CONVENTIONS.md #8): the process
//! environment with the flags laid over it in the binary, a literal map in tests
//! (never `set_var`). [`Settings::new`] checks the map against the service's
//! [`Schema`] (a misspelled key of the service's prefix is an error, not a silently
//! ignored setting; other services' keys are ignored) and reads typed values with the
//! defaults filled in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use ringside_events::{NameError, RingName};

/// One setting.
#[derive(Debug, PartialEq, Eq)]
pub struct Setting {
    /// The environment key (`RINGSIDE_REDUCER_GRPC_ADDR`).
    pub key: &'static str,
    /// The command-line flag without its dashes (`grpc-addr`); `None`: environment only
    /// (secrets never go on a command line, where `ps` shows them).
    pub flag: Option<&'static str>,
    /// The value when the key is unset or blank.
    pub default: Fallback,
    /// What it means, one line.
    pub help: &'static str,
}

/// What an unset setting means.
#[derive(Debug, PartialEq, Eq)]
pub enum Fallback {
    /// This value.
    Value(&'static str),
    /// No value; the text says what happens then (`connect without credentials`).
    Unset(&'static str),
}

impl Setting {
    /// A setting with a flag and a default value.
    pub const fn new(
        key: &'static str,
        flag: &'static str,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        Self {
            key,
            flag: Some(flag),
            default: Fallback::Value(default),
            help,
        }
    }

    /// A setting with a flag and no default value (`when_unset` says what happens).
    pub const fn optional(
        key: &'static str,
        flag: &'static str,
        when_unset: &'static str,
        help: &'static str,
    ) -> Self {
        Self {
            key,
            flag: Some(flag),
            default: Fallback::Unset(when_unset),
            help,
        }
    }

    /// A setting read from the environment only (a password, the host name).
    pub const fn env_only(key: &'static str, when_unset: &'static str, help: &'static str) -> Self {
        Self {
            key,
            flag: None,
            default: Fallback::Unset(when_unset),
            help,
        }
    }

    /// The default value, if there is one.
    pub fn default_value(&self) -> Option<&'static str> {
        match self.default {
            Fallback::Value(v) => Some(v),
            Fallback::Unset(_) => None,
        }
    }

    /// The default as the docs and `--help` show it.
    pub fn default_text(&self) -> String {
        match self.default {
            Fallback::Value(v) => format!("`{v}`"),
            Fallback::Unset(what) => what.to_string(),
        }
    }
}

/// The ring a service works on (every service).
pub const RING: Setting = Setting::new("RINGSIDE_RING", "ring", "default", "ring name");
/// The NATS server (every service).
pub const NATS_URL: Setting = Setting::new(
    "RINGSIDE_NATS_URL",
    "nats-url",
    "nats://127.0.0.1:4222",
    "NATS server URL",
);
/// The host name: the pod name in Kubernetes, the instance name of a process.
pub const HOSTNAME: Setting = Setting::env_only(
    "HOSTNAME",
    "none",
    "host name (the pod name in Kubernetes); names the instance",
);

/// The settings of one service: what [`Settings::new`] checks a map against.
#[derive(Debug)]
pub struct Schema {
    /// The service, for messages (`reducer`).
    pub service: &'static str,
    /// Key prefixes this service owns (`RINGSIDE_REDUCER_`): a key with one of them
    /// that is not a setting is refused.
    pub prefixes: &'static [&'static str],
    /// Every setting, in the order the docs and `--help` list them.
    pub settings: &'static [&'static Setting],
}

impl Schema {
    /// Whether `key` is one of the settings.
    pub fn knows(&self, key: &str) -> bool {
        self.settings.iter().any(|s| s.key == key)
    }

    /// The docs table of the settings: key, flag, default, meaning.
    pub fn markdown_table(&self) -> String {
        let mut out = String::from("| key | flag | default | meaning |\n|---|---|---|---|\n");
        for s in self.settings {
            let flag = s
                .flag
                .map_or_else(|| "-".to_string(), |f| format!("`--{f}`"));
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "| `{}` | {flag} | {} | {} |",
                s.key,
                s.default_text(),
                s.help
            );
        }
        out
    }
}

/// Why a configuration map was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The ring name is not valid.
    #[error("invalid {}", RING.key)]
    Ring(#[source] NameError),
    /// A value that does not parse or is out of range.
    #[error("invalid {key}={value:?}: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key with the service's prefix that the service does not know (probably a typo).
    #[error("unknown {service} setting {key} (known: {known})")]
    UnknownKey {
        /// The service that refused it.
        service: &'static str,
        /// The unknown key.
        key: String,
        /// The known keys of the prefix, comma-separated.
        known: String,
    },
    /// Two settings that exclude each other.
    #[error("{0} and {1} exclude each other: set one")]
    Conflict(&'static str, &'static str),
}

/// A [`ConfigError::Invalid`].
pub fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A configuration map checked against a [`Schema`], read with defaults filled in.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    map: &'a BTreeMap<String, String>,
}

impl<'a> Settings<'a> {
    /// Checks `map`: every key with one of the schema's prefixes must be a setting.
    pub fn new(schema: &Schema, map: &'a BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let owned = |k: &str| schema.prefixes.iter().any(|p| k.starts_with(p));
        if let Some(key) = map.keys().find(|k| owned(k) && !schema.knows(k)) {
            let known: Vec<&str> = schema
                .settings
                .iter()
                .map(|s| s.key)
                .filter(|k| owned(k))
                .collect();
            return Err(ConfigError::UnknownKey {
                service: schema.service,
                key: key.clone(),
                known: known.join(", "),
            });
        }
        Ok(Self { map })
    }

    /// The given value (trimmed; blank means unset), else the default.
    pub fn get(&self, setting: &Setting) -> Option<&'a str> {
        self.given(setting).or(setting.default_value())
    }

    /// The given value only (trimmed; blank means unset).
    pub fn given(&self, setting: &Setting) -> Option<&'a str> {
        self.map
            .get(setting.key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A secret as given, untrimmed (a password is taken as it is).
    pub fn secret(&self, setting: &Setting) -> Option<String> {
        self.map.get(setting.key).cloned()
    }

    /// The value parsed; a setting without a value is an error.
    pub fn parse<T>(&self, setting: &'static Setting) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.parse_opt(setting)?
            .ok_or_else(|| invalid(setting.key, "", "a value is required"))
    }

    /// The value parsed, if there is one.
    pub fn parse_opt<T>(&self, setting: &'static Setting) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(setting)
            .map(|raw| {
                raw.parse::<T>()
                    .map_err(|e| invalid(setting.key, raw, e.to_string()))
            })
            .transpose()
    }

    /// A whole number in `range`.
    pub fn number<T>(
        &self,
        setting: &'static Setting,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
    {
        let raw = self.get(setting).unwrap_or_default();
        match raw.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(invalid(
                setting.key,
                raw,
                format!(
                    "expected a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// A listen address (`IP:PORT`; port 0 picks a free one).
    pub fn addr(&self, setting: &'static Setting) -> Result<SocketAddr, ConfigError> {
        let raw = self.get(setting).unwrap_or_default();
        raw.parse()
            .map_err(|_| invalid(setting.key, raw, "expected IP:PORT, e.g. 127.0.0.1:0"))
    }

    /// A duration (`500ms`, `2s`, `1m`) in `range`.
    pub fn duration(
        &self,
        setting: &'static Setting,
        range: std::ops::RangeInclusive<Duration>,
    ) -> Result<Duration, ConfigError> {
        let raw = self.get(setting).unwrap_or_default();
        let d = parse_duration(raw).ok_or_else(|| {
            invalid(
                setting.key,
                raw,
                "expected a duration such as 500ms, 2s or 1m",
            )
        })?;
        if !range.contains(&d) {
            let expected = if *range.end() == Duration::MAX {
                format!("expected at least {:?}", range.start())
            } else {
                format!("expected from {:?} to {:?}", range.start(), range.end())
            };
            return Err(invalid(setting.key, raw, expected));
        }
        Ok(d)
    }

    /// The ring ([`RING`]).
    pub fn ring(&self) -> Result<RingName, ConfigError> {
        RingName::new(self.get(&RING).unwrap_or_default()).map_err(ConfigError::Ring)
    }
}

/// `500ms`, `2s`, `1m`, `1h` (a whole number and a unit).
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let split = raw.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// The environment's `RINGSIDE_*` variables and `HOSTNAME`: what a service's map starts
/// from (variables that are not UTF-8 are left out).
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("RINGSIDE_") || k == HOSTNAME.key)
        .collect()
}

/// A service's map for ring `ring` on the NATS server at `url`, as NATS user `user`
/// with `password` (none: a server without accounts), plus `pairs`: what a benchmark
/// that runs services in one process gives each of them.
pub fn on_nats(
    url: &str,
    ring: &RingName,
    user: ringside_events::ServiceUser,
    password: Option<&str>,
    pairs: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    map.insert(NATS_URL.key.to_owned(), url.to_owned());
    map.insert(RING.key.to_owned(), ring.to_string());
    if let Some(password) = password {
        map.insert(user.password_env(), password.to_owned());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_testkit::settings as map;

    const A: Setting = Setting::new("X_A", "a", "7", "an a");
    const B: Setting = Setting::optional("X_B", "b", "none", "a b");
    const SECRET: Setting = Setting::env_only("X_SECRET", "no password", "a password");
    const SCHEMA: Schema = Schema {
        service: "x",
        prefixes: &["X_"],
        settings: &[&A, &B, &SECRET, &RING],
    };

    #[test]
    fn defaults_fill_in_and_blank_means_unset() {
        let m = map(&[("X_B", "  "), ("OTHER_Y", "1")]);
        let s = Settings::new(&SCHEMA, &m).unwrap();
        assert_eq!(s.parse::<u32>(&A).unwrap(), 7);
        assert_eq!(s.parse_opt::<u32>(&B).unwrap(), None);
        assert_eq!(s.ring().unwrap().as_str(), "default");
        let m = map(&[("X_A", " 9 "), ("X_SECRET", " p ")]);
        let s = Settings::new(&SCHEMA, &m).unwrap();
        assert_eq!(s.parse::<u32>(&A).unwrap(), 9);
        assert_eq!(s.secret(&SECRET).as_deref(), Some(" p "));
    }

    #[test]
    fn unknown_keys_of_the_prefix_and_bad_values_are_refused() {
        let m = map(&[("X_C", "1")]);
        let err = Settings::new(&SCHEMA, &m).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown x setting X_C (known: X_A, X_B, X_SECRET)"
        );
        let m = map(&[("X_A", "many")]);
        let s = Settings::new(&SCHEMA, &m).unwrap();
        assert!(s.parse::<u32>(&A).unwrap_err().to_string().contains("X_A"));
        let err = s.number::<u32>(&A, 1..=5).unwrap_err().to_string();
        assert!(err.contains("from 1 to 5"), "{err}");
    }

    #[test]
    fn durations_have_units_and_ranges() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for bad in ["", "5", "ms", "1.5s", "-1s", "3 s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        let m = map(&[("X_A", "20s")]);
        let s = Settings::new(&SCHEMA, &m).unwrap();
        let range = Duration::from_secs(1)..=Duration::from_secs(10);
        let err = s.duration(&A, range).unwrap_err().to_string();
        assert!(err.contains("expected from 1s to 10s"), "{err}");
    }

    #[test]
    fn the_docs_table_lists_every_setting() {
        let table = SCHEMA.markdown_table();
        assert!(table.contains("| `X_A` | `--a` | `7` | an a |"), "{table}");
        assert!(table.contains("| `X_SECRET` | - | no password | a password |"));
    }
}
