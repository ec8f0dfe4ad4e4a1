//! Handing keys over when the ring changes, so every key ends up on its R holders of
//! the new ring and nowhere else.
//!
//! # The rule, per key this node holds
//! Let `old` be the key's holders in the ring the node last reconciled against (owner
//! first, then its R-1 distinct successors) and `new` its holders now.
//! - `old == new`: nothing to do.
//! - The **sender** is the old owner if that is this node (it runs, even if it is
//!   leaving the ring), else the first member of `old` still in the ring (when the old
//!   owner was killed, its first replica). Only a sender sends, so a key travels once
//!   per target, or twice when its old owner left gracefully (it and its replica both
//!   send: neither can tell a graceful leave from a crash, and versions make the
//!   second copy harmless). It sends the key to every member of `new` that
//!   was not in `old`, and to the new owner when ownership moved from it (the new
//!   owner often holds a replica already; a copy makes sure, and versions make it
//!   harmless).
//! - A node that is no longer in `new` drops the key: the sender once its sends are
//!   acknowledged, any other holder after [`RETIRE_AFTER`], so a sender killed in the
//!   middle still leaves the key somewhere.
//!
//! Keys that changed owner away from this node are reported, per new owner, as one
//! `KeysHandedOff` event (epoch, from, to, the ranges, keys, bytes, duration) once
//! the new owner has acknowledged them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringside_client::{KeyRange, RingView};
use ringside_events::{Event, Publisher, RingName, pb};

use crate::node::Node;
use crate::store::{Entry, Version};
use crate::wire;

/// How long a holder that is not the sender keeps a key it no longer holds.
pub const RETIRE_AFTER: Duration = Duration::from_secs(30);
/// Largest batch sent to one node at a time.
const BATCH_BYTES: usize = 4 << 20;
/// Attempts to deliver one batch (a restarting peer gets a few seconds).
const ATTEMPTS: u32 = 5;

/// Keys with their entries, to send to one node.
type Entries = Vec<(Box<[u8]>, Entry)>;

/// Keys that changed owner from this node to one other member.
#[derive(Debug, Default)]
struct Handed {
    keys: u64,
    bytes: u64,
}

/// What one reconcile sends, keeps and drops.
#[derive(Debug, Default)]
struct Plan {
    /// Entries to send, per target member id.
    sends: BTreeMap<String, Entries>,
    /// Keys that left this node as owner, per new owner.
    handed: BTreeMap<String, Handed>,
    /// Keys to drop once the sends are acknowledged.
    drop_after_send: Vec<(Box<[u8]>, Version)>,
    /// Keys to drop after [`RETIRE_AFTER`].
    retire: Vec<(Box<[u8]>, Version)>,
}

fn holders(ring: &RingView, key: &[u8], replicas: usize) -> Vec<String> {
    crate::node::holders(ring, key, replicas)
        .into_iter()
        .map(|m| m.id.clone())
        .collect()
}

/// The plan of moving this node's keys from the holders of `old` to those of `new`.
fn plan(node: &Node, old: &RingView, new: &RingView) -> Plan {
    let mut plan = Plan::default();
    let me = node.id.as_str();
    for (key, entry) in node.store.all() {
        let before = holders(old, &key, node.replicas);
        let after = holders(new, &key, node.replicas);
        if before == after {
            continue;
        }
        let sender = if before.first().map(String::as_str) == Some(me) {
            Some(me)
        } else {
            before
                .iter()
                .find(|id| new.member(id).is_some())
                .map(String::as_str)
        };
        if sender == Some(me) {
            let moved_from_me = before.first().map(String::as_str) == Some(me)
                && after.first().map(String::as_str) != Some(me);
            for target in &after {
                let new_holder = !before.contains(target);
                let new_owner = moved_from_me && Some(target) == after.first();
                if target != me && (new_holder || new_owner) {
                    plan.sends
                        .entry(target.clone())
                        .or_default()
                        .push((key.clone(), entry.clone()));
                }
            }
            if let (true, Some(to)) = (moved_from_me, after.first())
                && entry.value.is_some()
            {
                let handed = plan.handed.entry(to.clone()).or_default();
                handed.keys += 1;
                handed.bytes += (key.len() + entry.value.as_ref().map_or(0, Bytes::len)) as u64;
            }
            if !after.iter().any(|id| id == me) {
                plan.drop_after_send.push((key, entry.version));
            }
        } else if !after.iter().any(|id| id == me) {
            plan.retire.push((key, entry.version));
        }
    }
    plan
}

/// Sends `entries` to the member `target` of `ring`, in batches; whether all arrived.
async fn deliver(
    node: &Node,
    ring: &RingView,
    target: &str,
    entries: &[(Box<[u8]>, Entry)],
) -> bool {
    let Some(addr) = ring
        .member(target)
        .and_then(|m| m.address.parse::<std::net::SocketAddr>().ok())
    else {
        tracing::error!(%target, "No usable address to hand keys to.");
        return false;
    };
    let mut batch = BytesMut::new();
    let mut sent = 0u64;
    let mut rest = entries.iter().peekable();
    while let Some((key, entry)) = rest.next() {
        wire::put(&mut batch, key, entry);
        sent += 1;
        if batch.len() >= BATCH_BYTES || rest.peek().is_none() {
            let body = std::mem::take(&mut batch);
            let mut attempt = 0;
            loop {
                attempt += 1;
                match node
                    .peers
                    .send_entries(addr, ring.epoch(), body.clone())
                    .await
                {
                    Ok(()) => break,
                    Err(e) if attempt < ATTEMPTS => {
                        tracing::warn!(%target, attempt, error = %e, "Handing keys over failed; retrying.");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    }
                    Err(e) => {
                        tracing::error!(%target, error = %e, "Could not hand keys over; keeping them here.");
                        return false;
                    }
                }
            }
            node.metrics.handoff(true, sent);
            sent = 0;
        }
    }
    true
}

