//! The key set, the timing method and the one generic measuring routine.
//!
//! How it fits: `main` calls [`measure`] once per implementation and member count;
//! every figure of a [`Row`] is computed here the same way for every [`Subject`].
//!
//! Method: each timed figure is taken in `rounds` rounds after one untimed warm-up
//! pass; a round's figure is total time over operations; the row keeps the min and the
//! median of the rounds. Moved key space is exact where the implementation exposes its
//! key space, and is always also sampled over the key set as a cross-check.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ringside_ring::SplitMix64;
use serde::Serialize;

use crate::subject::{BenchResult, Subject};

/// What one run measures.
pub(crate) struct Config {
    /// Number of string keys `key-{i}`.
    pub(crate) keys: usize,
    /// Member counts.
    pub(crate) sizes: Vec<usize>,
    /// Timed rounds per figure.
    pub(crate) rounds: usize,
    /// Random leave + join steps of the churn run.
    pub(crate) churn_steps: usize,
    /// Member counts of the build measurement (ringside only), smallest first.
    pub(crate) build_sizes: Vec<usize>,
    /// A smoke run whose figures are not comparable.
    pub(crate) quick: bool,
}

impl Config {
    /// The benchmark as specified: 1M keys, n = 10, 100, 1000, 3 rounds, 2,000 steps;
    /// builds of 1,000 and 10,000 members.
    pub(crate) fn full() -> Self {
        Self {
            keys: 1_000_000,
            sizes: vec![10, 100, 1000],
            rounds: 3,
            churn_steps: 2_000,
            build_sizes: vec![1000, 10_000],
            quick: false,
        }
    }

    /// A smoke run: 100k keys, n = 10, 100, one round, 200 churn steps, builds of 100
    /// and 1,000 members.
    pub(crate) fn quick() -> Self {
        Self {
            keys: 100_000,
            sizes: vec![10, 100],
            rounds: 1,
            churn_steps: 200,
            build_sizes: vec![100, 1000],
            quick: true,
        }
    }
}

/// Minimum time spent on one round of plan computations (at least 3 plans a round).
const PLAN_ROUND: Duration = Duration::from_millis(30);
/// Seed of the churn run's member choice.
const CHURN_SEED: u64 = 0x636875726e; // "churn"

/// The keys `key-0`, `key-1`, ... stored back to back, so the key set itself adds no
/// pointer chasing to a lookup.
pub(crate) struct KeySet {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KeySet {
    /// The first `count` keys.
    pub(crate) fn new(count: usize) -> Self {
        let mut bytes = Vec::with_capacity(count * 11);
        let mut ends = Vec::with_capacity(count);
        for i in 0..count {
            bytes.extend_from_slice(format!("key-{i}").as_bytes());
            ends.push(bytes.len());
        }
        Self { bytes, ends }
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The keys in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.bytes[start..end])
    }
}

/// Min and median over the rounds of a timed figure.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Timed {
    /// Fastest round.
    pub(crate) min: f64,
    /// Median round.
    pub(crate) median: f64,
}

/// How a row's non-timed figures were obtained.
#[derive(Debug, Serialize)]
pub(crate) struct Basis {
    /// `exact-arcs`, `exact-table` or `formula`; `None` when there is no figure.
    pub(crate) peak_mean: Option<&'static str>,
    /// `exact` (from the implementation's key space) or `sampled` (over the key set).
    pub(crate) moved: &'static str,
}

/// Cross-checks over the key set, next to the figures they check.
#[derive(Debug, Serialize)]
pub(crate) struct Checks {
    /// Moved/ideal on add, from keys whose owner changed.
    pub(crate) moved_ideal_add_sampled: f64,
    /// Moved/ideal on remove, from keys whose owner changed.
    pub(crate) moved_ideal_remove_sampled: f64,
    /// Keys that moved between two members that were both present (0 when minimal).
    pub(crate) stray_keys_add: usize,
    /// Same, on remove.
    pub(crate) stray_keys_remove: usize,
    /// Time to build the ring from scratch, once (not a target; for context).
    pub(crate) build_ms: f64,
}

