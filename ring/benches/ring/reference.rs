//! In-bench references: jump consistent hash and a Maglev lookup table.
//!
//! How it fits: the lower bounds a ring lookup is compared with. Both hash keys with
//! ringside's own [`hash_key`], so the comparison is about the structure, not the hash.
//! - Jump (Lamping and Veach, 2014): no state but the member count; it can only add or
//!   remove the highest bucket, so its remove measurement removes the last member.
//! - Maglev (Eisenbud et al., NSDI 2016, section 3.4): a table of M = 65537 entries
//!   filled round-robin from each member's permutation (offset, skip) derived from two
//!   hashes of its id; a lookup is one table read. Adding or removing rebuilds it.

use ringside_ring::hash_key;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::subject::{BenchResult, ShareBasis, Shares, Subject};

/// Jump consistent hash over members in join order.
#[derive(Clone)]
pub(crate) struct Jump {
    members: Vec<String>,
}

impl Jump {
    /// Buckets 0..n are `members` in order.
    pub(crate) fn build(members: &[String]) -> BenchResult<Self> {
        Ok(Self {
            members: members.to_vec(),
        })
    }
}

/// The bucket of `key` among `buckets` (> 0), as in the paper's listing.
fn jump(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (0u64, 0u64);
    while j < buckets as u64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as u64;
    }
    b as usize
}

impl Subject for Jump {
    fn lookup(&self, key: &[u8]) -> Option<&str> {
        if self.members.is_empty() {
            return None;
        }
        Some(&self.members[jump(hash_key(key), self.members.len())])
    }

    fn add(&mut self, id: &str) -> BenchResult<()> {
        self.members.push(id.to_owned());
        Ok(())
    }

    fn remove(&mut self, id: &str) -> BenchResult<()> {
        match self.members.last() {
            Some(last) if last == id => {
                self.members.pop();
                Ok(())
            }
            _ => Err(format!("jump hash can only remove the last bucket, not {id}").into()),
        }
    }

    fn removal_candidate<'a>(&self, members: &'a [String]) -> &'a str {
        &members[members.len() - 1]
    }

    fn shares(&self) -> Option<Shares> {
        Some(Shares {
            values: vec![1; self.members.len()],
            basis: ShareBasis::Formula,
        })
    }
}

/// Maglev table size: the paper's example prime.
const MAGLEV_M: usize = 65_537;
/// Seed of the hash giving a member's offset.
const OFFSET_SEED: u64 = 0x6f66_6673_6574;
/// Seed of the hash giving a member's skip.
const SKIP_SEED: u64 = 0x736b_6970;

/// A Maglev lookup table over members in join order.
#[derive(Clone)]
pub(crate) struct Maglev {
    members: Vec<String>,
    /// `table[hash % M]` is the index of the owning member.
    table: Vec<u32>,
}

impl Maglev {
    /// Populates the table for `members`.
    pub(crate) fn build(members: &[String]) -> BenchResult<Self> {
        Ok(Self {
            table: populate(members)?,
            members: members.to_vec(),
        })
    }

    /// Number of table entries whose owner differs in `after`.
    fn changed_entries(&self, after: &Self) -> usize {
        self.table
            .iter()
            .zip(&after.table)
            .filter(|(a, b)| self.members[**a as usize] != after.members[**b as usize])
            .count()
    }
}

/// The paper's population: members take turns claiming their next preferred empty
/// entry, preference `(offset + j * skip) mod M`, until the table is full.
fn populate(members: &[String]) -> BenchResult<Vec<u32>> {
    if members.is_empty() || members.len() > MAGLEV_M {
        return Err(format!("maglev needs 1..={MAGLEV_M} members").into());
    }
    let m = MAGLEV_M as u64;
    // Per member: (next candidate entry, starting at its offset; skip). M is prime and
    // 1 <= skip < M, so each member's preferences visit every entry.
    let mut prefs: Vec<(u64, u64)> = members
        .iter()
        .map(|id| {
            let offset = xxh3_64_with_seed(id.as_bytes(), OFFSET_SEED) % m;
            let skip = xxh3_64_with_seed(id.as_bytes(), SKIP_SEED) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; MAGLEV_M];
    let mut filled = 0;
    'fill: loop {
        for (index, (candidate, skip)) in prefs.iter_mut().enumerate() {
            while table[*candidate as usize] != EMPTY {
                *candidate = (*candidate + *skip) % m;
            }
            table[*candidate as usize] = index as u32;
            filled += 1;
            if filled == MAGLEV_M {
                break 'fill;
            }
        }
    }
    Ok(table)
}

impl Subject for Maglev {
    fn lookup(&self, key: &[u8]) -> Option<&str> {
        let entry = self.table[(hash_key(key) % MAGLEV_M as u64) as usize];
        Some(&self.members[entry as usize])
    }

    fn add(&mut self, id: &str) -> BenchResult<()> {
        self.members.push(id.to_owned());
        self.table = populate(&self.members)?;
        Ok(())
    }

    fn remove(&mut self, id: &str) -> BenchResult<()> {
        let at = self
            .members
            .iter()
            .position(|m| m == id)
            .ok_or_else(|| format!("maglev: {id} not present"))?;
        self.members.remove(at);
        self.table = populate(&self.members)?;
        Ok(())
    }

    fn plan_add(&self, id: &str) -> BenchResult<Option<usize>> {
        let mut next = self.clone();
        next.add(id)?;
        Ok(Some(self.changed_entries(&next)))
    }

    fn shares(&self) -> Option<Shares> {
        let mut counts = vec![0u128; self.members.len()];
        for &entry in &self.table {
            counts[entry as usize] += 1;
        }
        Some(Shares {
            values: counts,
            basis: ShareBasis::Table,
        })
    }

    fn moved_exact(&self, after: &Self) -> BenchResult<Option<f64>> {
        Ok(Some(self.changed_entries(after) as f64 / MAGLEV_M as f64))
    }
}
