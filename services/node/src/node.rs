//! [`Node`]: what the API handlers, the handoff and the reports share: the store, the
//! ring (through the client library), the connections to the other nodes, and the
//! load counters.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use ringside_client::{RingClient, RingView};
use ringside_events::pb;

use crate::api::read_answer;
use crate::clients::ClientIps;
use crate::metrics::{Metrics, Reject};
use crate::peer::{FORWARDED_BY, Peers};
use crate::store::{Clock, Entry, Store};
use crate::wire;

/// How long after a rebalance that gave it ranges a node that misses a key asks the
/// key's previous holders (the handoff of a range normally completes well within).
pub const READ_THROUGH_WINDOW: Duration = Duration::from_secs(15);

/// The holders of `key` in `ring`: its owner and the next distinct members, R in all
/// (fewer while the ring has fewer members).
pub fn holders<'a>(ring: &'a RingView, key: &[u8], replicas: usize) -> Vec<&'a pb::Member> {
    ring.successors(key, replicas.min(ring.len()))
        .unwrap_or_default()
}

/// The ring before a rebalance that gave this node ranges, while their keys arrive.
#[derive(Debug)]
struct Transition {
    previous: Arc<RingView>,
    until: Instant,
}

/// The counters of one load report window.
#[derive(Debug, Default)]
pub struct Window {
    /// Key requests received.
    pub requests: AtomicU64,
    /// Of those, forwarded to their owner.
    pub forwarded: AtomicU64,
}

