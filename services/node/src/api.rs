//! The node's HTTP API: the keys (`/v1/keys/{key}`, `/v1/keys/{key}/owner`), the
//! other nodes' internal routes (entry batches, one key's entry), and the kit's
//! `/livez`, `/readyz`, `/metrics`.
//!
//! # A key request
//! 1. The key must be 1 to 1,024 bytes of text without control characters (400).
//! 2. The client's address is the connection's peer, unless another node forwarded
//!    the request: then the `Forwarded: for=` header it set, trusted only when the
//!    sender names itself (`Ringside-Forwarded-By`) as a ring member whose address is
//!    the peer's (a bad one is 400, counted).
//! 3. The owner is the ring's (the client library's view). Not us: forward to its
//!    address, once; a request forwarded to us for a key we do not own is `421
//!    Misdirected Request` with our epoch, never forwarded again (no loop, no hang).
//! 4. Ours: a read answers from the store (or, for a key not handed over yet after a
//!    rebalance, from its previous holders); a write takes a new version, is stored and
//!    copied to the key's R-1 successors, and is acknowledged (204) once all R hold it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Limited};
use ringside_client::RingView;
use ringside_events::pb;

use crate::config::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::metrics::Reject;
use crate::node::Node;
use crate::peer::{self, EPOCH, FORWARDED, FORWARDED_BY, SERVED_BY};
use crate::store::{Entry, position};
use crate::wire;

/// The operations on a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    Put,
    Delete,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
        }
    }
}

/// Largest batch another node may send (a handoff is cut into batches of 4 MiB).
const MAX_BATCH_BYTES: usize = 16 << 20;

/// The routes, with the probes of the service kit.
pub fn router(node: Arc<Node>, probes: Router) -> Router {
    Router::new()
        .route(
            "/v1/keys/{key}",
            get(key_request).put(key_request).delete(key_request),
        )
        .route("/v1/keys/{key}/owner", get(owner))
        .route(peer::ENTRIES, put(entries))
        .route(peer::SCAN, post(scan))
        .route(&format!("{}{{key}}", peer::ENTRY), get(entry))
        .fallback(unknown_route)
        .with_state(node)
        .merge(probes)
}

/// A refusal as a response, counted.
fn refuse(node: &Node, reason: Reject, status: StatusCode, message: String) -> Response {
    node.metrics.rejected(reason);
    let mut response = (status, format!("{message}\n")).into_response();
    if let Some(epoch) = node.epoch() {
        response
            .headers_mut()
            .insert(EPOCH, HeaderValue::from(epoch));
    }
    response
}

async fn unknown_route(State(node): State<Arc<Node>>, uri: Uri) -> Response {
    refuse(
        &node,
        Reject::UnknownRoute,
        StatusCode::NOT_FOUND,
        format!("no route {}", uri.path()),
    )
}

/// A key as the API accepts it.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("a key is 1 to {MAX_KEY_BYTES} bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err("a key has no control characters".to_owned());
    }
    Ok(())
}

/// Reads a request body of at most `limit` bytes within the node's request timeout.
async fn read_body(node: &Node, body: Body, limit: usize) -> Result<Bytes, Response> {
    let read = tokio::time::timeout(node.request_timeout, Limited::new(body, limit).collect());
    match read.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(refuse(
            node,
            Reject::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a value is at most {limit} bytes"),
        )),
        // A body that breaks off is a client that did not finish its request.
        Ok(Err(_)) | Err(_) => Err(refuse(
            node,
            Reject::Timeout,
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request did not arrive within {:?}",
                node.request_timeout
            ),
        )),
    }
}

/// Why a forwarded request's client address is not taken.
enum NotTrusted {
    /// The sender is not a member of this node's ring: the two disagree about the ring
    /// for a moment (a member that just joined), or it is no member at all.
    Stranger(String),
    /// The request does not check out.
    Bad(String),
}

impl From<String> for NotTrusted {
    fn from(why: String) -> Self {
        Self::Bad(why)
    }
}

impl From<&str> for NotTrusted {
    fn from(why: &str) -> Self {
        Self::Bad(why.to_owned())
    }
}

/// The client's address: the peer's, or the one a trusted node forwarded.
fn client_ip(
    peer: SocketAddr,
    headers: &HeaderMap,
    ring: &RingView,
) -> Result<(IpAddr, bool), NotTrusted> {
    let Some(by) = headers.get(FORWARDED_BY) else {
        return Ok((peer.ip(), false));
    };
    let by = by
        .to_str()
        .map_err(|_| "Ringside-Forwarded-By is not text")?;
    let member = ring.member(by).ok_or_else(|| {
        NotTrusted::Stranger(format!(
            "Ringside-Forwarded-By names {by}, not a member of the ring at epoch {} here",
            ring.epoch()
        ))
    })?;
    let member_ip = member
        .address
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .map_err(|_| format!("member {by} has no IP address"))?;
    if member_ip != peer.ip() {
        return Err(NotTrusted::Bad(format!(
            "Ringside-Forwarded-By names {by} ({member_ip}) but the request came from {}",
            peer.ip()
        )));
    }
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .ok_or("a forwarded request carries a Forwarded header")?;
    let ip = forwarded_for(forwarded)
        .ok_or_else(|| format!("cannot read the client address in Forwarded: {forwarded}"))?;
    Ok((ip, true))
}

