//! The HTTP API (axum): JSON under `/api`, Server-Sent Events for live progress,
//! `/healthz`, and the web app at `/`. See docs/api.md; `GET /api/openapi.json`
//! describes the same routes.

mod access;
mod error;
mod handlers;
mod openapi;
mod sse;

use crate::engine::Engine;
pub use access::Access;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
pub use error::ApiError;
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
    let api = Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/validate", post(handlers::validate))
        .route(
            "/workflows",
            get(handlers::list_workflows).post(handlers::create_workflow),
        )
        .route(
            "/workflows/{id}",
            get(handlers::get_workflow).delete(handlers::delete_workflow),
        )
        .route(
            "/executions",
            get(handlers::list_executions).post(handlers::start_execution),
        )
        .route("/executions/{id}", get(handlers::get_execution))
        .route("/executions/{id}/pause", post(handlers::pause))
        .route("/executions/{id}/resume", post(handlers::resume))
        .route("/executions/{id}/cancel", post(handlers::cancel))
        .route(
            "/executions/{id}/checkpoints",
            get(handlers::list_checkpoints),
        )
        .route("/executions/{id}/events", get(sse::events))
        .route("/checkpoints/import", post(handlers::import_checkpoint))
        .route(
            "/checkpoints/{id}/restore",
            post(handlers::restore_checkpoint),
        )
        .route("/checkpoints/{id}/export", get(handlers::export_checkpoint))
        .fallback(|| async { ApiError::not_found("no such API route; see /api/openapi.json") });
    // Layers run outside in: the Host check first (a rebinding page learns nothing,
    // not even whether a token is needed), then CORS (whose preflights carry no
    // token), then the Origin and content-type checks of writes, then the token.
    let mut router = Router::new()
        .route("/healthz", get(handlers::health))
        .nest("/api", api)
        .fallback(handlers::web_app)
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
    let query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(percent_decode)
    });
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

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
