//! `GET /metrics`: the Prometheus text format. The database's figures
//! (executions by state, the queue) are the whole deployment's; the counters
//! are this process's (see `engine::Metrics`).

use super::AppState;
use super::error::ApiError;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Prometheus metrics: executions by state and the queue's depth (the whole
/// database); this process's provider calls started, completed and failed (by
/// provider and error class), their latency histogram, lease takeovers and the
/// runs it drives.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "The Prometheus text format, version 0.0.4",
        content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let gauges = state.engine.store().gauges().await?;
    let text = state
        .engine
        .metrics()
        .render(&gauges, state.engine.running_here());
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}
