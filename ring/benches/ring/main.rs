//! `just bench ring`: ringside's ring against peer crates and reference tables.
//!
//! Every implementation is measured by the same generic routine ([`measure::measure`])
//! through the [`subject::Subject`] trait, side by side in one run, on the same key set.
//! The run prints a table (stdout), progress (stderr), the builds of ringside's rings
//! from a member list (up to 10,000 members), the target checks at n = 1000 and for
//! the largest build as PASS/MISS lines, and writes the machine-readable result
//! (default `target/bench/ring.json`).
//!
//! # Layout
//! - `subject`: the trait every implementation provides, and ringside's wrapper.
//! - `peers`: the crates.io rings `hashring` 0.3 and `consistent_hash_ring` 0.8.
//! - `reference`: in-bench jump consistent hash and a Maglev table (M = 65537).
//! - `measure`: keys, timing (rounds, min/median), the generic measuring routine, and
//!   the build of ringside's rings from a member list.
//! - `report`: the table, the target checks and the JSON document.
//!
//! Usage: `ring [--quick] [--json PATH]` (cargo adds `--bench`, which is ignored).
//! `--quick` is a smoke run (fewer keys, n <= 100, one round): its figures are not
//! comparable and are labelled so, and its JSON goes next to the full one with a
//! `-quick` suffix (`ring-quick.json`).

mod measure;
mod peers;
mod reference;
mod report;
mod subject;

use std::path::PathBuf;
use std::time::Instant;

use ringside_ring::Strategy;

use crate::measure::{Config, KeySet, Row, measure, measure_build};
use crate::peers::{ConsistentHashRing, HashRing};
use crate::reference::{Jump, Maglev};
use crate::subject::{BenchResult, Ringside, Subject};

/// Parses the command line: `--quick`, `--json PATH`; `--bench` comes from cargo.
fn parse_args() -> BenchResult<(Config, PathBuf)> {
    let mut config = Config::full();
    let mut json = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/bench/ring.json"
    ));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--quick" => config = Config::quick(),
            "--json" => json = args.next().ok_or("--json needs a path")?.into(),
            other => {
                return Err(
                    format!("unknown argument '{other}' (expected --quick, --json PATH)").into(),
                );
            }
        }
    }
    if config.quick {
        // A smoke run never overwrites a full run's figures: `ring.json` -> `ring-quick.json`.
        let stem = json
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        json.set_file_name(format!("{stem}-quick.json"));
    }
    Ok((config, json))
}

/// Collects the rows of one run.
struct Run<'a> {
    keys: &'a KeySet,
    config: &'a Config,
    rows: Vec<Row>,
}

impl Run<'_> {
    /// Measures one implementation over `members` and keeps its row.
    fn measure<S: Subject>(
        &mut self,
        name: &'static str,
        members: &[String],
        build: &dyn Fn(&[String]) -> BenchResult<S>,
    ) -> BenchResult<()> {
        let row = measure(name, members, build, self.keys, self.config)?;
        self.rows.push(row);
        Ok(())
    }
}

fn main() -> BenchResult<()> {
    let (config, json_path) = parse_args()?;
    // Other processes skew timings: the load at the start goes into the report.
    let load = std::fs::read_to_string("/proc/loadavg").ok();
    let started = Instant::now();
    let keys = KeySet::new(config.keys);
    let mut run = Run {
        keys: &keys,
        config: &config,
        rows: Vec::new(),
    };
    for &n in &config.sizes {
        let members: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
        run.measure("ringside-random", &members, &|m: &[String]| {
            Ringside::build(Strategy::Random, m)
        })?;
        run.measure("ringside-balanced", &members, &|m: &[String]| {
            Ringside::build(Strategy::Balanced, m)
        })?;
        run.measure("hashring", &members, &HashRing::build)?;
        run.measure("consistent_hash_ring", &members, &ConsistentHashRing::build)?;
        run.measure("jump", &members, &Jump::build)?;
        run.measure("maglev", &members, &Maglev::build)?;
    }
    let mut builds = Vec::new();
    for &n in &config.build_sizes {
        let members: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
        for (name, strategy) in [
            ("ringside-random", Strategy::Random),
            ("ringside-balanced", Strategy::Balanced),
        ] {
            builds.push(measure_build(name, strategy, &members, &config)?);
        }
    }
    let report = report::Report::new(&config, load, run.rows, builds, started.elapsed());
    print!("{}", report.table());
    print!("{}", report.build_table());
    print!("{}", report.targets_text());
    report.write_json(&json_path)?;
    println!("wrote {}", json_path.display());
    Ok(())
}
