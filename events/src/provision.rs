//! Streams and KV buckets from the definition files in `nats/`, created or updated
//! idempotently.
//!
//! The files are JetStream stream configurations (the JSON of the JetStream API, the
//! same that `nats stream add --config FILE` takes). A KV bucket is a stream named
//! `KV_<bucket>` with the settings the KV layer expects, so `nats/kv/*.json` uses the
//! same format and `nats kv ls` shows the buckets. The files are embedded at build time
//! ([`Definitions::builtin`]) so a service binary needs no files at run time; tests and
//! operators can load a directory instead ([`Definitions::from_dir`]).

use std::path::{Path, PathBuf};

use async_nats::jetstream::{self, context, stream};

/// Whether a definition is a plain stream or a KV bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefinitionKind {
    /// `nats/streams/*.json`
    Stream,
    /// `nats/kv/*.json` (stream `KV_<bucket>`)
    KeyValue,
}

/// One stream or KV bucket definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    /// Stream or KV bucket.
    pub kind: DefinitionKind,
    /// Where it came from (file name), for messages.
    pub origin: String,
    /// The stream configuration to apply.
    pub config: stream::Config,
}

/// What [`provision`] did to one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Created,
    /// It existed with a different configuration and was updated.
    Updated,
    /// It existed with this configuration already.
    Unchanged,
}

