//! The simulated clients: each one is a pooled keep-alive HTTP/1.1 client whose sockets
//! are bound to its own source address in 127.0.0.0/8, so a node sees K distinct client
//! IPs for real (every 127.x.y.z is local on Linux). Client i binds
//! `127.0.{1 + i / 254}.{1 + i % 254}`: never 127.0.0.x (127.0.0.1 is everyone's
//! address), never a last byte of 0 or 255.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Most clients: one per address 127.0.{1..=255}.{1..=254}.
pub(crate) const MAX_CLIENTS: usize = 255 * 254;

/// How long an idle pooled connection is kept.
const IDLE: Duration = Duration::from_secs(30);

/// The node that owned and served a request.
pub(crate) const SERVED_BY: &str = "ringside-served-by";
/// `1` when the node the request was sent to forwarded it to the owner.
pub(crate) const FORWARDED: &str = "ringside-forwarded";

/// The source address of client `index` (below [`MAX_CLIENTS`]).
pub(crate) fn source_address(index: usize) -> Ipv4Addr {
    // Both bytes fit for index < MAX_CLIENTS; above, they wrap rather than panic.
    let third = (1 + index / 254) as u8;
    let fourth = (1 + index % 254) as u8;
    Ipv4Addr::new(127, 0, third, fourth)
}

/// The node's answer.
#[derive(Debug)]
pub(crate) struct Reply {
    /// HTTP status.
    pub(crate) status: u16,
    /// `Ringside-Served-By`, if present.
    pub(crate) served_by: Option<String>,
    /// `Ringside-Forwarded: 1` was present.
    pub(crate) forwarded: bool,
    /// The body.
    pub(crate) body: Bytes,
}

/// One request's result and how long it took.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// From sending the request to the end of the response body.
    pub(crate) latency: Duration,
    /// The answer, or the kind of transport failure (`timeout`, `connect: connection
    /// refused`, ...).
    pub(crate) result: Result<Reply, String>,
}

/// The K clients.
#[derive(Debug)]
pub(crate) struct Clients {
    clients: Vec<Client<HttpConnector, Full<Bytes>>>,
    timeout: Duration,
}

impl Clients {
    /// `count` clients (1..=[`MAX_CLIENTS`]); a request gets `timeout`, connecting
    /// included.
    pub(crate) fn new(count: usize, timeout: Duration) -> Self {
        let clients = (0..count)
            .map(|i| {
                let mut connector = HttpConnector::new();
                connector.set_local_address(Some(IpAddr::V4(source_address(i))));
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(timeout));
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(IDLE)
                    .pool_timer(TokioTimer::new())
                    .build(connector)
            })
            .collect();
        Self { clients, timeout }
    }

    /// Sends `method url` with `body` from client `client` (modulo the count).
    pub(crate) async fn send(
        &self,
        client: usize,
        method: Method,
        url: &str,
        body: Bytes,
    ) -> Exchange {
        let started = Instant::now();
        let result = match Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(body))
        {
            Ok(request) => {
                let http = &self.clients[client % self.clients.len()];
                tokio::time::timeout(self.timeout, exchange(http, request))
                    .await
                    .unwrap_or_else(|_| Err("timeout".to_owned()))
            }
            Err(e) => Err(format!("invalid request: {e}")),
        };
        Exchange {
            latency: started.elapsed(),
            result,
        }
    }
}

async fn exchange(
    http: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Reply, String> {
    let response = http.request(request).await.map_err(|e| {
        let stage = if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        failure_kind(stage, &e)
    })?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status().as_u16();
    let served_by = header(SERVED_BY);
    let forwarded = header(FORWARDED).as_deref() == Some("1");
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failure_kind("body", &e))?
        .to_bytes();
    Ok(Reply {
        status,
        served_by,
        forwarded,
        body,
    })
}

/// `stage: <io error kind>` from the first I/O error in the chain (`connect: connection
/// refused`), else `stage: <message>`: kinds, not messages, so errors group well.
fn failure_kind(stage: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return format!("{stage}: {}", io.kind());
        }
        cause = e.source();
    }
    format!("{stage}: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_distinct_loopback_and_never_127_0_0_x() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..MAX_CLIENTS {
            let a = source_address(i);
            let [first, second, third, fourth] = a.octets();
            assert_eq!((first, second), (127, 0), "{a}");
            assert!(third >= 1, "{a}");
            assert!((1..=254).contains(&fourth), "{a}");
            assert!(seen.insert(a), "{a} twice");
        }
        assert_eq!(source_address(0), Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(source_address(254), Ipv4Addr::new(127, 0, 2, 1));
    }
}