/// The figures of one implementation at one member count.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    /// Implementation name.
    #[serde(rename = "impl")]
    pub(crate) name: &'static str,
    /// Members.
    pub(crate) n: usize,
    /// Nanoseconds per lookup, key hashing included.
    pub(crate) lookup_ns: Timed,
    /// Microseconds to compute the plan for one added member; `None` without a plan.
    pub(crate) plan_add_us: Option<Timed>,
    /// The same plan as clone + add + diff, where that differs from `plan_add_us`.
    pub(crate) plan_add_by_diff_us: Option<Timed>,
    /// Largest ownership share over the mean share.
    pub(crate) peak_mean: Option<f64>,
    /// The same after the churn run; `None` where churn is not run.
    pub(crate) peak_mean_churn: Option<f64>,
    /// Moved fraction on adding one member over the ideal 1/(n+1).
    pub(crate) moved_ideal_add: f64,
    /// Moved fraction on removing one member over the ideal 1/n.
    pub(crate) moved_ideal_remove: f64,
    /// How the figures were obtained.
    pub(crate) basis: Basis,
    /// Cross-checks.
    pub(crate) checks: Checks,
}

/// Building one of ringside's rings from a member list, at one member count.
#[derive(Debug, Serialize)]
pub(crate) struct BuildRow {
    /// Implementation name.
    #[serde(rename = "impl")]
    pub(crate) name: &'static str,
    /// Members.
    pub(crate) n: usize,
    /// Milliseconds to build the ring (members `node-0` .. `node-{n-1}`, weight 1,
    /// joined in that order through a `RingBuilder`).
    pub(crate) build_ms: Timed,
    /// Tokens of the ring built.
    pub(crate) tokens: usize,
    /// Its checksum, as hex: the same ring at every round and in every run.
    pub(crate) checksum: String,
}

/// Builds ringside's ring of `strategy` over `members` in `rounds` timed rounds.
pub(crate) fn measure_build(
    name: &'static str,
    strategy: ringside_ring::Strategy,
    members: &[String],
    config: &Config,
) -> BenchResult<BuildRow> {
    eprintln!("ring bench: build {name} n={}", members.len());
    let mut built = None;
    let build_ms = timed(config.rounds, || {
        let start = Instant::now();
        let ring = crate::subject::Ringside::build(strategy, members)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        built = Some(ring);
        Ok(ms)
    })?;
    let ring = built.ok_or("no build round ran")?;
    Ok(BuildRow {
        name,
        n: members.len(),
        build_ms,
        tokens: ring.tokens(),
        checksum: format!("{:#018x}", ring.checksum()),
    })
}

/// Runs `round` (returning one round's figure) `rounds` times.
fn timed(rounds: usize, mut round: impl FnMut() -> BenchResult<f64>) -> BenchResult<Timed> {
    let mut figures = (0..rounds)
        .map(|_| round())
        .collect::<BenchResult<Vec<f64>>>()?;
    figures.sort_by(f64::total_cmp);
    Ok(Timed {
        min: figures[0],
        median: figures[figures.len() / 2],
    })
}

/// One pass of lookups over all keys: nanoseconds per lookup.
fn lookup_round<S: Subject>(ring: &S, keys: &KeySet) -> f64 {
    let start = Instant::now();
    for key in keys.iter() {
        black_box(ring.lookup(black_box(key)));
    }
    start.elapsed().as_nanos() as f64 / keys.len() as f64
}

/// A way to compute the plan for one added member (see [`Subject::plan_add`]).
type Planner<S> = fn(&S, &str) -> BenchResult<Option<usize>>;

/// Plans for the same joiner, repeated for at least [`PLAN_ROUND`]: microseconds per plan.
fn plan_round<S: Subject>(ring: &S, joiner: &str, plan: Planner<S>) -> BenchResult<f64> {
    let start = Instant::now();
    let mut plans = 0u32;
    while plans < 3 || start.elapsed() < PLAN_ROUND {
        black_box(plan(ring, black_box(joiner))?);
        plans += 1;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(plans))
}

/// Times `plan` (after one untimed call), or `None` when the implementation has none.
fn timed_plan<S: Subject>(
    ring: &S,
    joiner: &str,
    plan: Planner<S>,
    config: &Config,
) -> BenchResult<Option<Timed>> {
    match plan(ring, joiner)? {
        Some(_) => Ok(Some(timed(config.rounds, || {
            plan_round(ring, joiner, plan)
        })?)),
        None => Ok(None),
    }
}

