//! `GET /ws`: one WebSocket client, from the hello and its snapshot to the end.
//!
//! Each client reads the hub's fan-out at its own pace. The channel keeps the last
//! `queue` frames; a client that falls further behind gets `Lagged`, then a resync and
//! a fresh snapshot (never a silent drop), and a client that cannot take one frame
//! within the send timeout is closed: a stalled browser holds at most the channel's
//! shared frames and one frame in flight, and never slows anyone else.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::App;
use crate::config::MAX_INBOUND_FRAME;
use crate::hub::Frame;

/// The upgrade: Origin and client limit checked first.
pub(crate) async fn upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let metrics = app.hub.metrics();
    if !origin_allowed(&headers, &app.config.allowed_origins) {
        metrics.refused("origin");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let Ok(slot) = Arc::clone(&app.slots).try_acquire_owned() else {
        metrics.refused("limit");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many clients\n").into_response();
    };
    ws.max_message_size(MAX_INBOUND_FRAME)
        .max_frame_size(MAX_INBOUND_FRAME)
        .on_upgrade(move |socket| async move {
            serve(&app, socket).await;
            drop(slot);
        })
}

/// A browser sends its page's origin; other clients send none and are let in (the
/// check stops other sites' pages from reading the ring through a visitor's browser).
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    let own = [format!("http://{host}"), format!("https://{host}")];
    own.iter().any(|o| o == origin) || allowed.iter().any(|o| o == origin)
}

/// Counts a client for as long as it is connected.
struct Connected<'a>(&'a crate::metrics::Metrics);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.client(-1);
    }
}

/// Why a client's loop ends.
enum End {
    /// The client left or the bridge stops.
    Done,
    /// The bridge closes it, for this reason (a `clients_closed_total` label).
    Close(&'static str),
}

async fn serve(app: &App, socket: WebSocket) {
    let hub = &app.hub;
    let metrics = hub.metrics();
    metrics.client(1);
    let _connected = Connected(metrics);
    let (mut tx, mut rx) = socket.split();
    let timeout = app.config.send_timeout;
    let mut send = async |text: Utf8Bytes| -> Result<(), End> {
        match tokio::time::timeout(timeout, tx.send(Message::Text(text))).await {
            Ok(Ok(())) => {
                metrics.sent();
                Ok(())
            }
            Ok(Err(_)) => Err(End::Done),
            Err(_) => Err(End::Close("stuck")),
        }
    };
    let hello = serde_json::json!({
        "type": "hello",
        "ring": hub.name().as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "replicas": app.config.replicas,
        "stream_first": hub.stream_first(),
    })
    .to_string();
    let (mut feed, mut last, snapshot) = hub.join();
    let mut stopping = app.stopping.clone();
    let end = async {
        send(hello.into()).await?;
        send(snapshot.into()).await?;
        let mut deadline = Instant::now() + app.config.idle_timeout;
        loop {
            tokio::select! {
                incoming = rx.next() => {
                    match incoming {
                        None | Some(Ok(Message::Close(_))) => return Err(End::Done),
                        Some(Err(e)) => {
                            // The only error a client can cause here is a frame over the
                            // limit; anything else is a broken connection.
                            if e.to_string().contains("too long") {
                                metrics.frame_refused("oversized");
                                return Err(End::Close("refused"));
                            }
                            return Err(End::Done);
                        }
                        Some(Ok(Message::Text(text))) => {
                            deadline = Instant::now() + app.config.idle_timeout;
                            if is_ping(text.as_str()) {
                                send(Utf8Bytes::from_static(r#"{"type":"pong"}"#)).await?;
                            } else {
                                metrics.frame_refused("bad");
                                send(Utf8Bytes::from_static(r#"{"type":"error","error":"the bridge only takes {\"type\":\"ping\"}"}"#)).await?;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            deadline = Instant::now() + app.config.idle_timeout;
                            metrics.frame_refused("bad");
                            send(Utf8Bytes::from_static(r#"{"type":"error","error":"binary frames are not accepted"}"#)).await?;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            deadline = Instant::now() + app.config.idle_timeout;
                        }
                    }
                }
                frame = feed.recv() => {
                    let resync = match frame {
                        Ok(Frame::Event { seq, text }) => {
                            if seq > last {
                                send(text).await?;
                                last = seq;
                            }
                            continue;
                        }
                        Ok(Frame::Live(text)) => {
                            send(text).await?;
                            continue;
                        }
                        Ok(Frame::Resync(reason)) => ("ring", reason),
                        Err(RecvError::Lagged(_)) => ("behind", "the client fell behind"),
                        Err(RecvError::Closed) => return Err(End::Done),
                    };
                    metrics.client_resync(resync.0);
                    send(serde_json::json!({"type": "resync", "reason": resync.1}).to_string().into()).await?;
                    let (seq, snapshot) = hub.snapshot();
                    send(snapshot.into()).await?;
                    last = seq;
                }
                () = tokio::time::sleep_until(deadline) => return Err(End::Close("idle")),
                _ = stopping.changed() => return Err(End::Done),
            }
        }
    }
    .await;
    if let Err::<(), End>(End::Close(reason)) = end {
        metrics.closed(reason);
        let code = if reason == "refused" {
            close_code::SIZE
        } else {
            close_code::POLICY
        };
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(timeout, tx.send(close)).await;
    }
}

fn is_ping(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .is_some_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("ping"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origins() {
        let mut h = HeaderMap::new();
        assert!(origin_allowed(&h, &[]), "no Origin: not a browser");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9480"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9480"),
        );
        assert!(origin_allowed(&h, &[]));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!origin_allowed(&h, &[]));
        assert!(origin_allowed(&h, &["http://evil.example".to_owned()]));
        h.remove(header::HOST);
        assert!(!origin_allowed(&h, &[]));
    }

    #[test]
    fn pings() {
        assert!(is_ping(r#"{"type":"ping"}"#));
        assert!(!is_ping(r#"{"type":"pong"}"#));
        assert!(!is_ping("ping"));
    }
}
