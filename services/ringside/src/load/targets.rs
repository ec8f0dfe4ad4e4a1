//! Where the load goes: the node API addresses given with `--nodes`, or every member of
//! the ring as the reducer's `RingService.GetRing` serves it. The ring is read again
//! every second, so that load keeps reaching the members while nodes join and leave
//! (and the summary compares against the ring as it ended).
//!
//! Only 127.0.0.0/8 is ever a target: the clients bind loopback source addresses, and
//! a load generator must never be pointed at someone else's server by a typo. A
//! non-loopback `--nodes` address, or a ring member outside loopback, is an error.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ringside_events::{RingName, convert, pb};
use tokio::sync::watch;

/// How often the ring is read again.
const REFRESH: Duration = Duration::from_secs(1);
/// How long one GetRing may take.
const GET_RING_TIMEOUT: Duration = Duration::from_secs(2);

/// Parses a target address: `IPv4:port` in 127.0.0.0/8, or `localhost:port`.
pub(crate) fn parse_loopback(s: &str) -> Result<SocketAddr, String> {
    let addr = match s.strip_prefix("localhost:") {
        Some(port) => port
            .parse()
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .map_err(|_| format!("'{s}' has no valid port")),
        None => s
            .parse::<SocketAddr>()
            .map_err(|_| format!("'{s}' is not an address (IPv4:port)")),
    }?;
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => Ok(addr),
        _ => Err(format!(
            "{s} is not in 127.0.0.0/8: ringside load only sends to loopback addresses"
        )),
    }
}

/// A node to send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// Its API address.
    pub(crate) address: SocketAddr,
    /// `http://{address}/v1/keys/`, to which the key is appended.
    pub(crate) keys_url: String,
}

impl Node {
    /// The node at `address`.
    pub(crate) fn new(address: SocketAddr) -> Self {
        Self {
            address,
            keys_url: format!("http://{address}/v1/keys/"),
        }
    }
}

/// The ring as GetRing served it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RingView {
    /// Its epoch.
    pub(crate) epoch: u64,
    /// Members by id: API address as announced, and share of the key space.
    pub(crate) members: BTreeMap<String, (String, f64)>,
}

impl RingView {
    /// The view of a snapshot; its tokens give the shares.
    pub(crate) fn of(snapshot: &pb::RingSnapshot) -> anyhow::Result<Self> {
        let ring = convert::snapshot_to_ring(snapshot).context("the served ring is invalid")?;
        let shares: BTreeMap<String, f64> = ring
            .ownership()
            .into_iter()
            .map(|s| (s.id, s.fraction))
            .collect();
        let members = snapshot
            .members
            .iter()
            .map(|m| {
                let share = shares.get(&m.id).copied().unwrap_or(0.0);
                (m.id.clone(), (m.address.clone(), share))
            })
            .collect();
        Ok(Self {
            epoch: snapshot.epoch,
            members,
        })
    }

    /// Every member as a target: each must have a loopback address.
    pub(crate) fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        if self.members.is_empty() {
            bail!("the ring has no members at epoch {}", self.epoch);
        }
        self.members
            .iter()
            .map(|(id, (address, _))| {
                parse_loopback(address)
                    .map(Node::new)
                    .map_err(|e| anyhow::anyhow!("ring member {id}: {e}"))
            })
            .collect()
    }
}

/// What the load is sent to at a moment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Targets {
    /// The nodes, at least one.
    pub(crate) nodes: Vec<Node>,
    /// The ring, when it was read (always, unless only `--nodes` was given).
    pub(crate) ring: Option<RingView>,
}

type RingClient = pb::ring_service_client::RingServiceClient<tonic::transport::Channel>;

/// The reducer's RingService, read for one ring.
#[derive(Debug, Clone)]
pub(crate) struct RingSource {
    client: RingClient,
    ring: RingName,
    /// `--nodes`: the ring only gives the shares; else it gives the targets too.
    fixed: Option<Vec<Node>>,
}

