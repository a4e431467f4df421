//! The web app: trunk's output folder through tower-http's `ServeDir` (ranges,
//! conditional requests, content types), `index.html` for client routes, and cache
//! headers that let browsers keep the hashed wasm and scripts for good while they
//! always revalidate the page that names them.

use super::ApiError;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use std::path::PathBuf;
use tower_http::services::{ServeDir, ServeFile};

const NOT_BUILT: &str = "<!doctype html><title>ax</title><h1>ax</h1><p>The web app is not built. \
    Run <code>cargo xtask web</code> (or start with <code>cargo xtask serve</code>) and reload. \
    The API is at <a href=\"/api/openapi.json\">/api</a>.</p>";

/// The service behind every path that is not the API or `/healthz`.
pub fn service(dir: Option<PathBuf>) -> Router {
    let Some(dir) = dir else {
        return Router::new().fallback(|| async { (StatusCode::NOT_FOUND, Html(NOT_BUILT)) });
    };
    let files = ServeDir::new(&dir).fallback(ServeFile::new(dir.join("index.html")));
    Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn(cache_and_hide))
}

/// trunk names the wasm, scripts and styles after a hash of their content
/// (`ax-web-0123456789abcdef_bg.wasm`): such a name never changes its bytes.
fn content_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let stem = name.split('.').next().unwrap_or("");
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-')
        .is_some_and(|(_, hash)| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn cache_and_hide(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    // Dot files (an editor's swap file, `.git`) are never part of the app.
    if path.split('/').any(|part| part.starts_with('.')) {
        return ApiError::not_found(format!("no file {path}")).into_response();
    }
    let mut resp = next.run(req).await;
    let is_html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let status = resp.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        // The page (also what client routes answer) must be revalidated, or a new
        // release would keep loading the old hashed files.
        let policy = if content_hashed(&path) && !is_html {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::content_hashed;

    #[test]
    fn hashed_names() {
        assert!(content_hashed("/ax-web-0123456789abcdef_bg.wasm"));
        assert!(content_hashed("/ax-web-0123456789abcdef.js"));
        assert!(content_hashed("/style-fedcba9876543210.css"));
        assert!(!content_hashed("/index.html"));
        assert!(!content_hashed("/"));
        assert!(!content_hashed("/healthz"));
        assert!(!content_hashed("/runs/0123456789abcdef"));
        assert!(!content_hashed("/ax-web-0123456789abcdeg.js"));
    }
}
