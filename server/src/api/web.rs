//! The web app: files from trunk's output folder, `index.html` for client routes.

use super::ApiError;
use axum::Router;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;

/// The service behind every path that is not the API or `/healthz`.
pub fn service(dir: Option<PathBuf>) -> Router {
    Router::new().fallback(move |uri: Uri| web_app(dir.clone(), uri))
}

async fn web_app(dir: Option<PathBuf>, uri: Uri) -> Response {
    let Some(dir) = &dir else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html><title>ax</title><h1>ax</h1><p>The web app is not built. Run <code>cargo xtask web</code> \
             (or start with <code>cargo xtask serve</code>) and reload. The API is at <a href=\"/api/openapi.json\">/api</a>.</p>",
        )
            .into_response();
    };
    let rel = uri.path().trim_start_matches('/');
    let safe = !rel
        .split('/')
        .any(|part| part == ".." || part.starts_with('.'));
    let candidate = if rel.is_empty() || !safe {
        dir.join("index.html")
    } else {
        dir.join(rel)
    };
    let path = if candidate.is_file() {
        candidate
    } else {
        dir.join("index.html")
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mime = match path.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("wasm") => "application/wasm",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                Some("json") => "application/json",
                Some("png") => "image/png",
                Some("ico") => "image/x-icon",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, mime)], bytes).into_response()
        }
        Err(_) => ApiError::not_found(format!("the web app is missing {}", path.display()))
            .into_response(),
    }
}
