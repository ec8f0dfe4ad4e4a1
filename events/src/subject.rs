//! Subjects, stream, KV bucket and key names: every name a service uses on NATS is
//! built here, by one function each (DESIGN.md "Event contract").
//!
//! | subject | carries | stored in |
//! |---|---|---|
//! | `ringside.<ring>.membership` | joins, leaves, syncs | `RINGSIDE` |
//! | `ringside.<ring>.rebalance` | `RingRebalanced` (single writer per epoch) | `RINGSIDE` |
//! | `ringside.<ring>.handoff` | `KeysHandedOff` | `RINGSIDE` |
//! | `ringside.<ring>.scale` | `ScaleDecided` | `RINGSIDE` |
//! | `ringside.<ring>.load.<node>` | `NodeLoadReported` | `RINGSIDE_LOAD` (short) |
//! | `ringside.<ring>.deadletter` | copies of undecodable messages | `RINGSIDE_DEADLETTER` |
//! | `ringside.<ring>.heartbeat.<node>` | `HeartbeatSent` | core NATS only |
//! | `ringside.<ring>.traffic` | `TrafficSampled` | core NATS only |
//! | `ringside.<ring>.stored.<kind>` | the server's copy of each event stored on `ringside.<ring>.<kind>` | core NATS only (republished by `RINGSIDE`) |

use crate::names::{NodeName, RingName};

/// First token of every ringside subject.
pub const PREFIX: &str = "ringside";
/// Every ringside subject of every ring (for `nats sub` and the bridge).
pub const ALL: &str = "ringside.>";

/// Stream of the precious events: membership, rebalance, handoff, scale.
pub const STREAM_EVENTS: &str = "RINGSIDE";
/// Short-retention stream of load reports.
pub const STREAM_LOAD: &str = "RINGSIDE_LOAD";
/// Stream of dead-lettered messages.
pub const STREAM_DEADLETTER: &str = "RINGSIDE_DEADLETTER";
/// KV bucket of ring snapshots.
pub const KV_SNAPSHOTS: &str = "RINGSIDE_SNAPSHOTS";
/// KV bucket of leases (one membership watcher per ring).
pub const KV_LEASES: &str = "RINGSIDE_LEASES";

/// What a subject carries: the token after `ringside.<ring>.`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKind {
    /// `membership`
    Membership,
    /// `rebalance`
    Rebalance,
    /// `handoff`
    Handoff,
    /// `scale`
    Scale,
    /// `load.<node>`
    Load,
    /// `deadletter`
    Deadletter,
    /// `heartbeat.<node>`
    Heartbeat,
    /// `traffic`
    Traffic,
}

impl SubjectKind {
    /// Every kind, in table order.
    pub const ALL: [SubjectKind; 8] = [
        Self::Membership,
        Self::Rebalance,
        Self::Handoff,
        Self::Scale,
        Self::Load,
        Self::Deadletter,
        Self::Heartbeat,
        Self::Traffic,
    ];

    /// The subject token naming this kind.
    pub fn token(self) -> &'static str {
        match self {
            Self::Membership => "membership",
            Self::Rebalance => "rebalance",
            Self::Handoff => "handoff",
            Self::Scale => "scale",
            Self::Load => "load",
            Self::Deadletter => "deadletter",
            Self::Heartbeat => "heartbeat",
            Self::Traffic => "traffic",
        }
    }

    /// Whether the subject has a trailing `<node>` token.
    pub fn per_node(self) -> bool {
        matches!(self, Self::Load | Self::Heartbeat)
    }

    /// The JetStream stream that stores this kind, or `None` for core-NATS subjects.
    pub fn stream(self) -> Option<&'static str> {
        match self {
            Self::Membership | Self::Rebalance | Self::Handoff | Self::Scale => Some(STREAM_EVENTS),
            Self::Load => Some(STREAM_LOAD),
            Self::Deadletter => Some(STREAM_DEADLETTER),
            Self::Heartbeat | Self::Traffic => None,
        }
    }
}

fn ring_subject(ring: &RingName, kind: SubjectKind) -> String {
    format!("{PREFIX}.{ring}.{}", kind.token())
}

/// `ringside.<ring>.membership`
pub fn membership(ring: &RingName) -> String {
    ring_subject(ring, SubjectKind::Membership)
}

