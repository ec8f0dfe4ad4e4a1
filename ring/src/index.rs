//! The lookup index: one cache line per bucket, so a lookup is a table read plus a
//! few vector compares.
//!
//! The ring's `2^64` positions are cut into `2^k` buckets by their top `k` bits, with
//! 4 to 8 tokens per bucket on average. Each bucket is a 64-byte block of 16 lanes; lane
//! `i` packs the 16 position bits after the bucket bits (the key) of the bucket's `i`-th
//! token with its owner (16 bits). Lanes after the bucket's tokens hold key `0xffff`
//! and the owner of the first token after the bucket (wrapping to token 0), so the
//! owner of a position is the lane at "number of lanes with a smaller key". A key equal
//! to the position's key leaves the lower bits undecided; such lookups, buckets with
//! more than 15 tokens, and rings with 65535 or more members binary-search the sorted
//! tokens instead. Built on the first lookup after a membership change (linear in
//! tokens plus buckets) and shared by clones; plans and diffs never need it.

use std::sync::Arc;

use crate::slots::Slot;

/// Average tokens per bucket is between half this and this.
const TOKENS_PER_BUCKET: usize = 8;
/// Position bits per lane key.
const KEY_BITS: u32 = 16;
/// Lanes per block (one 64-byte cache line).
const LANES: usize = 16;
/// Key of the padding lanes: not below any position's key.
const PAD_KEY: u32 = 0xffff;
/// Owner value that sends a lookup to the slow path (a full block, or a wide ring).
const NO_OWNER: u32 = 0xffff;

/// One bucket: sorted `key << 16 | owner` lanes, then padding.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Block([u32; LANES]);

/// Bucket table over the sorted slots of a ring. Cloning shares the blocks.
#[derive(Clone, Debug, Default)]
pub(crate) struct LookupIndex {
    /// `64 - k`: a position's bucket is `position >> shift`.
    shift: u32,
    /// One block per bucket; empty for an empty ring or a wide one (every lookup then
    /// searches the sorted slots).
    blocks: Arc<[Block]>,
}

impl LookupIndex {
    /// Builds the index for `slots` (sorted by position; empty gives an empty index)
    /// of a ring with `members` members.
    pub(crate) fn build(slots: &[Slot], members: usize) -> Self {
        let Some(first) = slots.first() else {
            return LookupIndex::default();
        };
        let bits = (slots.len() / TOKENS_PER_BUCKET)
            .next_power_of_two()
            .trailing_zeros()
            .max(1);
        let shift = 64 - bits;
        if members >= NO_OWNER as usize {
            return LookupIndex {
                shift,
                blocks: Arc::default(),
            };
        }
        let pad = |owner: u32| Block([(PAD_KEY << KEY_BITS) | owner; LANES]);
        // Each block is written once, in order and in place: a bucket is padded when the
        // token after it (whose owner pads it) comes, then the empty buckets before that
        // token are pushed, then its own bucket.
        let mut blocks: Vec<Block> = Vec::with_capacity(1 << bits);
        let mut lanes = 0;
        for s in slots {
            let bucket = (s.token >> shift) as usize;
            if bucket + 1 != blocks.len() {
                if let Some(last) = blocks.last_mut() {
                    close(last, lanes, s.owner);
                }
                // Buckets without tokens: everything goes to this token's owner.
                blocks.resize(bucket, pad(s.owner));
                blocks.push(Block([0; LANES]));
                lanes = 0;
            }
            if let Some(lane) = blocks[bucket].0.get_mut(lanes) {
                *lane = (key(s.token, shift) << KEY_BITS) | s.owner;
            }
            lanes += 1;
        }
        // The last bucket, and those after it, wrap to the first token's owner.
        if let Some(last) = blocks.last_mut() {
            close(last, lanes, first.owner);
        }
        blocks.resize(1 << bits, pad(first.owner));
        LookupIndex {
            shift,
            blocks: Arc::from(blocks),
        }
    }

