//! SplitMix64, the fixed-seed generator of the churn in the ring specification
//! (docs/ring-spec.md, 6.5): benchmarks and test campaigns that must repeat exactly
//! draw from it. Not for anything that needs unpredictable numbers.

/// SplitMix64 (Steele, Lea and Flood): the state gains `0x9e3779b97f4a7c15` at each
/// draw, then is mixed.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// A uniform index below `n` (> 0); the modulo bias is below 2^-50 for the small
    /// `n` it is used with.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }

    /// Shuffles `items` (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's churn starts from this state; its first draws are fixed.
    #[test]
    fn draws_repeat() {
        let mut a = SplitMix64(0x636875726e);
        let mut b = SplitMix64(0x636875726e);
        let first: Vec<usize> = (0..8).map(|_| a.below(1000)).collect();
        assert_eq!(first, (0..8).map(|_| b.below(1000)).collect::<Vec<_>>());
        assert!(first.iter().any(|&x| x != first[0]));
        let mut items: Vec<u32> = (0..10).collect();
        a.shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
