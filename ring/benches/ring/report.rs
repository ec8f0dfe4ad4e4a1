//! The human-readable table, the target checks and the JSON document.
//!
//! How it fits: pure formatting of the [`Row`]s `measure` produced; every ratio is
//! computed from figures of the same run (medians over medians).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::measure::{BuildRow, Config, Row, Timed};
use crate::subject::{BenchResult, VNODES};

/// The member count the targets are stated for.
const TARGET_N: usize = 1000;

/// The most milliseconds a build of the largest measured member list may take (issue
/// 15: a ring of 10,000 members in under a second).
const BUILD_LIMIT_MS: f64 = 1000.0;

/// Which way a target's limit goes.
#[derive(Clone, Copy, Debug, Serialize)]
enum Bound {
    /// The figure must be at most the limit.
    #[serde(rename = "<=")]
    AtMost,
    /// The figure must be at least the limit.
    #[serde(rename = ">=")]
    AtLeast,
}

/// One target of the issue, checked against this run's figures.
#[derive(Debug, Serialize)]
struct Target {
    /// What is compared.
    name: String,
    /// This run's figure, `None` when it is missing.
    value: Option<f64>,
    /// Direction of the limit.
    bound: Bound,
    /// The limit.
    limit: f64,
    /// Whether the figure meets the limit.
    pass: bool,
}

impl Target {
    /// Checks `value` against `limit`.
    fn new(name: String, value: Option<f64>, bound: Bound, limit: f64) -> Self {
        let pass = value.is_some_and(|v| match bound {
            Bound::AtMost => v <= limit,
            Bound::AtLeast => v >= limit,
        });
        Self {
            name,
            value,
            bound,
            limit,
            pass,
        }
    }
}

/// The whole run: parameters, rows and target checks.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// A smoke run (`--quick`): figures not comparable.
    quick: bool,
    /// Keys in the key set.
    keys: usize,
    /// Timed rounds per figure.
    rounds: usize,
    /// Virtual nodes per member.
    vnodes: u32,
    /// Steps of the churn run.
    churn_steps: usize,
    /// Member count of the target checks.
    target_n: usize,
    /// The 1-, 5- and 15-minute load averages when the run started (Linux only).
    load_at_start: Option<String>,
    /// Wall time of the whole run.
    seconds: f64,
    /// One row per implementation and member count.
    rows: Vec<Row>,
    /// ringside's rings built from a member list, per strategy and member count.
    builds: Vec<BuildRow>,
    /// The targets at `target_n`.
    targets: Vec<Target>,
}

/// The median of a row's figure, looked up by implementation and member count.
fn figure(rows: &[Row], name: &str, n: usize, get: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
    rows.iter()
        .find(|r| r.name == name && r.n == n)
        .and_then(get)
}

/// The targets, for both ringside strategies where they apply to both.
fn targets(rows: &[Row], n: usize) -> Vec<Target> {
    use Bound::{AtLeast, AtMost};
    let get = |name: &str, f: fn(&Row) -> Option<f64>| figure(rows, name, n, f);
    let lookup: fn(&Row) -> Option<f64> = |r| Some(r.lookup_ns.median);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let mut out = Vec::new();
    for (name, peak_limit) in [("ringside-balanced", 1.01), ("ringside-random", 1.30)] {
        let checks = [
            (
                format!("lookup {name} / maglev"),
                ratio(get(name, lookup), get("maglev", lookup)),
                AtMost,
                2.5,
            ),
            (
                format!("lookup hashring / {name} (speed-up)"),
                ratio(get("hashring", lookup), get(name, lookup)),
                AtLeast,
                10.0,
            ),
            (
                format!("peak/mean {name}"),
                get(name, |r| r.peak_mean),
                AtMost,
                peak_limit,
            ),
            (
                format!("peak/mean {name} after churn"),
                get(name, |r| r.peak_mean_churn),
                AtMost,
                peak_limit,
            ),
            (
                format!("moved/ideal add {name}"),
                get(name, |r| Some(r.moved_ideal_add)),
                AtMost,
                1.05,
            ),
            (
                format!("moved/ideal remove {name}"),
                get(name, |r| Some(r.moved_ideal_remove)),
                AtMost,
                1.05,
            ),
            (
                format!("plan add us {name}"),
                get(name, |r| r.plan_add_us.map(|t| t.median)),
                AtMost,
                100.0,
            ),
        ];
        out.extend(
            checks.map(|(label, value, bound, limit)| Target::new(label, value, bound, limit)),
        );
    }
    out
}

/// The build targets: each ringside strategy builds the largest measured member list
/// within [`BUILD_LIMIT_MS`] (median).
fn build_targets(builds: &[BuildRow]) -> Vec<Target> {
    let largest = builds.iter().map(|b| b.n).max().unwrap_or(0);
    builds
        .iter()
        .filter(|b| b.n == largest)
        .map(|b| {
            Target::new(
                format!("build ms {} n={}", b.name, b.n),
                Some(b.build_ms.median),
                Bound::AtMost,
                BUILD_LIMIT_MS,
            )
        })
        .collect()
}

/// A figure with 3 decimals, or `-` when it does not apply.
fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