/// Peak/mean after `steps` steps of: a random member leaves, a new member joins.
fn churned_peak_mean<S: Subject>(
    ring: &S,
    members: &[String],
    steps: usize,
) -> BenchResult<Option<f64>> {
    let mut ring = ring.clone();
    let mut current = members.to_vec();
    let mut rng = SplitMix64(CHURN_SEED);
    for step in 0..steps {
        let leaving = current.swap_remove(rng.below(current.len()));
        ring.remove(&leaving)?;
        let joining = format!("join-{step}");
        ring.add(&joining)?;
        current.push(joining);
    }
    Ok(ring.shares().map(|s| s.peak_mean(current.len())))
}

/// Movement of one membership change, as fractions of the ideal.
struct Movement {
    /// From the implementation's key space, if it exposes it.
    exact: Option<f64>,
    /// From the keys whose owner changed.
    sampled: f64,
    /// Keys that moved without involving `changed` (the added or removed member).
    stray: usize,
}

/// Compares `after` with `before` (whose owners of `keys` are `before_owners`).
fn movement<S: Subject>(
    before: &S,
    before_owners: &[Option<&str>],
    after: &S,
    keys: &KeySet,
    changed: &str,
    ideal: f64,
) -> BenchResult<Movement> {
    let (mut moved, mut stray) = (0usize, 0usize);
    for (key, &old) in keys.iter().zip(before_owners) {
        let new = after.lookup(key);
        if new != old {
            moved += 1;
            if old != Some(changed) && new != Some(changed) {
                stray += 1;
            }
        }
    }
    Ok(Movement {
        exact: before.moved_exact(after)?.map(|f| f / ideal),
        sampled: moved as f64 / keys.len() as f64 / ideal,
        stray,
    })
}

/// Measures one implementation over `members`, built by `build`.
pub(crate) fn measure<S: Subject>(
    name: &'static str,
    members: &[String],
    build: &dyn Fn(&[String]) -> BenchResult<S>,
    keys: &KeySet,
    config: &Config,
) -> BenchResult<Row> {
    let n = members.len();
    eprintln!("ring bench: {name} n={n}");
    let start = Instant::now();
    let ring = build(members)?;
    let build_ms = start.elapsed().as_secs_f64() * 1e3;

    lookup_round(&ring, keys);
    let lookup_ns = timed(config.rounds, || Ok(lookup_round(&ring, keys)))?;

    let joiner = format!("node-{n}");
    let plan_add_us = timed_plan(&ring, &joiner, S::plan_add, config)?;
    let plan_add_by_diff_us = timed_plan(&ring, &joiner, S::plan_add_by_diff, config)?;

    let shares = ring.shares();
    let peak_mean_churn = if S::CHURN {
        churned_peak_mean(&ring, members, config.churn_steps)?
    } else {
        None
    };

    let before_owners: Vec<Option<&str>> = keys.iter().map(|k| ring.lookup(k)).collect();
    let mut added = ring.clone();
    added.add(&joiner)?;
    let add = movement(
        &ring,
        &before_owners,
        &added,
        keys,
        &joiner,
        1.0 / (n + 1) as f64,
    )?;
    drop(added);
    let leaver = ring.removal_candidate(members);
    let mut removed = ring.clone();
    removed.remove(leaver)?;
    let remove = movement(
        &ring,
        &before_owners,
        &removed,
        keys,
        leaver,
        1.0 / n as f64,
    )?;

    Ok(Row {
        name,
        n,
        lookup_ns,
        plan_add_us,
        plan_add_by_diff_us,
        peak_mean: shares.as_ref().map(|s| s.peak_mean(n)),
        peak_mean_churn,
        moved_ideal_add: add.exact.unwrap_or(add.sampled),
        moved_ideal_remove: remove.exact.unwrap_or(remove.sampled),
        basis: Basis {
            peak_mean: shares.as_ref().map(|s| s.basis.label()),
            moved: if add.exact.is_some() {
                "exact"
            } else {
                "sampled"
            },
        },
        checks: Checks {
            moved_ideal_add_sampled: add.sampled,
            moved_ideal_remove_sampled: remove.sampled,
            stray_keys_add: add.stray,
            stray_keys_remove: remove.stray,
            build_ms,
        },
    })
}
