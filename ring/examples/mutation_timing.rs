//! Rerunnable timing of the ring's mutations and derived values, in release mode:
//! `cargo run --release -p ringside-ring --example mutation_timing [-- N...]`.
//!
//! For each strategy and member count (default 10, 100 and 1000, 160 vnodes, unit
//! weights) it builds a ring by joins (their mean time is the first figure) and times,
//! on copies of it: `clone`, `add` of one member, `remove` of one member,
//! `diff(before, after)`, `checksum` (the first call on a changed ring, and again),
//! `from_parts` and `from_indexed_parts` of the ring's own parts, the first lookup after
//! a change, and a lookup (hash included) in steady state: min and median over the
//! repetitions, in microseconds (lookups in nanoseconds). Then a churn of leave +
//! join pairs in the fold's pattern (clone, change the copy, replace the ring), each
//! operation and each whole step timed after a warm-up: median, 99th percentile and
//! maximum.
//!
//! A measurement to compare before and after a change on the same machine, not a
//! benchmark with targets: that is `just bench ring`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ringside_ring::{Member, Ring, RingConfig, RingError, Strategy, diff};

/// Repetitions of every timed operation.
const REPS: usize = 15;
/// Leave + join pairs of the churn figures.
const CHURN: usize = 300;
/// Leave + join pairs before those, not timed.
const WARM_UP: usize = 100;
/// Keys per steady-state lookup round.
const KEYS: usize = 200_000;

/// Min and median of a set of durations.
struct Figure {
    min: Duration,
    median: Duration,
}

impl Figure {
    fn of(mut samples: Vec<Duration>) -> Figure {
        samples.sort_unstable();
        Figure {
            min: samples[0],
            median: samples[samples.len() / 2],
        }
    }
}

/// Times `run` on a fresh input from `setup` per repetition (setup not timed).
fn time<I, O>(mut setup: impl FnMut(usize) -> I, mut run: impl FnMut(I) -> O) -> Figure {
    let samples = (0..REPS)
        .map(|rep| {
            let input = setup(rep);
            let start = Instant::now();
            let out = run(input);
            let took = start.elapsed();
            drop(black_box(out));
            took
        })
        .collect();
    Figure::of(samples)
}

fn member(i: usize) -> Member {
    Member::new(format!("node-{i:05}"), 1)
}

fn build(config: RingConfig, n: usize) -> Result<Ring, RingError> {
    let mut ring = Ring::new(config);
    for i in 0..n {
        ring.add(member(i))?;
    }
    Ok(ring)
}

fn row(op: &str, unit: &str, f: &Figure, scale: f64) {
    println!(
        "  {op:<22} {:>12.2} {:>12.2} {unit}",
        f.min.as_secs_f64() * scale,
        f.median.as_secs_f64() * scale
    );
}

