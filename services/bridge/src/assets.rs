//! The dashboard's files: built into the binary (`build.rs` lists `dashboard/`), or
//! read from a folder (`RINGSIDE_BRIDGE_DASHBOARD_DIR`) while working on them.

use std::path::{Component, Path};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::App;

include!(concat!(env!("OUT_DIR"), "/dashboard_files.rs"));

/// `GET /`: the dashboard's page.
pub(crate) async fn index(State(app): State<Arc<App>>) -> Response {
    file(&app, "index.html").await
}

/// `GET /{*path}`: one of its files.
pub(crate) async fn asset(State(app): State<Arc<App>>, UrlPath(path): UrlPath<String>) -> Response {
    file(&app, &path).await
}

async fn file(app: &App, path: &str) -> Response {
    let body = match &app.config.dashboard_dir {
        Some(dir) => {
            // Only plain relative paths below the folder.
            let relative = Path::new(path);
            if !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            {
                return StatusCode::NOT_FOUND.into_response();
            }
            match tokio::fs::read(dir.join(relative)).await {
                Ok(bytes) => bytes,
                Err(_) => return StatusCode::NOT_FOUND.into_response(),
            }
        }
        None => match FILES.iter().find(|(name, _)| *name == path) {
            Some((_, bytes)) => bytes.to_vec(),
            None => return StatusCode::NOT_FOUND.into_response(),
        },
    };
    (
        [
            (header::CONTENT_TYPE, content_type(path)),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The page loads nothing from elsewhere and talks only to its own origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// The built-in files' names.
pub fn names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(name, _)| *name)
}
