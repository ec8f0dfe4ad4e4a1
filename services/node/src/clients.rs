//! Distinct client IPs over a sliding last minute, the figure the autoscaler scales on.
//!
//! Two counts side by side. Exactly, up to [`EXACT_LIMIT`] addresses: each address with
//! the last time it was seen, and the count is the addresses seen within the minute.
//! And a HyperLogLog [`Sketch`] per 10 s slice of the minute (six of them, 24 KB): their
//! union is what the load report carries, so the collector can count the ring's
//! distinct clients across nodes. Past the limit (a flood of addresses must not grow
//! memory without bound) the exact map is dropped and the count is the sketch's
//! estimate: a standard error of about 1.6 %, and a window that slides by 10 s steps.
//! Counting is exact again once a whole minute has seen fewer than half the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ringside_events::sketch::Sketch;

/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most addresses counted exactly.
pub const EXACT_LIMIT: usize = 100_000;
/// The time a sketch slice covers.
const SLICE: Duration = Duration::from_secs(10);
/// Slices of the window.
const SLICES: usize = 6;

/// The distinct client addresses of the last minute.
#[derive(Debug)]
pub struct ClientIps {
    /// `None` while past the limit.
    exact: Option<HashMap<IpAddr, Instant>>,
    /// A sketch per slice, with the slice's start, oldest first.
    slices: Vec<(Instant, Sketch)>,
    limit: usize,
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
            exact: Some(HashMap::new()),
            slices: Vec::new(),
            limit,
        }
    }

    /// Notes a request from `ip` at `now`.
    pub fn seen(&mut self, ip: IpAddr, now: Instant) {
        let current = match self.slices.last() {
            Some((start, _)) if now.duration_since(*start) < SLICE => self.slices.len() - 1,
            _ => {
                self.slices.push((now, Sketch::default()));
                if self.slices.len() > SLICES {
                    self.slices.remove(0);
                }
                self.slices.len() - 1
            }
        };
        if let Some((_, sketch)) = self.slices.get_mut(current) {
            sketch.add(ip);
        }
        if let Some(map) = &mut self.exact {
            map.insert(ip, now);
            if map.len() > self.limit {
                map.retain(|_, at| now.duration_since(*at) < WINDOW);
            }
            if map.len() > self.limit {
                self.exact = None;
            }
        }
    }

    /// The union of the sketches of the minute before `now`.
    pub fn sketch(&mut self, now: Instant) -> Sketch {
        self.slices
            .retain(|(start, _)| now.duration_since(*start) < WINDOW);
        let mut union = Sketch::default();
        for (_, sketch) in &self.slices {
            union.merge(sketch);
        }
        union
    }

    /// How many distinct addresses were seen in the minute before `now`.
    pub fn count(&mut self, now: Instant) -> u64 {
        if let Some(map) = &mut self.exact {
            map.retain(|_, at| now.duration_since(*at) < WINDOW);
            return map.len() as u64;
        }
        let estimate = self.sketch(now).estimate();
        // Exact again once a whole minute of slices holds fewer than half the limit:
        // the addresses are not known any more, so this starts a fresh minute.
        if self.slices.len() == SLICES && estimate < self.limit as u64 / 2 {
            self.exact = Some(HashMap::new());
        }
        estimate
    }

    /// Whether it counts exactly.
    pub fn is_exact(&self) -> bool {
        self.exact.is_some()
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
        assert_eq!(ips.sketch(t0 + Duration::from_secs(31)).estimate(), 51);
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
