//! A latency histogram of fixed size: microseconds in log-linear buckets (64 per
//! doubling, so a quantile is within 1.6% of the true value), whatever the run's length.
//! A long `ringside load` (the demo runs it for as long as `up` runs) must not keep one
//! sample per request.

use std::time::Duration;

/// Sub-buckets per doubling, as a power of two.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Buckets covering every u64: exact below `SUB`, then `SUB` per doubling.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Counts of latencies.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            max: 0,
        }
    }
}

fn index(micros: u64) -> usize {
    if micros < SUB as u64 {
        return micros as usize;
    }
    let shift = (63 - micros.leading_zeros()) - SUB_BITS;
    // The SUB_BITS bits after the leading one pick the sub-bucket.
    let sub = (micros >> shift) as usize & (SUB - 1);
    ((shift as usize + 1) << SUB_BITS) + sub
}

/// The largest value that falls in bucket `i`.
fn highest(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = (i >> SUB_BITS) - 1;
    let low = ((SUB + (i & (SUB - 1))) as u64) << shift;
    low + ((1u64 << shift) - 1)
}

impl Histogram {
    /// Counts one latency.
    pub(crate) fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[index(micros)] += 1;
        self.count += 1;
        self.max = self.max.max(micros);
    }

    /// The latency at quantile `q` (0..=1): the top of its bucket, never above the
    /// largest latency seen; zero when empty.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        // The rank of the sample at q, 1-based: p50 of 2 samples is the first.
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(highest(i).min(self.max));
            }
        }
        Duration::from_micros(self.max)
    }

    /// The largest latency counted.
    pub(crate) fn max(&self) -> Duration {
        Duration::from_micros(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for v in (0..5000).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(i >= last, "index falls at {v}");
            assert!(highest(i) >= v, "bucket {i} tops below {v}");
            // Within 1/SUB of the value.
            assert!(
                highest(i) - v <= v / SUB as u64,
                "bucket {i} too wide at {v}"
            );
            last = i;
        }
    }

    #[test]
    fn quantiles_are_close_to_exact() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        for ms in 1..=1000u64 {
            h.record(Duration::from_micros(ms * 1000));
        }
        for (q, exact) in [(0.5, 500_000.0), (0.99, 990_000.0), (0.999, 999_000.0)] {
            let got = h.quantile(q).as_micros() as f64;
            assert!((got - exact).abs() / exact < 0.02, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0), Duration::from_secs(1));
        assert_eq!(h.max(), Duration::from_secs(1));
    }
}