/// One running node.
#[derive(Debug)]
pub struct Node {
    /// Its member id.
    pub id: String,
    /// The id as a header value.
    pub id_header: HeaderValue,
    /// Copies of each key.
    pub replicas: usize,
    /// How long a client may take to send its request.
    pub request_timeout: Duration,
    /// The keys.
    pub store: Store,
    /// Versions of its writes.
    pub clock: Clock,
    /// The ring.
    pub ring: RingClient,
    /// Connections to the other nodes.
    pub peers: Peers,
    /// Instruments.
    pub metrics: Metrics,
    /// The load report window.
    pub window: Window,
    clients: Mutex<ClientIps>,
    transition: Mutex<Option<Transition>>,
    /// Whether the keys this node holds in the ring are here (a restarted node fetches
    /// them from the other holders first); until then it answers 503 for its keys.
    recovered: std::sync::atomic::AtomicBool,
    /// Every member seen in any ring, by id, with its address's IP: who may send
    /// batches (a member that just left still hands its keys over).
    known: Mutex<HashMap<String, IpAddr>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Node {
    /// A node with an empty store.
    pub fn new(
        id: &str,
        replicas: usize,
        request_timeout: Duration,
        ring: RingClient,
        metrics: Metrics,
    ) -> Self {
        Self {
            id: id.to_owned(),
            id_header: HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("node")),
            replicas,
            request_timeout,
            store: Store::default(),
            clock: Clock::new(id),
            ring,
            peers: Peers::new(id),
            metrics,
            window: Window::default(),
            clients: Mutex::new(ClientIps::default()),
            transition: Mutex::new(None),
            recovered: std::sync::atomic::AtomicBool::new(false),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The epoch routed by, once the ring is known.
    pub fn epoch(&self) -> Option<u64> {
        self.ring.epoch()
    }

    /// Whether it has its keys (see the field's docs).
    pub fn is_recovered(&self) -> bool {
        self.recovered.load(Ordering::Relaxed)
    }

    /// Says it has its keys.
    pub fn set_recovered(&self) {
        self.recovered.store(true, Ordering::Relaxed);
    }

    /// Notes a key request from `client`.
    pub fn saw_client(&self, client: IpAddr) {
        self.window.requests.fetch_add(1, Ordering::Relaxed);
        lock(&self.clients).seen(client, Instant::now());
    }

    /// Notes a request forwarded to its owner.
    pub fn forwarded(&self) {
        self.window.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Distinct client addresses of the last minute, and their sketch.
    pub fn clients(&self) -> (u64, ringside_events::sketch::Sketch) {
        let mut clients = lock(&self.clients);
        let now = Instant::now();
        (clients.count(now), clients.sketch(now))
    }

    /// Remembers the members of `ring` (who may send batches).
    pub fn remember(&self, ring: &RingView) {
        let mut known = lock(&self.known);
        for member in ring.members() {
            if let Ok(addr) = member.address.parse::<SocketAddr>() {
                known.insert(member.id.clone(), addr.ip());
            }
        }
    }

    /// A batch or entry request must come from a member, from its address.
    pub fn check_peer(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), String> {
        let by = headers
            .get(FORWARDED_BY)
            .and_then(|v| v.to_str().ok())
            .ok_or("an internal request names its sender in Ringside-Forwarded-By")?;
        match lock(&self.known).get(by) {
            Some(ip) if *ip == peer.ip() => Ok(()),
            Some(ip) => Err(format!(
                "{by} is at {ip}, this request came from {}",
                peer.ip()
            )),
            None => Err(format!("{by} is not a member this node has seen")),
        }
    }

    /// Starts a read-through window over `previous` (the ring before a rebalance that
    /// gave this node ranges).
    pub fn begin_transition(&self, previous: Arc<RingView>) {
        *lock(&self.transition) = Some(Transition {
            previous,
            until: Instant::now() + READ_THROUGH_WINDOW,
        });
    }

    fn transition(&self) -> Option<Arc<RingView>> {
        let mut transition = lock(&self.transition);
        match transition.as_ref() {
            Some(t) if Instant::now() < t.until => Some(Arc::clone(&t.previous)),
            Some(_) => {
                *transition = None;
                None
            }
            None => None,
        }
    }

    /// Takes entries from another node (replica writes, a handoff).
    pub fn take(&self, batch: Vec<(Bytes, Entry)>) -> usize {
        let mut taken = 0;
        for (key, entry) in batch {
            self.clock.observe(entry.version);
            if self.store.merge(&key, entry) {
                taken += 1;
            }
        }
        taken
    }

    /// A read of a key this node owns: its entry, or, during a transition, the newest
    /// copy among the key's previous holders.
    pub async fn read(&self, key: &str) -> Response {
        let mut entry = self.store.get(key.as_bytes());
        if entry.is_none()
            && let Some(previous) = self.transition()
        {
            entry = self.read_through(key, &previous).await;
        }
        read_answer(entry)
    }

    /// Asks the key's holders in `previous` for it; keeps the newest copy.
    async fn read_through(&self, key: &str, previous: &RingView) -> Option<Entry> {
        let holders = holders(previous, key.as_bytes(), self.replicas)
            .into_iter()
            .filter(|m| m.id != self.id)
            .filter_map(|m| m.address.parse::<SocketAddr>().ok())
            .collect::<Vec<_>>();
        if holders.is_empty() {
            return None;
        }
        let path = encode_path_segment(key);
        let answers =
            futures::future::join_all(holders.iter().map(|addr| self.peers.fetch(*addr, &path)))
                .await;
        let newest = answers
            .into_iter()
            .filter_map(Result::ok)
            .flatten()
            .max_by_key(|e| e.version)?;
        self.metrics.read_through();
        self.clock.observe(newest.version);
        self.store.merge(key.as_bytes(), newest.clone());
        Some(newest)
    }

    /// A write (a value, or `None` to delete) of a key this node owns: a new version,
    /// stored here and copied to the key's other holders; 204 once all hold it.
    pub async fn write(&self, key: &str, value: Option<Bytes>, ring: &RingView) -> Response {
        let entry = Entry {
            value,
            version: self.clock.tick(),
        };
        self.store.merge(key.as_bytes(), entry.clone());
        let holders: Vec<(String, Option<SocketAddr>)> =
            holders(ring, key.as_bytes(), self.replicas)
                .into_iter()
                .filter(|m| m.id != self.id)
                .map(|m| (m.id.clone(), m.address.parse().ok()))
                .collect();
        let mut frame = BytesMut::with_capacity(wire::frame_len(key.as_bytes(), &entry));
        wire::put(&mut frame, key.as_bytes(), &entry);
        let epoch = ring.epoch();
        let copies = holders.iter().map(|(id, addr)| {
            let frame = frame.clone();
            async move {
                match addr {
                    Some(addr) => self
                        .peers
                        .send_entries(*addr, epoch, frame)
                        .await
                        .map_err(|e| format!("{id}: {e}")),
                    None => Err(format!("{id} has no usable address")),
                }
            }
        });
        let failed: Vec<String> = futures::future::join_all(copies)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        for _ in 0..holders.len() - failed.len() {
            self.metrics.replica_write(true);
        }
        for _ in &failed {
            self.metrics.replica_write(false);
        }
        if failed.is_empty() {
            StatusCode::NO_CONTENT.into_response()
        } else {
            self.metrics.rejected(Reject::ReplicaUnavailable);
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not acknowledged: a replica did not take the write ({})\n",
                    failed.join("; ")
                ),
            )
                .into_response();
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
            response
        }
    }
}

/// A key as one percent-encoded path segment (unreserved characters stay).
pub fn encode_path_segment(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_escape_what_a_path_would_split_on() {
        assert_eq!(encode_path_segment("user:42"), "user:42");
        assert_eq!(encode_path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_path_segment("é"), "%C3%A9");
    }
}
