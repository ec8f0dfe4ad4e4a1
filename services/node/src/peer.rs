//! Talking to the other nodes, straight to their addresses (the pod IP in Kubernetes,
//! `127.0.0.1:port` locally), over pooled keep-alive HTTP/1.1 connections: forwarding a
//! client's request to the key's owner, copying writes to replicas, handing keys over,
//! reading a key from its previous holders.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::store::Entry;
use crate::wire;

/// Header naming the node that forwarded a request (or sent a batch).
pub const FORWARDED_BY: &str = "ringside-forwarded-by";
/// Header with the epoch of the sender's ring.
pub const EPOCH: &str = "ringside-epoch";
/// Header naming the node that served a request.
pub const SERVED_BY: &str = "ringside-served-by";
/// Header set to `1` on answers the first node forwarded to the owner.
pub const FORWARDED: &str = "ringside-forwarded";
/// The internal route of entry batches (replica writes, handoffs).
pub const ENTRIES: &str = "/internal/v1/entries";
/// The internal route of the entries in ranges of the ring (recovery).
pub const SCAN: &str = "/internal/v1/scan";
/// The internal route of one key's entry, without forwarding (read-through).
pub const ENTRY: &str = "/internal/v1/keys/";

/// How long a call to another node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No answer (refused, reset, timed out).
    #[error("no answer from {addr}: {reason}")]
    Unreachable {
        /// The node's address.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// It answered with an error status.
    #[error("{addr} answered {status}")]
    Status {
        /// The node's address.
        addr: SocketAddr,
        /// The status.
        status: StatusCode,
    },
    /// Its answer did not decode.
    #[error("{addr} sent a malformed entry")]
    Malformed {
        /// The node's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: wire::WireError,
    },
}

/// An answer relayed from the owner.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// The answer if its status is a success, else the status as an error.
fn success(addr: SocketAddr, answer: Answer) -> Result<Answer, PeerError> {
    if answer.status.is_success() {
        Ok(answer)
    } else {
        Err(PeerError::Status {
            addr,
            status: answer.status,
        })
    }
}

/// The pool of connections to the other nodes.
#[derive(Clone, Debug)]
pub struct Peers {
    client: Client<HttpConnector, Full<Bytes>>,
    me: HeaderValue,
}

impl Peers {
    /// Connections from node `me`.
    pub fn new(me: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self {
            client,
            me: HeaderValue::from_str(me).unwrap_or(HeaderValue::from_static("node")),
        }
    }

    /// Sends a request to the node at `addr` and reads its whole answer: how a
    /// client's request is forwarded to its owner (one hop: the owner never forwards
    /// again), and how the calls below are made.
    pub async fn forward(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, PeerError> {
        let unreachable = |reason: String| PeerError::Unreachable { addr, reason };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(body))
            .map_err(|e| unreachable(e.to_string()))?;
        *request.headers_mut() = headers;
        request.headers_mut().insert(FORWARDED_BY, self.me.clone());
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {CALL_TIMEOUT:?}")))?
    }

    /// Sends entries to the node at `addr` (a replica write or a handoff batch);
    /// `Ok` once it stored them.
    pub async fn send_entries(
        &self,
        addr: SocketAddr,
        epoch: u64,
        batch: BytesMut,
    ) -> Result<(), PeerError> {
        let mut headers = HeaderMap::new();
        headers.insert(EPOCH, HeaderValue::from(epoch));
        let answer = self
            .forward(addr, Method::PUT, ENTRIES, headers, batch.freeze())
            .await?;
        success(addr, answer).map(drop)
    }

    /// The entries the node at `addr` holds in `ranges`, each `(start, end]`.
    pub async fn scan(
        &self,
        addr: SocketAddr,
        ranges: &[(u64, u64)],
    ) -> Result<Vec<(Bytes, Entry)>, PeerError> {
        let mut body = BytesMut::with_capacity(ranges.len() * 16);
        for (start, end) in ranges {
            body.extend_from_slice(&start.to_be_bytes());
            body.extend_from_slice(&end.to_be_bytes());
        }
        let answer = self
            .forward(addr, Method::POST, SCAN, HeaderMap::new(), body.freeze())
            .await?;
        let answer = success(addr, answer)?;
        wire::decode(answer.body).map_err(|source| PeerError::Malformed { addr, source })
    }

    /// One key's entry on the node at `addr`, as it holds it (no forwarding).
    pub async fn fetch(
        &self,
        addr: SocketAddr,
        key_path: &str,
    ) -> Result<Option<Entry>, PeerError> {
        let path = format!("{ENTRY}{key_path}");
        let answer = self
            .forward(addr, Method::GET, &path, HeaderMap::new(), Bytes::new())
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => {
                let mut entries = wire::decode(answer.body)
                    .map_err(|source| PeerError::Malformed { addr, source })?;
                Ok(entries.pop().map(|(_, entry)| entry))
            }
            status => Err(PeerError::Status { addr, status }),
        }
    }
}
