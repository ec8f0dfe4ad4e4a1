//! The peer crates from crates.io: `hashring` 0.3 and `consistent_hash_ring` 0.8.
//!
//! How it fits: thin [`Subject`] wrappers, each configured like ringside (160 virtual
//! nodes per member, string member ids) and used through its public API only.
//! - `hashring` has no virtual nodes of its own: a member is 160 `VNode { id, index }`
//!   entries. It exposes neither tokens nor ranges, but its token of a node is the
//!   public `DefaultHashBuilder` hash of that node, so the bench re-derives the exact
//!   token list for ownership and moved key space. It has no plan/diff API: no plan.
//! - `consistent_hash_ring` has virtual nodes, `resident_ranges` (exact ownership) and
//!   `migrated_ranges` (its plan: clone + insert + migrated ranges).

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use consistent_hash_ring::{RingBuilder, migrated_ranges};
use hashring::DefaultHashBuilder;

use crate::subject::{BenchResult, ShareBasis, Shares, Subject, VNODES};

/// The size of the 64-bit key space.
const RING_SPACE: u128 = 1 << 64;

/// One virtual node of a `hashring` member; its hash is its token.
#[derive(Clone, Debug, Hash, PartialEq)]
struct VNode {
    id: String,
    index: u32,
}

/// `hashring::HashRing` with 160 virtual nodes per member.
#[derive(Clone)]
pub(crate) struct HashRing {
    ring: hashring::HashRing<VNode>,
    /// Members in join order, to re-derive the token list.
    members: Vec<String>,
}

impl HashRing {
    /// Builds the ring over `members` with one batch insert (one sort).
    pub(crate) fn build(members: &[String]) -> BenchResult<Self> {
        let mut ring = hashring::HashRing::new();
        ring.batch_add(members.iter().flat_map(|id| vnodes(id)).collect());
        Ok(Self {
            ring,
            members: members.to_vec(),
        })
    }

    /// The sorted token list, derived exactly as the crate derives it.
    fn tokens(&self) -> Vec<(u64, &str)> {
        let mut tokens: Vec<(u64, &str)> = self
            .members
            .iter()
            .flat_map(|id| vnodes(id).map(move |v| (DefaultHashBuilder.hash_one(&v), id.as_str())))
            .collect();
        tokens.sort_unstable();
        tokens
    }
}

/// The virtual nodes of member `id`.
fn vnodes(id: &str) -> impl Iterator<Item = VNode> + '_ {
    (0..VNODES).map(move |index| VNode {
        id: id.to_owned(),
        index,
    })
}

/// Length of the arc ending at boundary `i` of the sorted, non-empty `bounds`: the
/// first arc wraps around from the last boundary.
fn arc_before(bounds: &[u64], i: usize) -> u128 {
    match i {
        0 => RING_SPACE - u128::from(bounds[bounds.len() - 1]) + u128::from(bounds[0]),
        _ => u128::from(bounds[i] - bounds[i - 1]),
    }
}

/// Owner of ring position `x` in a sorted token list: the first token at or after `x`,
/// wrapping (the rule `hashring::HashRing::get` applies).
fn owner_at<'a>(tokens: &[(u64, &'a str)], x: u64) -> &'a str {
    let i = tokens.partition_point(|t| t.0 < x);
    tokens[i % tokens.len()].1
}

/// Exact arc length owned by each member of a sorted, non-empty token list.
fn token_shares(tokens: &[(u64, &str)]) -> Vec<u128> {
    let bounds: Vec<u64> = tokens.iter().map(|t| t.0).collect();
    let mut owned: BTreeMap<&str, u128> = BTreeMap::new();
    for (i, token) in tokens.iter().enumerate() {
        *owned.entry(token.1).or_default() += arc_before(&bounds, i);
    }
    owned.into_values().collect()
}

/// Exact key space whose owner differs between two sorted, non-empty token lists:
/// every elementary arc between consecutive boundaries of either list has one owner
/// in each, the owner of its end point.
fn token_moved(before: &[(u64, &str)], after: &[(u64, &str)]) -> u128 {
    let mut bounds: Vec<u64> = before.iter().chain(after).map(|t| t.0).collect();
    bounds.sort_unstable();
    bounds.dedup();
    (0..bounds.len())
        .filter(|&i| owner_at(before, bounds[i]) != owner_at(after, bounds[i]))
        .map(|i| arc_before(&bounds, i))
        .sum()
}

impl Subject for HashRing {
    fn lookup(&self, key: &[u8]) -> Option<&str> {
        self.ring.get(&key).map(|v| v.id.as_str())
    }

    fn add(&mut self, id: &str) -> BenchResult<()> {
        self.ring.batch_add(vnodes(id).collect());
        self.members.push(id.to_owned());
        Ok(())
    }

    fn remove(&mut self, id: &str) -> BenchResult<()> {
        for v in vnodes(id) {
            self.ring
                .remove(&v)
                .ok_or_else(|| format!("hashring: no vnode {v:?}"))?;
        }
        self.members.retain(|m| m != id);
        Ok(())
    }

    fn shares(&self) -> Option<Shares> {
        Some(Shares {
            values: token_shares(&self.tokens()),
            basis: ShareBasis::Arcs,
        })
    }

    fn moved_exact(&self, after: &Self) -> BenchResult<Option<f64>> {
        let moved = token_moved(&self.tokens(), &after.tokens());
        Ok(Some(moved as f64 / RING_SPACE as f64))
    }
}

/// `consistent_hash_ring::Ring` with 160 virtual nodes per member.
#[derive(Clone)]
pub(crate) struct ConsistentHashRing(consistent_hash_ring::Ring<String>);

impl ConsistentHashRing {
    /// Builds the ring over `members` with the crate's builder.
    pub(crate) fn build(members: &[String]) -> BenchResult<Self> {
        Ok(Self(
            RingBuilder::default()
                .vnodes(VNODES as usize)
                .nodes_iter(members.iter().cloned())
                .build(),
        ))
    }
}

impl Subject for ConsistentHashRing {
    fn lookup(&self, key: &[u8]) -> Option<&str> {
        self.0.try_get(key).map(String::as_str)
    }

    fn add(&mut self, id: &str) -> BenchResult<()> {
        if self.0.insert(id.to_owned()) {
            Ok(())
        } else {
            Err(format!("consistent_hash_ring: {id} already present").into())
        }
    }

    fn remove(&mut self, id: &str) -> BenchResult<()> {
        if self.0.remove(id) {
            Ok(())
        } else {
            Err(format!("consistent_hash_ring: {id} not present").into())
        }
    }

    fn plan_add(&self, id: &str) -> BenchResult<Option<usize>> {
        let mut next = self.clone();
        next.add(id)?;
        Ok(Some(migrated_ranges(&self.0, &next.0).count()))
    }

    fn shares(&self) -> Option<Shares> {
        let mut owned: BTreeMap<&str, u128> = BTreeMap::new();
        for range in self.0.resident_ranges() {
            let keys = range.keys();
            *owned.entry(range.node().as_str()).or_default() +=
                u128::from(keys.end() - keys.start()) + 1;
        }
        Some(Shares {
            values: owned.into_values().collect(),
            basis: ShareBasis::Arcs,
        })
    }

    fn moved_exact(&self, after: &Self) -> BenchResult<Option<f64>> {
        let moved: u128 = migrated_ranges(&self.0, &after.0)
            .map(|m| u128::from(m.keys().end() - m.keys().start()) + 1)
            .sum();
        Ok(Some(moved as f64 / RING_SPACE as f64))
    }
}
