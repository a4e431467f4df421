//! Route handlers: thin; the work is in the engine and the store.

use super::AppState;
use super::error::{ApiError, ApiJson, JsonText, SourceText};
use crate::store::{Control, DeleteOutcome, ExecutionFilter};
use ax_core::checkpoint::CheckpointFile;
use ax_core::{Options, analyze};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

type ApiResult<T> = Result<T, ApiError>;

pub async fn health(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    // Answer only when the database answers.
    state.engine.store().ping().await?;
    Ok(Json(
        json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }),
    ))
}

pub async fn validate(body: SourceText) -> Json<Value> {
    let a = analyze(
        &body.source,
        &Options {
            filename: body.filename,
            ..Options::default()
        },
    );
    Json(serde_json::to_value(a.full_report()).unwrap_or_default())
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default, rename = "workflowId")]
    workflow_id: Option<String>,
}

fn limit(q: &ListQuery) -> u32 {
    q.limit.unwrap_or(100).clamp(1, 1000)
}

pub async fn list_workflows(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let n = limit(&q);
    let rows = state.engine.store().list_workflows(n).await?;
    Ok(Json(serde_json::to_value(rows).unwrap_or_default()))
}

pub async fn create_workflow(
    State(state): State<AppState>,
    body: SourceText,
) -> ApiResult<Response> {
    let rec = state
        .engine
        .create_workflow(body.source, body.filename)
        .await?;
    Ok((StatusCode::CREATED, Json(rec)).into_response())
}

pub async fn get_workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let rec = state
        .engine
        .store()
        .get_workflow(&id, true)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no workflow {id}")))?;
    Ok(Json(serde_json::to_value(rec).unwrap_or_default()))
}

pub async fn delete_workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    match state.engine.store().delete_workflow(&id).await? {
        DeleteOutcome::Deleted => Ok(StatusCode::NO_CONTENT),
        DeleteOutcome::NotFound => Err(ApiError::not_found(format!("no workflow {id}"))),
        DeleteOutcome::Active(n) => Err(ApiError::conflict(format!(
            "workflow {id} has {n} active execution(s); cancel them first"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartBody {
    #[serde(default)]
    workflow_id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Value>,
}

pub async fn start_execution(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StartBody>,
) -> ApiResult<Response> {
    let workflow_id = match (body.workflow_id, body.source) {
        (Some(id), None) => id,
        (None, Some(source)) => {
            state
                .engine
                .create_workflow(source, body.filename)
                .await?
                .id
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either `workflowId` or `source`",
            ));
        }
    };
    let (rec, _handle) = state.engine.submit(&workflow_id, body.inputs).await?;
    let full = execution_json(&state, &rec.id).await?;
    Ok((StatusCode::CREATED, Json(full)).into_response())
}

pub async fn list_executions(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    if let Some(s) = &q.state
        && ax_core::ExecutionState::parse(s).is_none()
    {
        return Err(ApiError::bad_request(format!(
            "unknown state `{s}`; use one of idle, validating, running, paused, completed, failed, cancelled, interrupted"
        )));
    }
    let n = limit(&q);
    let rows = state
        .engine
        .store()
        .list_executions(ExecutionFilter {
            state: q.state,
            workflow_id: q.workflow_id,
            limit: n,
        })
        .await?;
    Ok(Json(serde_json::to_value(rows).unwrap_or_default()))
}

/// An execution with its steps (outputs included).
pub async fn execution_json(state: &AppState, id: &str) -> ApiResult<Value> {
    let (rec, steps) = state.engine.execution_with_steps(id, true).await?;
    let mut v = serde_json::to_value(rec).unwrap_or_default();
    v["steps"] = serde_json::to_value(steps).unwrap_or_default();
    Ok(v)
}

pub async fn get_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(execution_json(&state, &id).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    #[serde(default)]
    now: bool,
}

async fn control(state: &AppState, id: &str, c: Control) -> ApiResult<Response> {
    state.engine.control(id, c).await?;
    let full = execution_json(state, id).await?;
    Ok((StatusCode::ACCEPTED, Json(full)).into_response())
}

pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonText(body): JsonText,
) -> ApiResult<Response> {
    // The body is optional: `{}` or nothing pauses gracefully, `{"now": true}` at once.
    let now = match body {
        None => false,
        Some(text) => {
            serde_json::from_str::<PauseBody>(&text)
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "the pause body must be {{\"now\": true|false}}: {e}"
                    ))
                })?
                .now
        }
    };
    control(
        &state,
        &id,
        if now {
            Control::PauseNow
        } else {
            Control::Pause
        },
    )
    .await
}

pub async fn resume(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    control(&state, &id, Control::Resume).await
}

pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    control(&state, &id, Control::Cancel).await
}

pub async fn list_checkpoints(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    state.engine.execution(&id).await?;
    let rows = state.engine.store().list_checkpoints(&id).await?;
    Ok(Json(serde_json::to_value(rows).unwrap_or_default()))
}

pub async fn restore_checkpoint(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (rec, _handle) = state.engine.restore(&id, true).await?;
    let full = execution_json(&state, &rec.id).await?;
    Ok((StatusCode::ACCEPTED, Json(full)).into_response())
}

pub async fn export_checkpoint(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let file = state.engine.export_checkpoint(&id).await?;
    let name = format!(
        "ax-checkpoint-{}-{id}.json",
        file.execution_id.clone().unwrap_or_default()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        file.to_json(),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct ImportQuery {
    #[serde(default)]
    resume: Option<bool>,
}

/// An imported run stays stopped unless `?resume=true` asks for it to continue: the
/// file may come from anywhere, and continuing spends the server's provider keys.
pub async fn import_checkpoint(
    State(state): State<AppState>,
    Query(q): Query<ImportQuery>,
    JsonText(body): JsonText,
) -> ApiResult<Response> {
    let body = body.ok_or_else(|| {
        ApiError::bad_request(
            "send a checkpoint file (as exported by the designer or `GET /api/checkpoints/{id}/export`) as the body, with `Content-Type: application/json`",
        )
    })?;
    let file = CheckpointFile::from_json(&body)
        .map_err(|e| ApiError::bad_request(format!("not a usable checkpoint file: {e}")))?;
    let (rec, _handle) = state.engine.import(file, q.resume.unwrap_or(false)).await?;
    let full = execution_json(&state, &rec.id).await?;
    Ok((StatusCode::CREATED, Json(full)).into_response())
}

/// The web app: files from trunk's output folder, `index.html` for client routes.
pub async fn web_app(State(state): State<AppState>, uri: Uri) -> Response {
    let Some(dir) = &state.web_dir else {
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
