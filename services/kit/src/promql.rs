//! A PromQL instant query against Prometheus's HTTP API (`GET /api/v1/query`), what the
//! local autoscaler reads its metrics with and the tests check the stored series with.
//!
//! One HTTP/1.0 request per query on a fresh loopback connection (Prometheus then
//! answers with a plain body and closes: no chunked encoding to undo), bounded in time
//! and in the size of the answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The largest answer read (a vector of a few thousand series).
const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// One sample of an instant vector (or the value of a scalar, without labels).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series' labels (`__name__` included when the query keeps it).
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Prometheus could not be reached or the exchange failed.
    #[error("cannot query Prometheus at {addr}")]
    Io {
        /// Its address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the time allowed.
    #[error("Prometheus at {addr} did not answer within {timeout:?}")]
    Timeout {
        /// Its address.
        addr: SocketAddr,
        /// The time allowed.
        timeout: Duration,
    },
    /// The answer is not what the API answers.
    #[error("unexpected answer from Prometheus: {0}")]
    Malformed(String),
    /// Prometheus refused the query (bad PromQL, a timeout of its own).
    #[error("Prometheus refused `{query}`: {error_type}: {error}")]
    Refused {
        /// The query.
        query: String,
        /// Its `errorType`.
        error_type: String,
        /// Its `error`.
        error: String,
    },
}

/// Runs `query` at the current time on the Prometheus at `addr`: the samples of the
/// instant vector it answers (one without labels for a scalar).
pub async fn query(
    addr: SocketAddr,
    query: &str,
    timeout: Duration,
) -> Result<Vec<Sample>, QueryError> {
    let body = tokio::time::timeout(timeout, exchange(addr, query))
        .await
        .map_err(|_| QueryError::Timeout { addr, timeout })?
        .map_err(|source| QueryError::Io { addr, source })?;
    parse(query, &body)
}

async fn exchange(addr: SocketAddr, query: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET /api/v1/query?query={} HTTP/1.0\r\nHost: {addr}\r\n\r\n",
        encode(query)
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await?;
    Ok(response)
}

/// Percent-encodes a query parameter (everything but RFC 3986's unreserved bytes).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn parse(query: &str, response: &[u8]) -> Result<Vec<Sample>, QueryError> {
    let malformed = |why: &str| QueryError::Malformed(why.to_owned());
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("no HTTP header end"))?;
    let body: serde_json::Value = serde_json::from_slice(&response[split + 4..])
        .map_err(|e| QueryError::Malformed(format!("not JSON: {e}")))?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    if body["status"] != "success" {
        return Err(QueryError::Refused {
            query: query.to_owned(),
            error_type: text(&body["errorType"]),
            error: text(&body["error"]),
        });
    }
    let data = &body["data"];
    let value = |pair: &serde_json::Value| -> Result<f64, QueryError> {
        pair.get(1)
            .and_then(serde_json::Value::as_str)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| malformed("a sample without a numeric value"))
    };
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .ok_or_else(|| malformed("a vector without a result list"))?
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                    .unwrap_or_default();
                Ok(Sample {
                    labels,
                    value: value(&series["value"])?,
                })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: value(&data["result"])?,
        }]),
        other => Err(QueryError::Malformed(format!(
            "result type {other:?}, expected an instant vector or a scalar"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> Vec<u8> {
        format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{json}").into_bytes()
    }

    #[test]
    fn vectors_scalars_and_refusals() {
        let vector = answer(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"pod":"node-1"},"value":[1700000000.1,"12.5"]},
                {"metric":{},"value":[1700000000.1,"NaN"]}]}}"#,
        );
        let samples = parse("q", &vector).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].labels["pod"], "node-1");
        assert_eq!(samples[0].value, 12.5);
        assert!(samples[1].value.is_nan());
        let scalar =
            answer(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#);
        assert_eq!(parse("q", &scalar).unwrap()[0].value, 3.0);
        let refused = answer(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#);
        let err = parse("sum(", &refused).unwrap_err().to_string();
        assert!(err.contains("sum(") && err.contains("parse error"), "{err}");
        for bad in [
            &b"garbage"[..],
            &answer("{")[..],
            &answer(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)[..],
        ] {
            assert!(matches!(parse("q", bad), Err(QueryError::Malformed(_))));
        }
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode(r#"max(x{pod!=""}) by (pod)"#),
            "max%28x%7Bpod%21%3D%22%22%7D%29%20by%20%28pod%29"
        );
    }
}
