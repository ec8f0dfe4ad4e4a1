//! The HTTP side every long-running service serves the same way: `/livez` (200 while
//! the process runs), `/readyz` (200 when ready, else 503 naming what is missing) and
//! `/metrics` (the Prometheus text page). A service merges its own routes into it.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::readiness::Readiness;
use crate::telemetry::Telemetry;

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct Probes {
    readiness: Readiness,
    telemetry: Telemetry,
}

/// `/livez`, `/readyz` and `/metrics` for one service.
pub fn router(readiness: &Readiness, telemetry: &Telemetry) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Probes {
            readiness: readiness.clone(),
            telemetry: telemetry.clone(),
        })
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(probes): State<Probes>) -> (StatusCode, String) {
    if probes.readiness.is_ready() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", probes.readiness.missing().join(", ")),
        )
    }
}

async fn metrics(State(probes): State<Probes>) -> impl IntoResponse {
    match probes.telemetry.render() {
        Ok(page) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            page,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{e}\n"),
        ),
    }
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    async fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    #[tokio::test]
    async fn probes_answer_from_readiness_and_telemetry() {
        let readiness = Readiness::new();
        let nats = readiness.condition("nats");
        let telemetry = Telemetry::new("probe").unwrap();
        telemetry.export_readiness(&readiness);
        let (listener, addr) = crate::error::bind("metrics", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router(&readiness, &telemetry), async {
            let _ = stopped.await;
        }));
        assert_eq!(get_text(addr, "/livez").await.0, 200);
        assert_eq!(
            get_text(addr, "/readyz").await,
            (503, "not ready: nats\n".to_string())
        );
        nats.set(true);
        assert_eq!(get_text(addr, "/readyz").await.0, 200);
        let (status, page) = get_text(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(page.contains("ringside_probe_ready 1"), "{page}");
        ringside_testkit::prometheus::check_metrics(&page).unwrap();
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
