//! The ring's checksum (`docs/ring-spec.md` section 9): what a snapshot, an event and a
//! replay compare to know they hold the same ring, byte for byte.

use super::Ring;
use crate::Strategy;

impl Ring {
    /// Checksum of the ring: xxh3-64 (seed [`crate::HASH_SEED`]) over the canonical
    /// encoding of configuration, members and tokens described in `docs/ring-spec.md`.
    /// Computed by the first call after a change and kept until the next one.
    pub fn checksum(&self) -> u64 {
        *self.checksum.get_or_init(|| self.compute_checksum())
    }

    /// The checksum's hash, over the byte string of the spec (section 9).
    fn compute_checksum(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(crate::HASH_SEED);
        h.update(b"ringside-ring-v1");
        h.update(&[match self.config.strategy {
            Strategy::Random => 0,
            Strategy::Balanced => 1,
        }]);
        h.update(&self.config.vnodes.to_le_bytes());
        h.update(&(self.members.len() as u32).to_le_bytes());
        for m in &self.members {
            h.update(&(m.id.len() as u32).to_le_bytes());
            h.update(m.id.as_bytes());
            h.update(&m.weight.to_le_bytes());
        }
        h.update(&(self.slots.len() as u32).to_le_bytes());
        // The hasher pays per call, so tokens go in a few kilobytes at a time.
        const PER_CHUNK: usize = 256;
        let mut buf = [0u8; 12 * PER_CHUNK];
        for chunk in self.slots.chunks(PER_CHUNK) {
            for (out, s) in buf.chunks_exact_mut(12).zip(chunk) {
                out[..8].copy_from_slice(&s.token.to_le_bytes());
                out[8..].copy_from_slice(&s.owner.to_le_bytes());
            }
            h.update(&buf[..12 * chunk.len()]);
        }
        h.digest()
    }
}
