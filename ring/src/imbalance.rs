//! How unevenly a ring spreads the key space: each member's share over its fair share
//! by weight, and the peak of those (the imbalance; 1.0 is perfectly even).

use crate::Ring;

impl Ring {
    /// Each member's load: its share of the ring over its fair share by weight
    /// (`weight / total weight`), by id, in member order. 1.0 is exactly fair.
    pub fn loads(&self) -> Vec<(String, f64)> {
        let total: u64 = self.members().map(|m| u64::from(m.weight)).sum();
        self.ownership()
            .into_iter()
            .zip(self.members())
            .map(|(share, member)| {
                let fair = f64::from(member.weight) / total.max(1) as f64;
                let load = if fair > 0.0 {
                    share.fraction / fair
                } else {
                    0.0
                };
                (share.id, load)
            })
            .collect()
    }

    /// The imbalance: the peak load (the mean load per unit of weight is 1 by
    /// construction, so the peak is peak over mean). `None` for an empty ring.
    pub fn imbalance(&self) -> Option<f64> {
        self.loads().into_iter().map(|(_, l)| l).reduce(f64::max)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Member, Ring, RingConfig, Strategy};

    #[test]
    fn a_balanced_ring_is_nearly_even_and_weights_count() {
        let mut ring = Ring::new(RingConfig::new(Strategy::Balanced, 64).unwrap());
        assert_eq!(ring.imbalance(), None);
        for (id, weight) in [("a", 1), ("b", 1), ("c", 2)] {
            ring.add(Member::new(id, weight)).unwrap();
        }
        let loads = ring.loads();
        assert_eq!(loads.len(), 3);
        for (_, load) in &loads {
            assert!((load - 1.0).abs() < 0.05, "{loads:?}");
        }
        let imbalance = ring.imbalance().unwrap();
        assert!((1.0..1.05).contains(&imbalance), "{imbalance}");
    }
}
