//! A plain `GET` (and any request with a JSON body) for tests of the services' HTTP
//! endpoints (`/livez`, `/readyz`, `/metrics`, the node's API, chromedriver): one
//! request per connection, loopback only.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET path` on `addr`: the status code and the body, or `None` if nothing answered
/// with an HTTP response.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    // HTTP/1.0: the server answers with a plain body and closes (no chunked encoding,
    // which Prometheus's Go server uses for HTTP/1.1 answers of unknown length).
    exchange(addr, "HTTP/1.0", "GET", path, None).await
}

/// `method path` on `addr` with an optional JSON `body`, in HTTP/1.1 with
/// `Connection: close` (for servers that take no HTTP/1.0, such as chromedriver, and
/// answer with a length): the status code and the body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    exchange(addr, "HTTP/1.1", method, path, body).await
}

async fn exchange(
    addr: SocketAddr,
    version: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut request = format!("{method} {path} {version}\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes()).await.ok()?;
    // Read to the end, or to the announced length (some servers keep the connection
    // open whatever `Connection: close` asked).
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|len| response.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let response = String::from_utf8(response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_owned(),
    ))
}
