//! A plain `GET` for tests of the services' HTTP endpoints (`/livez`, `/readyz`,
//! `/metrics`, the node's API): one request per connection, loopback only.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET path` on `addr`: the status code and the body, or `None` if nothing answered
/// with an HTTP response.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    // HTTP/1.0: the server answers with a plain body and closes (no chunked encoding,
    // which Prometheus's Go server uses for HTTP/1.1 answers of unknown length).
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_owned(),
    ))
}
