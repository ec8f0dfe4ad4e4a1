//! Distinct client IPs over a sliding last minute, the figure the autoscaler scales on.
//!
//! Exact up to [`EXACT_LIMIT`] addresses: each address with the last time it was seen,
//! and the count is the addresses seen within the minute. Past the limit (a flood of
//! addresses must not grow memory without bound) it switches to a HyperLogLog sketch
//! per [`SLICE`] of the minute ([`SLICES`] of them, 4,096 registers each, 24 KB in
//! all), merged for the estimate: a standard error of 1.04/sqrt(4096), about 1.6 %,
//! and the window slides by slices of 10 s rather than continuously. It goes back to
//! exact counting when a whole minute has seen fewer addresses than the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most addresses counted exactly.
pub const EXACT_LIMIT: usize = 100_000;
/// Sketch slices of the window.
const SLICES: usize = 6;
/// The time a slice covers.
const SLICE: Duration = Duration::from_secs(10);
/// Registers per sketch: 2^12.
const PRECISION: u32 = 12;
const REGISTERS: usize = 1 << PRECISION;

/// The distinct client addresses of the last minute.
#[derive(Debug)]
pub struct ClientIps {
    mode: Mode,
    limit: usize,
}

#[derive(Debug)]
enum Mode {
    Exact(HashMap<IpAddr, Instant>),
    Sketch(Sketches),
}

#[derive(Debug)]
struct Sketches {
    /// One sketch per slice, the slice's start.
    slices: Vec<(Instant, Box<[u8; REGISTERS]>)>,
}

impl Default for ClientIps {
    fn default() -> Self {
        Self::with_limit(EXACT_LIMIT)
    }
}

impl ClientIps {
    /// Exact up to `limit` addresses.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            mode: Mode::Exact(HashMap::new()),
            limit,
        }
    }

    /// Notes a request from `ip` at `now`.
    pub fn seen(&mut self, ip: IpAddr, now: Instant) {
        match &mut self.mode {
            Mode::Exact(map) => {
                map.insert(ip, now);
                if map.len() > self.limit {
                    map.retain(|_, at| now.duration_since(*at) < WINDOW);
                }
                if map.len() > self.limit {
                    let mut sketches = Sketches { slices: Vec::new() };
                    for (ip, at) in map.iter() {
                        sketches.add(*ip, *at);
                    }
                    self.mode = Mode::Sketch(sketches);
                }
            }
            Mode::Sketch(sketches) => sketches.add(ip, now),
        }
    }

    /// How many distinct addresses were seen in the minute before `now`.
    pub fn count(&mut self, now: Instant) -> u64 {
        match &mut self.mode {
            Mode::Exact(map) => {
                map.retain(|_, at| now.duration_since(*at) < WINDOW);
                map.len() as u64
            }
            Mode::Sketch(sketches) => {
                sketches.expire(now);
                let estimate = sketches.estimate();
                // Back to exact counting once the minute holds fewer than the limit:
                // the addresses are not known any more, so this starts a fresh minute.
                if sketches.slices.len() == SLICES && estimate < self.limit as u64 / 2 {
                    self.mode = Mode::Exact(HashMap::new());
                }
                estimate
            }
        }
    }

    /// Whether it counts exactly.
    pub fn is_exact(&self) -> bool {
        matches!(self.mode, Mode::Exact(_))
    }
}

impl Sketches {
    fn add(&mut self, ip: IpAddr, at: Instant) {
        let current = match self.slices.last_mut() {
            Some((start, registers)) if at.duration_since(*start) < SLICE => registers,
            _ => {
                self.slices.push((at, Box::new([0; REGISTERS])));
                if self.slices.len() > SLICES {
                    self.slices.remove(0);
                }
                match self.slices.last_mut() {
                    Some((_, registers)) => registers,
                    None => return,
                }
            }
        };
        let hash = match ip {
            IpAddr::V4(v4) => xxhash_rust::xxh3::xxh3_64(&v4.octets()),
            IpAddr::V6(v6) => xxhash_rust::xxh3::xxh3_64(&v6.octets()),
        };
        let index = (hash >> (64 - PRECISION)) as usize;
        let rest = hash << PRECISION;
        // Position of the first 1 bit in what is left, counted from 1.
        let rank = (rest.leading_zeros() + 1).min(64 - PRECISION + 1) as u8;
        if let Some(register) = current.get_mut(index) {
            *register = (*register).max(rank);
        }
    }

    fn expire(&mut self, now: Instant) {
        self.slices
            .retain(|(start, _)| now.duration_since(*start) < WINDOW);
    }

    /// The HyperLogLog estimate of the union of the slices (with the small-range
    /// correction: linear counting while many registers are empty).
    fn estimate(&self) -> u64 {
        let mut merged = [0u8; REGISTERS];
        for (_, registers) in &self.slices {
            for (m, r) in merged.iter_mut().zip(registers.iter()) {
                *m = (*m).max(*r);
            }
        }
        let m = REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = merged.iter().map(|r| 2f64.powi(-i32::from(*r))).sum();
        let raw = alpha * m * m / sum;
        let zeros = merged.iter().filter(|r| **r == 0).count();
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | i))
    }

    #[test]
    fn exact_counts_slide_with_the_minute() {
        let mut ips = ClientIps::default();
        let t0 = Instant::now();
        for i in 0..50 {
            ips.seen(ip(i), t0);
            ips.seen(ip(i), t0 + Duration::from_secs(1));
        }
        ips.seen(ip(999), t0 + Duration::from_secs(30));
        assert_eq!(ips.count(t0 + Duration::from_secs(31)), 51);
        assert_eq!(
            ips.count(t0 + Duration::from_secs(75)),
            1,
            "only 999 is recent"
        );
        assert!(ips.is_exact());
    }

    #[test]
    fn past_the_limit_the_sketch_is_within_its_error() {
        let mut ips = ClientIps::with_limit(1000);
        let t0 = Instant::now();
        let n = 20_000;
        for i in 0..n {
            ips.seen(ip(i), t0 + Duration::from_millis(u64::from(i) % 9_000));
        }
        assert!(!ips.is_exact());
        let estimate = ips.count(t0 + Duration::from_secs(10)) as f64;
        let error = (estimate - f64::from(n)).abs() / f64::from(n);
        // Four standard errors (1.6 % each).
        assert!(error < 0.065, "estimate {estimate} for {n}");
        // A minute later they are gone.
        assert_eq!(ips.count(t0 + Duration::from_secs(80)), 0);
    }
}
