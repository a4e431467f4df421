//! The HTTP API (axum): JSON under `/api`, Server-Sent Events for live progress,
//! `/healthz`, `/metrics` (Prometheus), and the web app at `/`. See docs/api.md; `GET /api/openapi.json`
//! describes the same routes.

mod access;
mod decisions;
mod error;
mod handlers;
mod metrics;
mod model;
mod openapi;
mod sse;
mod web;

use crate::engine::Engine;
pub use access::Access;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
pub use error::ApiError;
pub use openapi::spec as openapi_spec;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// When set, every request must present it.
    pub token: Option<Arc<str>>,
    /// The built web app (trunk's `dist/`), if any.
    pub web_dir: Option<PathBuf>,
    /// The names the server answers to and the origins allowed to change things.
    pub access: Arc<Access>,
}

/// The whole application: API, events, health and the web app.
pub fn app(state: AppState) -> Router {
    // Layers run outside in: the Host check first (a rebinding page learns nothing,
    // not even whether a token is needed), then CORS (whose preflights carry no
    // token), then the Origin and content-type checks of writes, then the token;
    // innermost, errors that axum or tower-http answer as plain text become JSON.
    let api_not_found =
        || async { ApiError::not_found("no such API route; see /api/openapi.json") };
    let mut router = openapi::router()
        .route("/api", any(api_not_found))
        .route("/api/{*rest}", any(api_not_found))
        .fallback_service(web::service(state.web_dir.clone()))
        .layer(middleware::from_fn(error::json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::check_origin,
        ));
    if let Some(cors) = cors_layer(&state.access) {
        router = router.layer(cors);
    }
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::check_host,
        ))
        .with_state(state)
}

/// CORS headers only for the origins the user named (none by default: then browsers
/// keep every other origin from reading answers).
fn cors_layer(access: &Access) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = access
        .cors_origins()
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::CONTENT_DISPOSITION])
            .max_age(Duration::from_secs(600)),
    )
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// With a token configured, accept it as `Authorization: Bearer`, as `?token=`
/// (browsers' EventSource cannot send headers) or as the `ax_token` cookie that a
/// `?token=` visit sets.
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.token.clone() else {
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let query = Query::<TokenQuery>::try_from_uri(req.uri())
        .ok()
        .and_then(|Query(q)| q.token);
    let cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("ax_token=").map(str::to_owned));
    let presented = [bearer.map(str::to_owned), query.clone(), cookie];
    if presented
        .iter()
        .flatten()
        .any(|t| constant_time_eq(t.as_bytes(), expected.as_bytes()))
    {
        let set_cookie = query.is_some();
        let mut resp = next.run(req).await;
        if set_cookie
            && let Ok(v) = HeaderValue::from_str(&format!(
                "ax_token={expected}; Path=/; HttpOnly; SameSite=Strict"
            ))
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        return resp;
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this server requires a token: send `Authorization: Bearer <AX_TOKEN>` (or open the page with ?token=<AX_TOKEN>)",
    )
    .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