/// The `for=` address of the first element of a `Forwarded` header (RFC 7239):
/// `for=192.0.2.60`, `for="[2001:db8::1]:4711"`, `for="192.0.2.60:80"`.
pub fn forwarded_for(value: &str) -> Option<IpAddr> {
    let first = value.split(',').next()?;
    let node = first.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.eq_ignore_ascii_case("for").then_some(value.trim())
    })?;
    let node = node.trim_matches('"');
    if let Some(v6) = node.strip_prefix('[') {
        return v6.split_once(']')?.0.parse().ok();
    }
    node.parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// `Forwarded: for=` of `ip`.
fn forwarded_header(ip: IpAddr) -> HeaderValue {
    let text = match ip {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("for=unknown"))
}

/// `GET`, `PUT` and `DELETE /v1/keys/{key}` (the router sends no other method here).
async fn key_request(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Body,
) -> Response {
    let op = match method {
        Method::PUT => Op::Put,
        Method::DELETE => Op::Delete,
        _ => Op::Get,
    };
    handle(node, op, peer, method, uri, headers, key, body).await
}

/// Steps 1 to 4 of the module docs.
#[allow(clippy::too_many_arguments)]
async fn handle(
    node: Arc<Node>,
    op: Op,
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    key: String,
    body: Body,
) -> Response {
    let started = Instant::now();
    if let Err(why) = check_key(&key) {
        return refuse(&node, Reject::BadKey, StatusCode::BAD_REQUEST, why);
    }
    let value = match op {
        Op::Put => match read_body(&node, body, MAX_VALUE_BYTES).await {
            Ok(value) => value,
            Err(refused) => return refused,
        },
        Op::Get | Op::Delete => Bytes::new(),
    };
    let Some(ring) = node.ring.ring() else {
        return refuse(
            &node,
            Reject::NotReady,
            StatusCode::SERVICE_UNAVAILABLE,
            "the ring is not known yet".to_owned(),
        );
    };
    let (client, forwarded) = match client_ip(peer, &headers, &ring) {
        Ok(found) => found,
        // Retryable: the sender's next try finds the rings agreeing.
        Err(NotTrusted::Stranger(why)) => {
            return refuse(
                &node,
                Reject::Misdirected,
                StatusCode::MISDIRECTED_REQUEST,
                why,
            );
        }
        Err(NotTrusted::Bad(why)) => {
            return refuse(&node, Reject::BadForwarded, StatusCode::BAD_REQUEST, why);
        }
    };
    node.saw_client(client);
    let owner = match ring.lookup(key.as_bytes()) {
        Ok(owner) => owner.clone(),
        Err(e) => {
            return refuse(
                &node,
                Reject::NotReady,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no owner: {e}"),
            );
        }
    };
    let response = if owner.id == node.id && !node.is_recovered() {
        refuse(
            &node,
            Reject::NotReady,
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is fetching its keys after a restart; retry shortly".to_owned(),
        )
    } else if owner.id == node.id {
        let mut response = match op {
            Op::Get => node.read(&key).await,
            Op::Put => node.write(&key, Some(value), &ring).await,
            Op::Delete => node.write(&key, None, &ring).await,
        };
        let headers = response.headers_mut();
        headers.insert(SERVED_BY, node.id_header.clone());
        headers.insert(EPOCH, HeaderValue::from(ring.epoch()));
        node.metrics.request(op.label(), false);
        response
    } else if forwarded {
        refuse(
            &node,
            Reject::Misdirected,
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "{} is owned by {} at epoch {} here; not forwarding a forwarded request",
                key,
                owner.id,
                ring.epoch()
            ),
        )
    } else {
        let forwarded = forward(&node, &owner, client, method, &uri, value, ring.epoch()).await;
        node.metrics.request(op.label(), true);
        node.forwarded();
        forwarded
    };
    node.metrics
        .request_seconds
        .record(started.elapsed().as_secs_f64(), &[]);
    response
}

/// Sends a client's request to the owner and relays its answer.
async fn forward(
    node: &Node,
    owner: &pb::Member,
    client: IpAddr,
    method: Method,
    uri: &Uri,
    value: Bytes,
    epoch: u64,
) -> Response {
    let Ok(addr) = owner.address.parse::<SocketAddr>() else {
        return refuse(
            node,
            Reject::OwnerUnreachable,
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "owner {} has no usable address {:?}",
                owner.id, owner.address
            ),
        );
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::FORWARDED, forwarded_header(client));
    headers.insert(EPOCH, HeaderValue::from(epoch));
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    match node.peers.forward(addr, method, path, headers, value).await {
        Ok(answer) => {
            let mut response = (answer.status, answer.body).into_response();
            for name in [SERVED_BY, EPOCH] {
                if let Some(v) = answer.headers.get(name) {
                    response.headers_mut().insert(name, v.clone());
                }
            }
            response
                .headers_mut()
                .insert(FORWARDED, HeaderValue::from_static("1"));
            response
        }
        Err(e) => {
            let mut refused = refuse(
                node,
                Reject::OwnerUnreachable,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot reach the owner {}: {e}", owner.id),
            );
            refused
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            refused
        }
    }
}