/// `ringside.<ring>.rebalance`
pub fn rebalance(ring: &RingName) -> String {
    ring_subject(ring, SubjectKind::Rebalance)
}

/// `ringside.<ring>.handoff`
pub fn handoff(ring: &RingName) -> String {
    ring_subject(ring, SubjectKind::Handoff)
}

/// `ringside.<ring>.scale`
pub fn scale(ring: &RingName) -> String {
    ring_subject(ring, SubjectKind::Scale)
}

/// `ringside.<ring>.deadletter`
pub fn deadletter(ring: &RingName) -> String {
    ring_subject(ring, SubjectKind::Deadletter)
}

/// `ringside.<ring>.traffic` (core NATS)
pub fn traffic(ring: &RingName) -> String {
    ring_subject(ring, SubjectKind::Traffic)
}

/// `ringside.<ring>.load.<node>`
pub fn load(ring: &RingName, node: &NodeName) -> String {
    format!("{}.{node}", ring_subject(ring, SubjectKind::Load))
}

/// `ringside.<ring>.load.*`: every node's load.
pub fn load_any(ring: &RingName) -> String {
    format!("{}.*", ring_subject(ring, SubjectKind::Load))
}

/// `ringside.<ring>.heartbeat.<node>` (core NATS)
pub fn heartbeat(ring: &RingName, node: &NodeName) -> String {
    format!("{}.{node}", ring_subject(ring, SubjectKind::Heartbeat))
}

/// `ringside.<ring>.heartbeat.*`: every node's heartbeats.
pub fn heartbeat_any(ring: &RingName) -> String {
    format!("{}.*", ring_subject(ring, SubjectKind::Heartbeat))
}

/// The token of the copies JetStream republishes of every stored event of the
/// `RINGSIDE` stream (`republish` in `nats/streams/RINGSIDE.json`).
pub const STORED: &str = "stored";

/// `ringside.<ring>.stored.<kind>`: the copy of each event stored on
/// `ringside.<ring>.<kind>`, sent by the server once it is stored, once, with its
/// stream sequence in the `Nats-Sequence` header. A publish the stream refused (a
/// losing reducer's epoch) never appears here, unlike on the subject itself.
pub fn stored(ring: &RingName, kind: SubjectKind) -> String {
    format!("{PREFIX}.{ring}.{STORED}.{}", kind.token())
}

/// `ringside.<ring>.stored.>`: the stored copies of every event of one ring.
pub fn stored_any(ring: &RingName) -> String {
    format!("{PREFIX}.{ring}.{STORED}.>")
}

/// `ringside.<ring>.>`: everything of one ring.
pub fn ring_all(ring: &RingName) -> String {
    format!("{PREFIX}.{ring}.>")
}

/// A subject taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedSubject {
    /// The ring token.
    pub ring: RingName,
    /// What it carries.
    pub kind: SubjectKind,
    /// The node token of per-node subjects.
    pub node: Option<NodeName>,
}

/// Why a subject is not a ringside subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// It does not have the `ringside.<ring>.<kind>[.<node>]` shape.
    #[error("{0:?} is not a ringside subject (ringside.<ring>.<kind>[.<node>])")]
    NotRingside(String),
    /// The ring or node token is not a valid name.
    #[error("bad name in subject {subject:?}")]
    Name {
        /// The subject.
        subject: String,
        /// The name error.
        #[source]
        source: crate::names::NameError,
    },
}

/// Parses `ringside.<ring>.<kind>[.<node>]`.
pub fn parse(subject: &str) -> Result<ParsedSubject, SubjectError> {
    let not_ours = || SubjectError::NotRingside(subject.to_string());
    let name_err = |source| SubjectError::Name {
        subject: subject.to_string(),
        source,
    };
    let tokens: Vec<&str> = subject.split('.').collect();
    let (prefix, ring, kind_token, node) = match tokens.as_slice() {
        [p, r, k] => (*p, *r, *k, None),
        [p, r, k, n] => (*p, *r, *k, Some(*n)),
        _ => return Err(not_ours()),
    };
    if prefix != PREFIX {
        return Err(not_ours());
    }
    let kind = SubjectKind::ALL
        .into_iter()
        .find(|k| k.token() == kind_token)
        .ok_or_else(not_ours)?;
    if kind.per_node() != node.is_some() {
        return Err(not_ours());
    }
    Ok(ParsedSubject {
        ring: RingName::new(ring).map_err(name_err)?,
        kind,
        node: node.map(NodeName::new).transpose().map_err(name_err)?,
    })
}