    /// The owner (member index) of `hash`, or `None` when the index cannot tell (an
    /// empty or wide ring, a crowded bucket, a key tie): the caller then searches the
    /// sorted slots.
    #[inline]
    pub(crate) fn owner(&self, hash: u64) -> Option<u32> {
        let block = self.blocks.get((hash >> self.shift) as usize)?;
        let want = key(hash, self.shift);
        // A plain count over all lanes (no early exit) compiles to vector compares; the
        // lanes are sorted, so the count is the answer's lane.
        let mut before = 0usize;
        let mut tie = false;
        for &lane in &block.0 {
            let k = lane >> KEY_BITS;
            before += usize::from(k < want);
            tie |= k == want;
        }
        let owner = block.0[before % LANES] & 0xffff;
        (!tie && owner != NO_OWNER).then_some(owner)
    }
}

/// Pads a bucket after its `lanes` tokens with the owner of the token after it, or
/// marks it for the slow path if no lane is left for padding.
fn close(block: &mut Block, lanes: usize, next_owner: u32) {
    match block.0.get_mut(lanes..) {
        Some(pad) if !pad.is_empty() => pad.fill((PAD_KEY << KEY_BITS) | next_owner),
        _ => *block = Block([u32::MAX; LANES]),
    }
}

/// The owner (member index) of `hash` by binary search of the sorted slots: the first
/// slot at or after `hash`, wrapping; `None` for an empty ring.
pub(crate) fn search(slots: &[Slot], hash: u64) -> Option<u32> {
    let at = slots.partition_point(|s| s.token < hash);
    slots.get(at).or(slots.first()).map(|s| s.owner)
}

/// The [`KEY_BITS`] position bits right after the bucket bits.
#[inline]
fn key(position: u64, shift: u32) -> u32 {
    ((position << (64 - shift)) >> (64 - KEY_BITS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the ring answers: the index, else the search.
    fn lookup(index: &LookupIndex, slots: &[Slot], hash: u64) -> Option<u32> {
        index.owner(hash).or_else(|| search(slots, hash))
    }

    /// The definition, by linear scan: the first slot at or after `hash`, wrapping.
    fn reference(slots: &[Slot], hash: u64) -> Option<u32> {
        let at = slots.iter().find(|s| s.token >= hash);
        at.or(slots.first()).map(|s| s.owner)
    }

    fn check(slots: &[Slot]) {
        let members = slots
            .iter()
            .map(|s| s.owner as usize + 1)
            .max()
            .unwrap_or(0);
        let index = LookupIndex::build(slots, members);
        let mut probes = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63];
        for s in slots {
            for d in [0u64, 1, 2, 1 << 20, 1 << 40] {
                probes.extend([s.token.wrapping_sub(d), s.token.wrapping_add(d)]);
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            probes.push(x);
        }
        for h in probes {
            assert_eq!(
                lookup(&index, slots, h),
                reference(slots, h),
                "position {h:#x}"
            );
        }
    }

    fn slots(tokens: &[(u64, u32)]) -> Vec<Slot> {
        let mut v: Vec<Slot> = tokens
            .iter()
            .map(|&(token, owner)| Slot { token, owner })
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn empty_ring_has_no_owner() {
        assert_eq!(lookup(&LookupIndex::build(&[], 0), &[], 42), None);
    }

    #[test]
    fn agrees_with_the_definition() {
        check(&slots(&[(7, 0)]));
        check(&slots(&[(0, 1), (u64::MAX, 0)]));
        // Spread tokens, several owners.
        let spread: Vec<(u64, u32)> = (0..500u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), (i % 7) as u32))
            .collect();
        check(&slots(&spread));
    }

    #[test]
    fn crowded_buckets_ties_and_shared_positions() {
        // 40 tokens inside one bucket (more than a block holds), tokens whose keys tie,
        // and two tokens at one position (a random-ring collision).
        let mut t: Vec<(u64, u32)> = (0..40u64)
            .map(|i| ((1 << 50) + i, (i % 3) as u32))
            .collect();
        t.extend([(1 << 62, 4), ((1 << 62) + 1, 5), ((1 << 62) + 2, 4)]);
        t.extend([(1 << 61, 1), (1 << 61, 2)]);
        t.extend((0..64u64).map(|i| (i << 58, 3)));
        check(&slots(&t));
    }

    #[test]
    fn owners_beyond_sixteen_bits_use_the_sorted_tokens() {
        let t: Vec<(u64, u32)> = (0..300u64)
            .map(|i| (i.wrapping_mul(0x2545_f491_4f6c_dd1d), 70_000 + i as u32))
            .collect();
        check(&slots(&t));
    }
}