/// Moves this node's keys from `old`'s holders to `new`'s (see the module docs) and
/// reports what changed owner away from it. `lost` is the ranges this node's ownership
/// went to other members in the epochs between, by new owner; `epoch` the last of them.
pub async fn reconcile(
    node: &Arc<Node>,
    old: &RingView,
    new: &RingView,
    lost: &BTreeMap<String, Vec<KeyRange>>,
    publisher: &Publisher,
    ring_name: &RingName,
) {
    let started = Instant::now();
    let plan = plan(node, old, new);
    let deliveries = plan.sends.iter().map(|(target, entries)| async move {
        (target.clone(), deliver(node, new, target, entries).await)
    });
    let delivered: BTreeMap<String, bool> = futures::future::join_all(deliveries)
        .await
        .into_iter()
        .collect();
    let all_delivered = delivered.values().all(|ok| *ok);
    if all_delivered {
        for (key, version) in &plan.drop_after_send {
            node.store.forget(key, *version);
        }
    }
    if !plan.retire.is_empty() {
        let node = Arc::clone(node);
        let retire = plan.retire;
        tokio::spawn(async move {
            tokio::time::sleep(RETIRE_AFTER).await;
            for (key, version) in retire {
                node.store.forget(&key, version);
            }
        });
    }
    let took = started.elapsed();
    for (to, handed) in &plan.handed {
        if !delivered.get(to).copied().unwrap_or(false) {
            continue;
        }
        let ranges = lost.get(to).map(Vec::as_slice).unwrap_or_default();
        let event = pb::KeysHandedOff {
            epoch: new.epoch(),
            from: node.id.clone(),
            to: to.clone(),
            count: handed.keys,
            bytes: handed.bytes,
            range_starts: ranges.iter().map(|r| r.start).collect(),
            range_ends: ranges.iter().map(|r| r.end).collect(),
            duration: Some(pbjson_duration(took)),
        };
        publish(publisher, ring_name, event).await;
    }
    tracing::info!(
        epoch = new.epoch(),
        sent_to = plan.sends.len(),
        handed_to = plan.handed.len(),
        ?took,
        all_delivered,
        "Keys reconciled with the ring."
    );
}

fn pbjson_duration(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

async fn publish(publisher: &Publisher, ring: &RingName, body: pb::KeysHandedOff) {
    let summary = format!("{} -> {}", body.from, body.to);
    let event = match Event::new(ring.clone(), body) {
        Ok(event) => event.with_occurred_at(std::time::SystemTime::now()),
        Err(e) => {
            tracing::error!(error = %e, "A handoff report is not a valid event (a bug).");
            return;
        }
    };
    if let Err(e) = publisher.publish(&event).await {
        tracing::warn!(%summary, error = %e, "Could not store the handoff report.");
    }
}

/// The arcs this node holds in `ring` (as owner or replica), grouped by the other
/// holders of each: what a restarted node asks them for.
fn arcs_to_recover(node: &Node, ring: &RingView) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut wanted: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let Some(tokens) = ring
        .ring()
        .map(|r| r.tokens().map(|(t, _)| t).collect::<Vec<_>>())
    else {
        return wanted;
    };
    let Some(&last) = tokens.last() else {
        return wanted;
    };
    let replicas = node.replicas.min(ring.len());
    let mut previous = last;
    for &token in &tokens {
        let holders = ring
            .ring()
            .and_then(|r| r.successors_of_hash(token, replicas).ok())
            .unwrap_or_default();
        if holders.contains(&node.id.as_str()) {
            for other in holders.into_iter().filter(|h| *h != node.id) {
                wanted
                    .entry(other.to_owned())
                    .or_default()
                    .push((previous, token));
            }
        }
        previous = token;
    }
    wanted
}

/// A restarted node still in the ring fetches the keys of its arcs from their other
/// holders; a node the ring does not have yet gets its keys by handoff when it joins.
pub async fn recover(node: &Arc<Node>, ring: &RingView) {
    if ring.member(&node.id).is_some() {
        let started = Instant::now();
        let wanted = arcs_to_recover(node, ring);
        let fetches = wanted.iter().map(|(holder, arcs)| async move {
            let Some(addr) = ring
                .member(holder)
                .and_then(|m| m.address.parse::<std::net::SocketAddr>().ok())
            else {
                return 0;
            };
            match node.peers.scan(addr, arcs).await {
                Ok(entries) => node.take(entries),
                Err(e) => {
                    tracing::warn!(%holder, error = %e, "Could not fetch keys from a holder.");
                    0
                }
            }
        });
        let taken: usize = futures::future::join_all(fetches).await.into_iter().sum();
        node.metrics.handoff(false, taken as u64);
        tracing::info!(keys = taken, from = wanted.len(), took = ?started.elapsed(), "Recovered this node's keys from the other holders.");
    }
    node.set_recovered();
}