/// KV key of the snapshot of `ring` at `epoch` in [`KV_SNAPSHOTS`]: `<ring>.e<epoch>`,
/// zero-padded to 20 digits so keys sort by epoch.
pub fn snapshot_key(ring: &RingName, epoch: u64) -> String {
    format!("{ring}.e{epoch:020}")
}

/// KV key of the newest snapshot of `ring`: `<ring>.latest`.
pub fn latest_snapshot_key(ring: &RingName) -> String {
    format!("{ring}.latest")
}

/// KV key filter matching every snapshot key of `ring` (`<ring>.*`, `latest` included).
pub fn snapshot_keys_of(ring: &RingName) -> String {
    format!("{ring}.*")
}

/// KV key of the membership-watcher lease of `ring` in [`KV_LEASES`].
pub fn lease_key(ring: &RingName) -> String {
    format!("{ring}.membership")
}

/// Durable consumer name of a service for a ring (`reducer-<ring>`).
pub fn durable_name(service: &str, ring: &RingName) -> String {
    format!("{service}-{ring}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> RingName {
        RingName::new("orders").unwrap()
    }

    fn node() -> NodeName {
        NodeName::new("node-4").unwrap()
    }

    #[test]
    fn builders() {
        let r = ring();
        assert_eq!(membership(&r), "ringside.orders.membership");
        assert_eq!(rebalance(&r), "ringside.orders.rebalance");
        assert_eq!(handoff(&r), "ringside.orders.handoff");
        assert_eq!(scale(&r), "ringside.orders.scale");
        assert_eq!(deadletter(&r), "ringside.orders.deadletter");
        assert_eq!(traffic(&r), "ringside.orders.traffic");
        assert_eq!(load(&r, &node()), "ringside.orders.load.node-4");
        assert_eq!(load_any(&r), "ringside.orders.load.*");
        assert_eq!(heartbeat(&r, &node()), "ringside.orders.heartbeat.node-4");
        assert_eq!(heartbeat_any(&r), "ringside.orders.heartbeat.*");
        assert_eq!(ring_all(&r), "ringside.orders.>");
        assert_eq!(snapshot_key(&r, 41), "orders.e00000000000000000041");
        assert_eq!(latest_snapshot_key(&r), "orders.latest");
        assert_eq!(durable_name("reducer", &r), "reducer-orders");
    }

    #[test]
    fn parse_round_trips_every_builder() {
        let r = ring();
        let n = node();
        for kind in SubjectKind::ALL {
            let subject = match kind {
                SubjectKind::Load => load(&r, &n),
                SubjectKind::Heartbeat => heartbeat(&r, &n),
                k => ring_subject(&r, k),
            };
            let parsed = parse(&subject).unwrap();
            assert_eq!(parsed.kind, kind);
            assert_eq!(parsed.ring, r);
            assert_eq!(parsed.node.is_some(), kind.per_node());
        }
    }

    #[test]
    fn parse_refuses_foreign_and_malformed_subjects() {
        for bad in [
            "",
            "ringside",
            "ringside.orders",
            "other.orders.membership",
            "ringside.orders.unknown",
            "ringside.orders.membership.extra",
            "ringside.orders.load",
            "ringside.orders.load.a.b",
            "ringside.*.membership",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            parse("ringside.bad/ring.membership"),
            Err(SubjectError::Name { .. })
        ));
    }

    #[test]
    fn streams_cover_stored_kinds_only() {
        assert_eq!(SubjectKind::Membership.stream(), Some(STREAM_EVENTS));
        assert_eq!(SubjectKind::Rebalance.stream(), Some(STREAM_EVENTS));
        assert_eq!(SubjectKind::Load.stream(), Some(STREAM_LOAD));
        assert_eq!(SubjectKind::Heartbeat.stream(), None);
        assert_eq!(SubjectKind::Traffic.stream(), None);
    }
}
