//! Test support for replay, shared by the library's tests and the binary's `tail` and
//! `replay` end-to-end tests (which include this file): a real nats-server with
//! `nats/local.conf`, and a ring's history stored the way the reducer stores it.

// Helpers of tests: a failed unwrap is a failed test, which is what we want here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream;
use ringside_events::{
    Body, Event, Outcome, Publisher, RingLedger, RingName, ServiceUser, codec, pb, subject,
};
use ringside_replay::{Observer, Warning};
use ringside_ring::RingConfig;
use ringside_testkit::NatsServer;

/// A server with `nats/local.conf` and the streams and buckets provisioned.
pub(crate) struct Stack {
    /// The server.
    pub(crate) server: NatsServer,
    /// An admin client.
    pub(crate) client: async_nats::Client,
}

impl Stack {
    /// Starts and provisions a server.
    pub(crate) async fn start() -> Self {
        let server = NatsServer::start_local_conf().await.unwrap();
        let client = server.connect_provisioned().await.unwrap();
        Self { server, client }
    }

    /// Stores [`churn`]`(ring, events)` with [`write_history`], on a ring of the default
    /// configuration.
    pub(crate) async fn write_churn(
        &self,
        ring: &RingName,
        events: usize,
        snapshot_every: u64,
        tamper: Tamper<'_>,
    ) -> Written {
        self.write_history(
            &churn(ring, events),
            RingConfig::default(),
            snapshot_every,
            tamper,
        )
        .await
    }
}

/// A member `m<i>` in its incarnation `uid`.
pub(crate) fn member(i: u64, weight: u32, uid: u64) -> pb::Member {
    pb::Member {
        id: format!("m{i:02}"),
        address: format!("127.0.0.1:{}", 9000 + i),
        weight,
        uid: Some(format!("uid-{uid}")),
        ..Default::default()
    }
}

/// A scripted churn of `n` distinct membership events over 24 member ids: joins
/// (some with a new weight, some of a present member in a new incarnation), leaves
/// (some of absent members: no change), full syncs and pairs joining at once;
/// deterministic. Distinct, because JetStream drops a repeated fact (same message id)
/// within its duplicate window.
pub(crate) fn churn(ring: &RingName, n: usize) -> Vec<Event> {
    let mut x: u64 = 0x5eed;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    let mut step = 0u64;
    while out.len() < n {
        step += 1;
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let id = (x >> 33) % 24;
        let body: Body = match step % 10 {
            0..=4 => pb::MembersJoined {
                members: vec![member(id, 1 + u32::from((x >> 20).is_multiple_of(4)), step)],
                source: pb::MembershipSource::Manual as i32,
                ..Default::default()
            }
            .into(),
            5..=7 => pb::MemberLeft {
                member_id: format!("m{id:02}"),
                reason: pb::LeaveReason::Manual as i32,
                detail: format!("step {step}"),
                ..Default::default()
            }
            .into(),
            8 => pb::MembershipSynced {
                members: (0..24)
                    .filter(|j| (x >> (30 + j)) & 3 != 0)
                    .map(|j| member(j, 1, j))
                    .collect(),
                resource_version: step.to_string(),
                ..Default::default()
            }
            .into(),
            _ => pb::MembersJoined {
                members: vec![member(id, 1, step), member((id + 7) % 24, 1, step)],
                source: pb::MembershipSource::Manual as i32,
                ..Default::default()
            }
            .into(),
        };
        let event = Event::new(ring.clone(), body).unwrap();
        if seen.insert(event.msg_id().to_string()) {
            out.push(event);
        }
    }
    out
}

/// One epoch as the reducer made it.
#[derive(Clone, Debug)]
pub(crate) struct Epoch {
    /// The epoch.
    pub(crate) epoch: u64,
    /// Sequence of the membership event that made it.
    pub(crate) membership_sequence: u64,
    /// Sequence of its rebalance event.
    pub(crate) rebalance_sequence: u64,
    /// Checksum.
    pub(crate) checksum: u64,
    /// The ring.
    pub(crate) ring: ringside_ring::Ring,
}

/// An epoch whose rebalance event [`write_history`] alters, and how.
pub(crate) type Tamper<'a> = Option<(u64, &'a dyn Fn(&mut pb::RingRebalanced))>;

/// What [`write_history`] stored.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Every epoch, in order.
    pub(crate) epochs: Vec<Epoch>,
    /// (sequence, epoch, checksum) after each membership event.
    pub(crate) after: Vec<(u64, u64, u64)>,
    /// Snapshot keys written.
    pub(crate) snapshots: Vec<String>,
}