/// The result for one definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// Stream name.
    pub stream: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Errors of loading definitions and applying them.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A definition directory or file could not be read.
    #[error("reading {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A definition is not a valid stream configuration.
    #[error("{origin} is not a valid stream configuration")]
    Parse {
        /// The file.
        origin: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A KV definition lacks what the KV layer needs.
    #[error("{origin}: {problem}")]
    NotKeyValue {
        /// The file.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// Looking a stream up failed (other than "not found").
    #[error("looking up stream {stream}")]
    Lookup {
        /// The stream.
        stream: String,
        /// The server's answer.
        #[source]
        source: context::GetStreamError,
    },
    /// Creating a stream failed.
    #[error("creating stream {stream}")]
    Create {
        /// The stream.
        stream: String,
        /// The server's answer.
        #[source]
        source: context::CreateStreamError,
    },
    /// Updating a stream failed (for example a change the server cannot apply, such
    /// as the storage type).
    #[error("updating stream {stream}")]
    Update {
        /// The stream.
        stream: String,
        /// The server's answer.
        #[source]
        source: context::UpdateStreamError,
    },
}

/// The embedded copies of `nats/streams/*.json` and `nats/kv/*.json`.
const BUILTIN: [(DefinitionKind, &str, &str); 5] = [
    (
        DefinitionKind::Stream,
        "streams/RINGSIDE.json",
        include_str!("../../nats/streams/RINGSIDE.json"),
    ),
    (
        DefinitionKind::Stream,
        "streams/RINGSIDE_DEADLETTER.json",
        include_str!("../../nats/streams/RINGSIDE_DEADLETTER.json"),
    ),
    (
        DefinitionKind::Stream,
        "streams/RINGSIDE_LOAD.json",
        include_str!("../../nats/streams/RINGSIDE_LOAD.json"),
    ),
    (
        DefinitionKind::KeyValue,
        "kv/RINGSIDE_LEASES.json",
        include_str!("../../nats/kv/RINGSIDE_LEASES.json"),
    ),
    (
        DefinitionKind::KeyValue,
        "kv/RINGSIDE_SNAPSHOTS.json",
        include_str!("../../nats/kv/RINGSIDE_SNAPSHOTS.json"),
    ),
];

/// A set of stream and KV definitions.
#[derive(Clone, Debug, PartialEq)]
pub struct Definitions {
    defs: Vec<Definition>,
}

impl Definitions {
    /// The definitions embedded from `nats/` at build time.
    pub fn builtin() -> Result<Self, ProvisionError> {
        let defs = BUILTIN
            .iter()
            .map(|(kind, origin, json)| parse(*kind, origin, json))
            .collect::<Result<_, _>>()?;
        Ok(Self { defs })
    }

    /// Reads `<dir>/streams/*.json` and `<dir>/kv/*.json` (in file-name order).
    pub fn from_dir(dir: &Path) -> Result<Self, ProvisionError> {
        let mut defs = Vec::new();
        for (kind, sub) in [
            (DefinitionKind::Stream, "streams"),
            (DefinitionKind::KeyValue, "kv"),
        ] {
            let path = dir.join(sub);
            let read_err = |path: &Path| {
                let path = path.to_path_buf();
                move |source| ProvisionError::Read { path, source }
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(read_err(&path))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            for file in files {
                let json = std::fs::read_to_string(&file).map_err(read_err(&file))?;
                let origin = format!(
                    "{sub}/{}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                );
                defs.push(parse(kind, &origin, &json)?);
            }
        }
        Ok(Self { defs })
    }

    /// The same definitions with `replicas` copies each (3 in the Kubernetes cluster).
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        for d in &mut self.defs {
            d.config.num_replicas = replicas;
        }
        self
    }

    /// Every definition.
    pub fn iter(&self) -> impl Iterator<Item = &Definition> {
        self.defs.iter()
    }

    /// The definition of a stream by name (`KV_<bucket>` for buckets).
    pub fn get(&self, stream: &str) -> Option<&Definition> {
        self.defs.iter().find(|d| d.config.name == stream)
    }

    /// Replaces (or adds) a definition; for tests and operators changing one setting.
    pub fn set(&mut self, def: Definition) {
        match self
            .defs
            .iter_mut()
            .find(|d| d.config.name == def.config.name)
        {
            Some(existing) => *existing = def,
            None => self.defs.push(def),
        }
    }
}

fn parse(kind: DefinitionKind, origin: &str, json: &str) -> Result<Definition, ProvisionError> {
    let config: stream::Config =
        serde_json::from_str(json).map_err(|source| ProvisionError::Parse {
            origin: origin.to_string(),
            source,
        })?;
    if kind == DefinitionKind::KeyValue {
        check_key_value(origin, &config)?;
    }
    Ok(Definition {
        kind,
        origin: origin.to_string(),
        config,
    })
}

/// A KV bucket is a stream `KV_<bucket>` on `$KV.<bucket>.>` that allows roll-ups and
/// direct gets and refuses deletes; without these the KV client misbehaves.
fn check_key_value(origin: &str, c: &stream::Config) -> Result<(), ProvisionError> {
    let problem = |p: String| ProvisionError::NotKeyValue {
        origin: origin.to_string(),
        problem: p,
    };
    let bucket = c
        .name
        .strip_prefix("KV_")
        .ok_or_else(|| problem(format!("stream name {:?} must start with KV_", c.name)))?;
    let subject = format!("$KV.{bucket}.>");
    if c.subjects != [subject.clone()] {
        return Err(problem(format!("subjects must be [{subject:?}]")));
    }
    if !(c.allow_rollup && c.allow_direct && c.deny_delete) {
        return Err(problem(
            "allow_rollup_hdrs, allow_direct and deny_delete must be true".into(),
        ));
    }
    if c.max_messages_per_subject < 1 {
        return Err(problem(
            "max_msgs_per_subject (history) must be at least 1".into(),
        ));
    }
    Ok(())
}

fn is_not_found(err: &context::GetStreamError) -> bool {
    matches!(err.kind(), context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Creates every stream that is missing and updates every one whose configuration
/// differs; running it again changes nothing. Returns what happened to each.
pub async fn provision(
    js: &jetstream::Context,
    defs: &Definitions,
) -> Result<Vec<Provisioned>, ProvisionError> {
    let mut results = Vec::new();
    for def in defs.iter() {
        let name = def.config.name.clone();
        let before = match js.get_stream(&name).await {
            Ok(s) => Some(s.cached_info().config.clone()),
            Err(e) if is_not_found(&e) => None,
            Err(source) => {
                return Err(ProvisionError::Lookup {
                    stream: name,
                    source,
                });
            }
        };
        let outcome = match before {
            None => {
                js.create_stream(def.config.clone())
                    .await
                    .map_err(|source| ProvisionError::Create {
                        stream: name.clone(),
                        source,
                    })?;
                Outcome::Created
            }
            Some(before) => {
                // The server fills in defaults, so compare its view before and after
                // rather than our file with its view.
                let after = js
                    .update_stream(def.config.clone())
                    .await
                    .map_err(|source| ProvisionError::Update {
                        stream: name.clone(),
                        source,
                    })?
                    .config;
                if after == before {
                    Outcome::Unchanged
                } else {
                    Outcome::Updated
                }
            }
        };
        tracing::info!(stream = %name, origin = %def.origin, ?outcome, "Provisioned stream.");
        results.push(Provisioned {
            stream: name,
            outcome,
        });
    }
    Ok(results)
}