fn measure(strategy: Strategy, n: usize) -> Result<(), RingError> {
    let config = RingConfig::new(strategy, RingConfig::DEFAULT_VNODES)?;
    let started = Instant::now();
    let base = build(config, n)?;
    let joins = started.elapsed() / n as u32;
    // The base ring answers a lookup once, so every copy starts from a ring in use.
    base.owner(b"warm")?;
    println!(
        "{strategy} n={n} tokens={} ({:>12} {:>12})",
        base.token_count(),
        "min",
        "median"
    );
    let us = 1e6;
    println!(
        "  {:<22} {:>12.2} (mean of the joins that built the ring) us",
        "join while growing",
        joins.as_secs_f64() * us
    );
    let joiner = |rep: usize| Member::new(format!("joiner-{rep:03}"), 1);
    let leaver = |rep: usize| format!("node-{:05}", (rep * 37) % n);

    row("clone", "us", &time(|_| (), |()| base.clone()), us);
    let added = |rep| -> Result<Ring, RingError> {
        let mut r = base.clone();
        r.add(joiner(rep))?;
        Ok(r)
    };
    row(
        "add",
        "us",
        &time(|_| base.clone(), |mut r| r.add(joiner(0)).map(|()| r)),
        us,
    );
    row(
        "remove",
        "us",
        &time(
            |rep| (base.clone(), leaver(rep)),
            |(mut r, id)| r.remove(&id).map(|m| (m, r)),
        ),
        us,
    );
    let after = added(0)?;
    row(
        "diff(before, after)",
        "us",
        &time(|_| (), |()| diff(&base, &after)),
        us,
    );
    row(
        "checksum (first)",
        "us",
        &time(added, |r| r.map(|r| (r.checksum(), r))),
        us,
    );
    let _ = after.checksum();
    row(
        "checksum (again)",
        "us",
        &time(|_| (), |()| after.checksum()),
        us,
    );
    let parts = base.to_parts();
    row(
        "from_parts",
        "us",
        &time(|_| parts.clone(), |(c, m, t)| Ring::from_parts(c, m, t)),
        us,
    );
    let (members, indexed): (Vec<Member>, Vec<(u64, u32)>) = (
        base.members().cloned().collect(),
        base.indexed_tokens().collect(),
    );
    row(
        "from_indexed_parts",
        "us",
        &time(
            |_| {
                let (tokens, owners) = indexed.iter().copied().unzip();
                (members.clone(), tokens, owners)
            },
            |(m, t, o)| Ring::from_indexed_parts(config, m, t, o),
        ),
        us,
    );
    row(
        "first lookup after add",
        "us",
        &time(added, |r| r.map(|r| (r.owner(b"k").map(str::len), r))),
        us,
    );
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key-{i}")).collect();
    let lookups = time(
        |_| (),
        |()| {
            keys.iter()
                .map(|k| after.owner(k.as_bytes()).map_or(0, str::len))
                .sum::<usize>()
        },
    );
    row("lookup", "ns", &lookups, 1e9 / KEYS as f64);
    churn(&base, n)
}

/// A stream of leave + join pairs in the fold's pattern: clone the ring, remove a
/// member from the copy, add one, replace the ring with the copy. Each operation is
/// timed, and the whole step (clone, both changes, dropping the replaced ring). The
/// first [`WARM_UP`] steps are not timed: right after the ring was built, the
/// allocator is still growing the heap, and those steps pay page faults (up to ~1 ms
/// at n = 1000) that a long-running fold does not see.
fn churn(base: &Ring, n: usize) -> Result<(), RingError> {
    let mut ring = base.clone();
    let (mut adds, mut removes, mut steps) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..WARM_UP + CHURN {
        if step == WARM_UP {
            (adds, removes, steps) = (Vec::new(), Vec::new(), Vec::new());
        }
        let id = ring
            .members()
            .nth((step * 7919) % n)
            .map(|m| m.id.clone())
            .ok_or(RingError::Empty)?;
        let started = Instant::now();
        let mut next = ring.clone();
        let start = Instant::now();
        next.remove(&id)?;
        removes.push(start.elapsed());
        let start = Instant::now();
        next.add(Member::new(format!("churn-{step:05}"), 1))?;
        adds.push(start.elapsed());
        ring = next;
        steps.push(started.elapsed());
    }
    let figures = [
        ("churn remove", removes),
        ("churn add", adds),
        ("churn step", steps),
    ];
    for (op, mut samples) in figures {
        samples.sort_unstable();
        let at = |q: usize| samples[(samples.len() - 1) * q / 100].as_secs_f64() * 1e6;
        println!(
            "  {op:<22} p50 {:>9.2}  p99 {:>9.2}  max {:>9.2} us",
            at(50),
            at(99),
            at(100)
        );
    }
    Ok(())
}

fn main() -> Result<(), RingError> {
    let ns: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ns = if ns.is_empty() {
        vec![10, 100, 1000]
    } else {
        ns
    };
    for strategy in [Strategy::Balanced, Strategy::Random] {
        for &n in &ns {
            measure(strategy, n)?;
        }
    }
    Ok(())
}