impl Stack {
    /// Stores `events` the way the reducer does: each membership event (as admin), then
    /// (if it made an epoch) its `RingRebalanced` with the single-writer publish, and a
    /// snapshot to the KV bucket every `snapshot_every` epochs (and `<ring>.latest`), as
    /// the reducer user (the only one allowed to). `tamper` may alter the rebalance event
    /// of one epoch before it is stored.
    pub(crate) async fn write_history(
        &self,
        events: &[Event],
        config: RingConfig,
        snapshot_every: u64,
        tamper: Tamper<'_>,
    ) -> Written {
        let mut writer = self
            .history_writer(events[0].ring(), config, snapshot_every)
            .await;
        writer.write(events, tamper).await;
        writer.written
    }

    /// A [`HistoryWriter`] for a ring with no events yet.
    pub(crate) async fn history_writer(
        &self,
        ring: &RingName,
        config: RingConfig,
        snapshot_every: u64,
    ) -> HistoryWriter {
        let reducer = self.server.connect_as(ServiceUser::Reducer).await.unwrap();
        HistoryWriter {
            publisher: Publisher::new(self.client.clone()),
            rebalances: Publisher::new(reducer.clone()),
            kv: jetstream::new(reducer)
                .get_key_value(subject::KV_SNAPSHOTS)
                .await
                .unwrap(),
            ledger: RingLedger::new(ring.clone(), config),
            snapshot_every,
            last_rebalance: 0,
            written: Written::default(),
        }
    }
}

/// Stores a ring's history as [`Stack::write_history`] does, in as many calls as
/// wanted (a ring that goes on changing).
pub(crate) struct HistoryWriter {
    publisher: Publisher,
    rebalances: Publisher,
    kv: jetstream::kv::Store,
    ledger: RingLedger,
    snapshot_every: u64,
    last_rebalance: u64,
    /// Everything stored so far.
    pub(crate) written: Written,
}

impl HistoryWriter {
    /// Stores `events` (see [`Stack::write_history`]).
    pub(crate) async fn write(&mut self, events: &[Event], tamper: Tamper<'_>) {
        let ring = self.ledger.ring_name().clone();
        for event in events {
            let seq = self.publisher.publish(event).await.unwrap().sequence;
            if let Outcome::Rebalanced(mut r) = self.ledger.apply(seq, event.body()) {
                if let Some((epoch, change)) = tamper
                    && r.epoch == epoch
                {
                    change(&mut r);
                }
                let stored = self
                    .rebalances
                    .publish_expecting(&Event::new(ring.clone(), *r).unwrap(), self.last_rebalance)
                    .await
                    .unwrap();
                self.last_rebalance = stored.sequence;
                self.ledger.record_rebalance_sequence(stored.sequence);
                self.written.epochs.push(Epoch {
                    epoch: self.ledger.epoch(),
                    membership_sequence: seq,
                    rebalance_sequence: stored.sequence,
                    checksum: self.ledger.checksum(),
                    ring: self.ledger.ring().clone(),
                });
                if self.ledger.epoch().is_multiple_of(self.snapshot_every) {
                    let bytes = codec::encode_snapshot(&self.ledger.snapshot().unwrap()).unwrap();
                    let key = subject::snapshot_key(&ring, self.ledger.epoch());
                    self.kv.put(&key, bytes.clone()).await.unwrap();
                    self.kv
                        .put(subject::latest_snapshot_key(&ring), bytes)
                        .await
                        .unwrap();
                    self.written.snapshots.push(key);
                }
            }
            self.written
                .after
                .push((seq, self.ledger.epoch(), self.ledger.checksum()));
        }
    }
}

/// A checksum as the tools print it.
pub(crate) fn hex(checksum: u64) -> String {
    format!("{checksum:#018x}")
}

/// What a query told its observer.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    pub(crate) passes: Vec<&'static str>,
    pub(crate) ends: usize,
    pub(crate) read: u64,
    pub(crate) warnings: Vec<Warning>,
}

impl Observer for Heard {
    fn begin(&mut self, what: &'static str, _from: u64, _to: u64) {
        self.passes.push(what);
    }

    fn at(&mut self, _seq: u64) {
        self.read += 1;
    }

    fn end(&mut self) {
        self.ends += 1;
    }

    fn warn(&mut self, warning: &Warning) {
        self.warnings.push(warning.clone());
    }
}