/// A timed figure as `min/median` with 1 decimal, or `-` when it does not apply.
fn timed_cell(value: Option<Timed>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |t| format!("{:.1}/{:.1}", t.min, t.median),
    )
}

/// The table's columns: header and width; the first and last are left-aligned.
const COLUMNS: [(&str, usize); 12] = [
    ("impl", 20),
    ("n", 5),
    ("lookup ns", 12),
    ("x maglev", 8),
    ("hr/this", 8),
    ("plan us", 16),
    ("clone+diff us", 16),
    ("peak/mean", 9),
    ("churned", 8),
    ("moved/ideal+", 12),
    ("moved/ideal-", 12),
    ("basis", 20),
];

impl Report {
    /// Collects the rows and checks the targets at n = 1000 (or the largest n measured).
    pub(crate) fn new(
        config: &Config,
        loadavg: Option<String>,
        rows: Vec<Row>,
        builds: Vec<BuildRow>,
        elapsed: Duration,
    ) -> Self {
        let target_n = if config.sizes.contains(&TARGET_N) {
            TARGET_N
        } else {
            config.sizes.iter().copied().max().unwrap_or(0)
        };
        Self {
            quick: config.quick,
            keys: config.keys,
            rounds: config.rounds,
            vnodes: VNODES,
            churn_steps: config.churn_steps,
            target_n,
            load_at_start: loadavg
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
            seconds: elapsed.as_secs_f64(),
            targets: targets(&rows, target_n)
                .into_iter()
                .chain(build_targets(&builds))
                .collect(),
            rows,
            builds,
        }
    }

    /// The table: one line per row, ratios against the references at the same n.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nring bench: {} keys, {} vnodes/member, {} rounds (min/median), churn {} steps{}",
            self.keys,
            self.vnodes,
            self.rounds,
            self.churn_steps,
            if self.quick {
                ", QUICK smoke run: figures not comparable"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "load average at start: {} (on a busy machine, trust the ratios more than absolutes)",
            self.load_at_start.as_deref().unwrap_or("unknown")
        );

        let mut line = |cells: [String; COLUMNS.len()]| {
            let mut text = String::new();
            for (i, (c, (_, w))) in cells.iter().zip(COLUMNS).enumerate() {
                let _ = match i {
                    0 | 11 => write!(text, "{c:<w$} "),
                    _ => write!(text, "{c:>w$} "),
                };
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(COLUMNS.map(|(header, _)| header.to_owned()));
        for row in &self.rows {
            let lookup = |name: &str| figure(&self.rows, name, row.n, |r| Some(r.lookup_ns.median));
            let median = row.lookup_ns.median;
            line([
                row.name.to_owned(),
                row.n.to_string(),
                timed_cell(Some(row.lookup_ns)),
                cell(lookup("maglev").map(|m| median / m)),
                cell(lookup("hashring").map(|h| h / median)),
                timed_cell(row.plan_add_us),
                timed_cell(row.plan_add_by_diff_us),
                cell(row.peak_mean),
                cell(row.peak_mean_churn),
                cell(Some(row.moved_ideal_add)),
                cell(Some(row.moved_ideal_remove)),
                format!("{}/{}", row.basis.peak_mean.unwrap_or("-"), row.basis.moved),
            ]);
        }
        out
    }

    /// The builds: one line per strategy and member count, with the time per member
    /// against the same strategy's at the smallest count (1.0 for a build linear in
    /// the members).
    pub(crate) fn build_table(&self) -> String {
        let mut out = format!(
            "\nbuild from a member list (node-0 .. node-{{n-1}}, weight 1, one RingBuilder change), {} rounds (min/median):\n",
            self.rounds
        );
        let _ = writeln!(
            out,
            "{:<20} {:>6} {:>18} {:>10} {:>10} {:>9} {:<18}",
            "impl", "n", "build ms", "us/member", "x smallest", "tokens", "checksum"
        );
        let per_member = |b: &BuildRow| b.build_ms.median * 1e3 / b.n as f64;
        for b in &self.builds {
            let smallest = self.builds.iter().find(|s| s.name == b.name);
            let _ = writeln!(
                out,
                "{:<20} {:>6} {:>18} {:>10.2} {:>10} {:>9} {:<18}",
                b.name,
                b.n,
                timed_cell(Some(b.build_ms)),
                per_member(b),
                cell(smallest.map(|s| per_member(b) / per_member(s))),
                b.tokens,
                b.checksum
            );
        }
        out
    }

    /// One PASS/MISS line per target, then the run time.
    pub(crate) fn targets_text(&self) -> String {
        let mut out = format!("\ntargets at n = {} (same run):\n", self.target_n);
        for t in &self.targets {
            let bound = match t.bound {
                Bound::AtMost => "<=",
                Bound::AtLeast => ">=",
            };
            let _ = writeln!(
                out,
                "{} {:<44} {:>10} {bound} {}",
                if t.pass { "PASS" } else { "MISS" },
                t.name,
                cell(t.value),
                t.limit
            );
        }
        let _ = writeln!(out, "run time: {:.0} s", self.seconds);
        out
    }

    /// Writes the JSON document to `path`, creating its directory.
    pub(crate) fn write_json(&self, path: &Path) -> BenchResult<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }
}