impl RingSource {
    /// Connects to the RingService at `grpc`. With `fixed` nodes, the ring only gives
    /// the shares to compare against.
    pub(crate) async fn connect(
        grpc: SocketAddr,
        ring: RingName,
        fixed: Option<Vec<Node>>,
    ) -> anyhow::Result<Self> {
        let client = RingClient::connect(format!("http://{grpc}"))
            .await
            .with_context(|| format!("cannot reach the reducer's RingService at {grpc}"))?;
        Ok(Self {
            client,
            ring,
            fixed,
        })
    }

    /// The targets now.
    pub(crate) async fn read(&mut self) -> anyhow::Result<Targets> {
        let request = pb::GetRingRequest {
            ring: self.ring.to_string(),
        };
        let response = tokio::time::timeout(GET_RING_TIMEOUT, self.client.get_ring(request))
            .await
            .context("GetRing timed out")?
            .with_context(|| format!("GetRing of ring {} failed", self.ring))?
            .into_inner();
        let snapshot = response
            .snapshot
            .context("GetRing answered without a snapshot")?;
        let ring = RingView::of(&snapshot)?;
        let nodes = match &self.fixed {
            Some(nodes) => nodes.clone(),
            None => ring.nodes()?,
        };
        Ok(Targets {
            nodes,
            ring: Some(ring),
        })
    }

    /// Reads the ring every second into `targets` until every receiver is gone; a read
    /// that fails keeps the last targets and is counted in `failures`.
    pub(crate) async fn follow(
        mut self,
        targets: watch::Sender<Arc<Targets>>,
        failures: Arc<AtomicU64>,
    ) {
        loop {
            tokio::select! {
                () = targets.closed() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
            match self.read().await {
                Ok(now) => {
                    targets.send_if_modified(|current| {
                        let changed = **current != now;
                        if changed {
                            *current = Arc::new(now);
                        }
                        changed
                    });
                }
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_ring::{Member, Ring, RingConfig, Strategy};

    #[test]
    fn only_loopback_is_a_target() {
        assert_eq!(
            parse_loopback("127.0.0.1:80"),
            Ok("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            parse_loopback("127.9.8.7:1"),
            Ok("127.9.8.7:1".parse().unwrap())
        );
        assert_eq!(
            parse_loopback("localhost:8080"),
            Ok("127.0.0.1:8080".parse().unwrap())
        );
        for bad in [
            "10.0.0.1:80",
            "0.0.0.0:80",
            "[::1]:80",
            "192.168.1.1:8080",
            "example.com:80",
        ] {
            assert!(parse_loopback(bad).is_err(), "{bad}");
        }
        assert!(
            parse_loopback("8.8.8.8:53")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(parse_loopback("localhost:x").is_err());
    }

    fn snapshot(addresses: &[(&str, &str)]) -> pb::RingSnapshot {
        let mut ring = Ring::new(RingConfig::new(Strategy::Random, 64).unwrap());
        let details: Vec<pb::Member> = addresses
            .iter()
            .map(|(id, address)| {
                ring.add(Member::new(*id, 1)).unwrap();
                pb::Member {
                    id: (*id).into(),
                    address: (*address).into(),
                    weight: 1,
                    ..Default::default()
                }
            })
            .collect();
        let name = RingName::new("default").unwrap();
        convert::ring_to_snapshot(&name, &ring, &details, 4, 1, 1).unwrap()
    }

    #[test]
    fn a_ring_gives_its_members_and_their_shares() {
        let view = RingView::of(&snapshot(&[("a", "127.0.0.1:1"), ("b", "127.0.0.1:2")])).unwrap();
        assert_eq!(view.epoch, 4);
        let total: f64 = view.members.values().map(|(_, share)| share).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert_eq!(
            view.nodes().unwrap(),
            [
                Node::new("127.0.0.1:1".parse().unwrap()),
                Node::new("127.0.0.1:2".parse().unwrap())
            ]
        );
        let remote = RingView::of(&snapshot(&[("a", "10.1.2.3:80")])).unwrap();
        let err = remote.nodes().unwrap_err().to_string();
        assert!(
            err.contains("ring member a") && err.contains("loopback"),
            "{err}"
        );
    }
}
