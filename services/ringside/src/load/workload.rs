//! What each request is: read or write, which key, which node it goes to. One seeded
//! generator draws them in order, so the same seed gives the same request sequence
//! (which client sends each one is round-robin, so every client is used).

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// Keys are `user:0` .. `user:{N-1}`; in Zipf order `user:0` is the most popular.
pub(crate) fn key_name(index: usize) -> String {
    format!("user:{index}")
}

/// How keys are picked.
#[derive(Debug, Clone)]
enum Popularity {
    /// Every key equally often.
    Uniform(usize),
    /// Key of rank r (1-based) with probability proportional to 1/r^s: the cumulative
    /// distribution, searched with a uniform draw. Exact, at 8 bytes per key.
    Zipf(Vec<f64>),
}

impl Popularity {
    fn zipf(keys: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(keys);
        let mut total = 0.0;
        for rank in 1..=keys {
            total += (rank as f64).powf(-s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self::Zipf(cdf)
    }

    fn pick(&self, rng: &mut StdRng) -> usize {
        match self {
            Self::Uniform(keys) => rng.random_range(0..*keys),
            Self::Zipf(cdf) => {
                let u: f64 = rng.random();
                // Rounding can leave the last entry a hair below 1.
                cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
            }
        }
    }
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `GET /v1/keys/{key}`.
    Get,
    /// `PUT /v1/keys/{key}`.
    Put,
}

/// One request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Planned {
    /// Read or write.
    pub(crate) op: Op,
    /// Index of the key (see [`key_name`]).
    pub(crate) key: usize,
    /// Index of the target node among those known when it was planned.
    pub(crate) node: usize,
    /// Index of the client that sends it.
    pub(crate) client: usize,
}

/// The request sequence.
#[derive(Debug)]
pub(crate) struct Workload {
    popularity: Popularity,
    reads: f64,
    clients: usize,
    next_client: usize,
    rng: StdRng,
}

/// What the request sequence looks like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Distinct keys (at least 1).
    pub(crate) keys: usize,
    /// Zipf exponent; `None`: uniform.
    pub(crate) zipf: Option<f64>,
    /// Fraction of reads, 0..=1.
    pub(crate) reads: f64,
    /// Clients (at least 1).
    pub(crate) clients: usize,
}

impl Workload {
    /// The sequence of `shape` drawn from `seed`.
    pub(crate) fn new(shape: Shape, seed: u64) -> Self {
        Self {
            popularity: match shape.zipf {
                Some(s) => Popularity::zipf(shape.keys, s),
                None => Popularity::Uniform(shape.keys),
            },
            reads: shape.reads,
            clients: shape.clients,
            next_client: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next request, to one of `nodes` targets (at least 1).
    pub(crate) fn next(&mut self, nodes: usize) -> Planned {
        let op = if self.rng.random::<f64>() < self.reads {
            Op::Get
        } else {
            Op::Put
        };
        let key = self.popularity.pick(&mut self.rng);
        let node = self.rng.random_range(0..nodes.max(1));
        let client = self.next_client;
        self.next_client = (client + 1) % self.clients;
        Planned {
            op,
            key,
            node,
            client,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(zipf: Option<f64>, reads: f64) -> Shape {
        Shape {
            keys: 100,
            zipf,
            reads,
            clients: 3,
        }
    }

    fn counts(w: &mut Workload, n: usize) -> Vec<usize> {
        let mut counts = vec![0; 100];
        for _ in 0..n {
            counts[w.next(4).key] += 1;
        }
        counts
    }

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let run = |seed| {
            let mut w = Workload::new(shape(Some(1.1), 0.5), seed);
            (0..200).map(|_| w.next(3)).collect::<Vec<_>>()
        };
        let (a, b, c) = (run(7), run(7), run(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|p| p.node < 3));
        assert_eq!(
            a.iter().take(4).map(|p| p.client).collect::<Vec<_>>(),
            [0, 1, 2, 0]
        );
    }

    #[test]
    fn zipf_favours_the_first_keys_and_uniform_does_not() {
        let zipf = counts(&mut Workload::new(shape(Some(1.2), 0.9), 1), 20_000);
        let uniform = counts(&mut Workload::new(shape(None, 0.9), 1), 20_000);
        // P(user:0) = 1 / H(100, 1.2), about 0.27.
        assert!(
            (0.23..0.32).contains(&(zipf[0] as f64 / 20_000.0)),
            "{zipf:?}"
        );
        assert!(zipf[0] > zipf[1] && zipf[1] > zipf[9] && zipf[9] > zipf[99]);
        assert!(
            uniform.iter().all(|&c| (120..290).contains(&c)),
            "{uniform:?}"
        );
    }

    #[test]
    fn the_read_fraction_is_kept() {
        let mut w = Workload::new(shape(None, 0.8), 3);
        let reads = (0..10_000).filter(|_| w.next(1).op == Op::Get).count();
        assert!((7_700..8_300).contains(&reads), "{reads}");
        let mut all_writes = Workload::new(shape(None, 0.0), 3);
        assert!((0..100).all(|_| all_writes.next(1).op == Op::Put));
    }
}