/// `GET /v1/keys/{key}/owner`: the owner, the replicas and the epoch, from this
/// node's ring (no forwarding).
async fn owner(State(node): State<Arc<Node>>, Path(key): Path<String>) -> Response {
    if let Err(why) = check_key(&key) {
        return refuse(&node, Reject::BadKey, StatusCode::BAD_REQUEST, why);
    }
    let Some(ring) = node.ring.ring() else {
        return refuse(
            &node,
            Reject::NotReady,
            StatusCode::SERVICE_UNAVAILABLE,
            "the ring is not known yet".to_owned(),
        );
    };
    let holders = crate::node::holders(&ring, key.as_bytes(), node.replicas);
    if holders.is_empty() {
        return refuse(
            &node,
            Reject::NotReady,
            StatusCode::SERVICE_UNAVAILABLE,
            "the ring has no members".to_owned(),
        );
    }
    let member = |m: &&pb::Member| serde_json::json!({"id": m.id, "address": m.address});
    let body = serde_json::json!({
        "key": key,
        "position": format!("{:#018x}", position(key.as_bytes())),
        "owner": holders.first().map(member),
        "replicas": holders.iter().map(member).collect::<Vec<_>>(),
        "epoch": ring.epoch(),
    });
    node.metrics.request("owner", false);
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(EPOCH, HeaderValue::from(ring.epoch()));
    response
}

/// The body of an internal request, once its sender checks out as a member.
async fn internal_body(
    node: &Node,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Response> {
    if let Err(why) = node.check_peer(peer, headers) {
        return Err(refuse(
            node,
            Reject::BadForwarded,
            StatusCode::FORBIDDEN,
            why,
        ));
    }
    read_body(node, body, MAX_BATCH_BYTES).await
}

/// `PUT /internal/v1/entries`: a batch from another node (replica writes, handoff).
async fn entries(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match internal_body(&node, peer, &headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let batch = match wire::decode(body) {
        Ok(batch) => batch,
        Err(e) => {
            return refuse(
                &node,
                Reject::BadBatch,
                StatusCode::BAD_REQUEST,
                format!("malformed batch: {e}"),
            );
        }
    };
    node.take(batch);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /internal/v1/scan`: the entries this node holds in the ranges of the body
/// (pairs of big-endian `start`, `end`), for a restarted holder.
async fn scan(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match internal_body(&node, peer, &headers, body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    if body.len() % 16 != 0 {
        return refuse(
            &node,
            Reject::BadBatch,
            StatusCode::BAD_REQUEST,
            "ranges are pairs of 8-byte positions".to_owned(),
        );
    }
    let ranges: Vec<(u64, u64)> = body
        .chunks_exact(16)
        .map(|pair| {
            let (start, end) = pair.split_at(8);
            let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
            (word(start), word(end))
        })
        .collect();
    let entries = node.store.in_ranges(&ranges);
    let mut out = BytesMut::new();
    for (key, entry) in &entries {
        wire::put(&mut out, key, entry);
    }
    (StatusCode::OK, out.freeze()).into_response()
}

/// `GET /internal/v1/keys/{key}`: this node's entry of a key, tombstone included.
async fn entry(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    if let Err(why) = node.check_peer(peer, &headers) {
        return refuse(&node, Reject::BadForwarded, StatusCode::FORBIDDEN, why);
    }
    match node.store.get(key.as_bytes()) {
        Some(entry) => {
            let mut out = BytesMut::with_capacity(wire::frame_len(key.as_bytes(), &entry));
            wire::put(&mut out, key.as_bytes(), &entry);
            (StatusCode::OK, out.freeze()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The answer to a read of an entry.
pub(crate) fn read_answer(entry: Option<Entry>) -> Response {
    match entry.and_then(|e| e.value) {
        Some(value) => (StatusCode::OK, value).into_response(),
        None => (StatusCode::NOT_FOUND, "no such key\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_reads_rfc_7239_forms() {
        assert_eq!(forwarded_for("for=192.0.2.60"), "192.0.2.60".parse().ok());
        assert_eq!(
            forwarded_for("for=\"[2001:db8:cafe::17]:4711\";proto=http"),
            "2001:db8:cafe::17".parse().ok()
        );
        assert_eq!(
            forwarded_for("For=\"192.0.2.43:80\", for=198.51.100.17"),
            "192.0.2.43".parse().ok()
        );
        for bad in ["", "by=1.2.3.4", "for=unknown", "for=_hidden", "for=\"[::1"] {
            assert_eq!(forwarded_for(bad), None, "{bad}");
        }
        for ip in ["127.0.3.9", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let header = forwarded_header(ip);
            assert_eq!(forwarded_for(header.to_str().unwrap()), Some(ip));
        }
    }

    #[test]
    fn keys_are_short_text() {
        assert!(check_key("user:42").is_ok());
        assert!(check_key("é/ü").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\nb").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
