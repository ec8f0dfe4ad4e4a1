//! The JSON API of time travel and the key probe, through the replay library:
//! `/api/ring`, `/api/events`, `/api/key`, `/api/status` (docs/bridge.md).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ringside_replay::{History, Point, Range, ReplayError, checksum_hex};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::App;

/// Events one `/api/events` answer holds by default, and at most.
const EVENTS_DEFAULT: usize = 500;
const EVENTS_MAX: usize = 5000;
/// Longest key the probe takes (bytes).
const MAX_KEY: usize = 1024;

/// A refused or failed request: its status and message.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ReplayError> for Failure {
    fn from(e: ReplayError) -> Self {
        let status = match e {
            ReplayError::OpenStream { .. }
            | ReplayError::Nats { .. }
            | ReplayError::Timeout { .. }
            | ReplayError::StreamEnded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Failure(status, ringside_events::error_chain(&e))
    }
}

fn bad(message: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message.into())
}

/// Counts the answer of `endpoint` and turns it into a response.
fn answer(app: &App, endpoint: &'static str, result: Result<Response, Failure>) -> Response {
    app.hub.metrics().api(endpoint, result.is_ok());
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn history(app: &App) -> Result<&History, Failure> {
    app.history
        .get_or_try_init(|| {
            History::nats(
                app.nats.clone(),
                &app.config.nats_url,
                app.config.ring.clone(),
            )
        })
        .await
        .map_err(Failure::from)
}

fn point(seq: Option<u64>, time: Option<&str>) -> Result<Option<Point>, Failure> {
    match (seq, time) {
        (Some(_), Some(_)) => Err(bad("give seq or time, not both")),
        (Some(seq), None) => Ok(Some(Point::Seq(seq))),
        (None, Some(t)) => OffsetDateTime::parse(t, &Rfc3339)
            .map(|t| Some(Point::Time(t)))
            .map_err(|e| bad(format!("time {t:?} is not RFC 3339: {e}"))),
        (None, None) => Ok(None),
    }
}

/// `/api/ring` parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct RingQuery {
    seq: Option<u64>,
    time: Option<String>,
}

/// `GET /api/ring?seq=S` or `?time=T`: the ring right after that point.
pub(crate) async fn ring(State(app): State<Arc<App>>, Query(q): Query<RingQuery>) -> Response {
    let result = async {
        let at = point(q.seq, q.time.as_deref())?.ok_or_else(|| bad("give seq or time"))?;
        let at = history(&app).await?.ring_at(Some(at), &mut ()).await?;
        let snapshot = at
            .ledger
            .snapshot()
            .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(Json(json!({ "seq": at.at_sequence, "snapshot": snapshot })).into_response())
    }
    .await;
    answer(&app, "ring", result)
}

/// `/api/events` parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    from: Option<u64>,
    to: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/events?from=S&to=T&limit=N`: the ring's stored events, in order.
pub(crate) async fn events(State(app): State<Arc<App>>, Query(q): Query<EventsQuery>) -> Response {
    let result = async {
        let limit = q.limit.unwrap_or(EVENTS_DEFAULT);
        if !(1..=EVENTS_MAX).contains(&limit) {
            return Err(bad(format!("limit must be 1 to {EVENTS_MAX}")));
        }
        let range = Range {
            from: q.from.map(Point::Seq),
            to: q.to.map(Point::Seq),
        };
        let mut events = history(&app).await?.events(range, &[]).await?;
        let mut lines = Vec::new();
        let mut next = None;
        while let Some(record) = events.next().await? {
            if lines.len() == limit {
                next = Some(record.seq);
                break;
            }
            // A stored payload that is not an event is shown as such, never dropped.
            let line = record
                .to_json_line()
                .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            lines.push(line);
        }
        events.close().await;
        let next = next.map_or_else(|| "null".to_owned(), |n: u64| n.to_string());
        let body = format!("{{\"events\":[{}],\"next\":{next}}}", lines.join(","));
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    }
    .await;
    answer(&app, "events", result)
}

/// `/api/key` parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct KeyQuery {
    key: String,
}

/// `GET /api/key?key=K`: where a key lives now and the epochs at which it moved.
pub(crate) async fn key(State(app): State<Arc<App>>, Query(q): Query<KeyQuery>) -> Response {
    let result = async {
        if q.key.is_empty() || q.key.len() > MAX_KEY {
            return Err(bad(format!("a key is 1 to {MAX_KEY} bytes")));
        }
        let hash = ringside_ring::hash_key(q.key.as_bytes());
        let shown = app.hub.shown();
        let owner = shown.ring.owner_of_hash(hash).ok();
        let replicas = shown
            .ring
            .successors_of_hash(hash, app.config.replicas)
            .unwrap_or_default();
        let history = history(&app)
            .await?
            .key_history(&q.key, Range::default(), &mut ())
            .await;
        // A ring with no history yet has no changes to show; the probe still answers.
        let changes: Vec<serde_json::Value> = match history {
            Ok(h) => h
                .changes
                .iter()
                .map(|c| {
                    json!({
                        "epoch": c.epoch.to_string(),
                        "seq": c.sequence,
                        "time": c.time,
                        "from": c.from,
                        "owner": c.to,
                    })
                })
                .collect(),
            Err(ReplayError::NoEvents { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Json(json!({
            "key": q.key,
            "position": hash.to_string(),
            "owner": owner,
            "replicas": replicas,
            "epoch": shown.epoch.to_string(),
            "seq": shown.seq,
            "history": changes,
        }))
        .into_response())
    }
    .await;
    answer(&app, "key", result)
}

/// `GET /api/status`: the ring and the bridge in one line.
pub(crate) async fn status(State(app): State<Arc<App>>) -> Response {
    let shown = app.hub.shown();
    let body = Json(json!({
        "ring": app.config.ring.as_str(),
        "replicas": app.config.replicas,
        "clients": app.hub.metrics().clients(),
        "seq": shown.seq,
        "epoch": shown.epoch.to_string(),
        "checksum": checksum_hex(shown.ring.checksum()),
    }));
    answer(&app, "status", Ok(body.into_response()))
}
