//! A plain `GET` (and any request with a JSON body) for tests of the services' HTTP
//! endpoints (`/livez`, `/readyz`, `/metrics`, the node's API, chromedriver): one
//! request per connection, loopback only; and [`Connection`], a keep-alive HTTP/1.1
//! client for the benchmarks' request loops.

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

/// One keep-alive HTTP/1.1 connection for benchmarks: requests go one after another on
/// the same socket; a response must carry a `Content-Length` (or no body).
#[derive(Debug)]
pub struct Connection {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
    /// The request being written, kept to reuse its allocation.
    head: Vec<u8>,
    line: String,
}

impl Connection {
    /// Connects to `addr` (loopback in this workspace).
    pub async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: tokio::io::BufReader::new(stream),
            host: addr.to_string(),
            head: Vec::new(),
            line: String::new(),
        })
    }

    /// Sends `method path` with `body` and reads the whole response: its status and
    /// its body's length.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, usize)> {
        use std::io::Write as _;
        use tokio::io::AsyncBufReadExt as _;
        self.head.clear();
        write!(
            self.head,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )?;
        self.head.extend_from_slice(body);
        self.stream.get_mut().write_all(&self.head).await?;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let mut status = None;
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                return Err(bad("the connection closed inside a response"));
            }
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            if status.is_none() {
                status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
                if status.is_none() {
                    return Err(bad("not an HTTP status line"));
                }
            } else if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value
                        .trim()
                        .parse()
                        .map_err(|_| bad("bad Content-Length"))?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(bad("chunked responses are not read here"));
                }
            }
        }
        let mut rest = length;
        while rest > 0 {
            let buffered = self.stream.fill_buf().await?;
            if buffered.is_empty() {
                return Err(bad("the connection closed inside a body"));
            }
            let take = buffered.len().min(rest);
            self.stream.consume(take);
            rest -= take;
        }
        Ok((status.unwrap_or(0), length))
    }
}
