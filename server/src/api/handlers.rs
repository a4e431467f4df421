//! Route handlers: thin; the work is in the engine and the store. Each carries its
//! `#[utoipa::path]`: the OpenAPI document is generated from these signatures and
//! the wire types of `model.rs`, and the router is built from the same list, so the
//! two cannot drift apart.

use super::AppState;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, JsonText, SourceText};
use super::model::{
    Checkpoint, CheckpointFileBody, ErrorBody, Execution, ExecutionSummary, ExecutionsQuery,
    FilenameQuery, Health, ImportQuery, ListQuery, PauseBody, Report, ResumeBody, SourceJson,
    Spent, StartExecution, Stats, StatsQuery, Step, Workflow, WorkflowStats,
};
use crate::engine::RunOptions;
use crate::store::{Control, DeleteOutcome, ExecutionFilter};
use ax_core::checkpoint::CheckpointFile;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

type ApiResult<T> = Result<T, ApiError>;

/// The most a list returns.
const MAX_LIMIT: u32 = 1000;

fn limit(given: Option<u32>) -> ApiResult<u32> {
    match given {
        None => Ok(100),
        Some(n @ 1..=MAX_LIMIT) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "`limit={n}` is out of range: give 1 to {MAX_LIMIT} (default 100)"
        ))),
    }
}

/// Ready when the database answers.
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses((status = 200, description = "The server and its database answer", body = Health)))]
pub async fn health(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state.engine.store().ping().await?;
    Ok(Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    }))
}

/// Validate a workflow text: the same report as `ax workflow validate --format json`.
#[utoipa::path(post, path = "/validate", tag = "workflows",
    params(FilenameQuery),
    request_body(description = "`{\"source\", \"filename\"?}` or a JSON workflow as `application/json`, or the workflow file itself as YAML",
        content((SourceJson = "application/json"), (Value = "application/yaml"),
            (Value = "application/x-yaml"), (Value = "text/yaml"))),
    responses((status = 200, description = "The report, valid or not", body = Report)))]
pub async fn validate(State(state): State<AppState>, body: SourceText) -> ApiResult<Json<Report>> {
    let a = state
        .engine
        .analyze(
            &body.source,
            body.filename.as_deref(),
            &crate::engine::Files::new(),
        )
        .await?;
    Ok(Json(Report::from(a.full_report())))
}

/// Stored workflows, newest first (without their text).
#[utoipa::path(get, path = "/workflows", tag = "workflows", params(ListQuery),
    responses((status = 200, description = "Newest first", body = Vec<Workflow>)))]
pub async fn list_workflows(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Workflow>>> {
    let n = limit(q.limit)?;
    let rows = state.engine.store().list_workflows(n).await?;
    Ok(Json(rows.into_iter().map(Workflow::from).collect()))
}

/// Store a workflow (validated first).
#[utoipa::path(post, path = "/workflows", tag = "workflows",
    params(FilenameQuery),
    request_body(description = "`{\"source\", \"filename\"?}` or a JSON workflow as `application/json`, or the workflow file itself as YAML",
        content((SourceJson = "application/json"), (Value = "application/yaml"),
            (Value = "application/x-yaml"), (Value = "text/yaml"))),
    responses(
        (status = 201, description = "Stored", body = Workflow, links(
            ("GetWorkflow" = (operation_id = "get_workflow", parameters(("id" = "$response.body#/id")))),
            ("DeleteWorkflow" = (operation_id = "delete_workflow", parameters(("id" = "$response.body#/id")))),
            ("RunWorkflow" = (operation_id = "start_execution", request_body = json!({"workflowId": "$response.body#/id"}))))),
        (status = 422, description = "The workflow is not valid: `report` says why and where", body = ErrorBody)))]
pub async fn create_workflow(
    State(state): State<AppState>,
    body: SourceText,
) -> ApiResult<Response> {
    let rec = state
        .engine
        .create_workflow(body.source, body.filename)
        .await?;
    Ok((StatusCode::CREATED, Json(Workflow::from(rec))).into_response())
}

/// One workflow with its text.
#[utoipa::path(get, path = "/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id")),
    responses(
        (status = 200, description = "The workflow and its source", body = Workflow),
        (status = 404, description = "No such workflow", body = ErrorBody)))]
pub async fn get_workflow(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Workflow>> {
    let rec = state
        .engine
        .store()
        .get_workflow(&id, true)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no workflow {id}")))?;
    Ok(Json(Workflow::from(rec)))
}

/// Delete a workflow and its finished executions.
#[utoipa::path(delete, path = "/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "One of its executions is still active", body = ErrorBody)))]
pub async fn delete_workflow(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    match state.engine.store().delete_workflow(&id).await? {
        DeleteOutcome::Deleted => Ok(StatusCode::NO_CONTENT),
        DeleteOutcome::NotFound => Err(ApiError::not_found(format!("no workflow {id}"))),
        DeleteOutcome::Active(n) => Err(ApiError::conflict(format!(
            "workflow {id} has {n} active execution(s); cancel them first"
        ))),
    }
}

/// Start an execution of a stored workflow, or store a text and run it.
#[utoipa::path(post, path = "/executions", tag = "executions",
    request_body(content = StartExecution, content_type = "application/json"),
    responses(
        (status = 201, description = "Started: the run continues in the server", body = Execution, links(
            ("GetExecution" = (operation_id = "get_execution", parameters(("id" = "$response.body#/id")))),
            ("PauseExecution" = (operation_id = "pause", parameters(("id" = "$response.body#/id")))),
            ("ResumeExecution" = (operation_id = "resume", parameters(("id" = "$response.body#/id")))),
            ("CancelExecution" = (operation_id = "cancel", parameters(("id" = "$response.body#/id")))),
            ("ListCheckpoints" = (operation_id = "list_checkpoints", parameters(("id" = "$response.body#/id")))),
            ("ExecutionEvents" = (operation_id = "events", parameters(("id" = "$response.body#/id")))))),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 422, description = "The workflow text or the inputs are not valid", body = ErrorBody)))]
pub async fn start_execution(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let (workflow_id, inputs, budget, cache) = match StartExecution::from_value(body)? {
        StartExecution::Stored(s) => (s.workflow_id, s.inputs, s.budget, s.cache),
        StartExecution::Text(t) => {
            // A bad budget stores nothing.
            t.budget.unwrap_or_default().budget()?;
            let rec = state.engine.create_workflow(t.source, t.filename).await?;
            (rec.id, t.inputs, t.budget, t.cache)
        }
    };
    let options = RunOptions {
        budget: budget.unwrap_or_default().budget()?,
        cache,
    };
    let (rec, _handle) = state
        .engine
        .submit_with(&workflow_id, inputs, options)
        .await
        .map_err(ApiError::unprocessable_if_bad_request)?;
    let full = execution(&state, &rec.id).await?;
    Ok((StatusCode::CREATED, Json(full)).into_response())
}

/// Executions, newest first.
#[utoipa::path(get, path = "/executions", tag = "executions", params(ExecutionsQuery),
    responses((status = 200, description = "Newest first", body = Vec<ExecutionSummary>)))]
pub async fn list_executions(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ExecutionsQuery>,
) -> ApiResult<Json<Vec<ExecutionSummary>>> {
    if let Some(s) = &q.state
        && ax_core::ExecutionState::parse(s).is_none()
    {
        let all: Vec<&str> = ax_core::ExecutionState::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        return Err(ApiError::bad_request(format!(
            "unknown state `{s}`; use one of {}",
            all.join(", ")
        )));
    }
    let n = limit(q.limit)?;
    let rows = state
        .engine
        .store()
        .list_executions(ExecutionFilter {
            state: q.state,
            workflow_id: q.workflow_id,
            parent_id: q.parent_id,
            limit: n,
        })
        .await?;
    Ok(Json(rows.into_iter().map(ExecutionSummary::from).collect()))
}

/// Statistics per workflow name: runs by state, success rate, duration
/// percentiles, tokens and cost.
#[utoipa::path(get, path = "/stats", tag = "workflows", params(StatsQuery),
    responses(
        (status = 200, description = "One entry per workflow name, names in order", body = Stats),
        (status = 404, description = "`?workflow=` names no stored workflow", body = ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    let only = q
        .workflow
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let rows = state.engine.store().workflow_stats(only).await?;
    if let Some(w) = only
        && rows.is_empty()
    {
        return Err(ApiError::not_found(format!(
            "no workflow is named `{w}` or has that id; `GET /api/workflows` lists them"
        )));
    }
    Ok(Json(Stats {
        workflows: rows.into_iter().map(WorkflowStats::from).collect(),
    }))
}

/// An execution with its steps (outputs included).
pub async fn execution(state: &AppState, id: &str) -> ApiResult<Execution> {
    let (rec, steps) = state.engine.execution_with_steps(id, true).await?;
    let children = state.engine.children(id).await?;
    let steps: Vec<Step> = steps.into_iter().map(Step::from).collect();
    let mut spent = Spent::of(&steps);
    if !children.is_empty() {
        let theirs = state.engine.children_spent(id).await?;
        spent.usd += theirs.usd;
        spent.tokens += theirs.tokens;
    }
    Ok(Execution {
        summary: ExecutionSummary::from(rec),
        spent,
        steps,
        children: children.into_iter().map(ExecutionSummary::from).collect(),
    })
}

/// One execution with its steps.
#[utoipa::path(get, path = "/executions/{id}", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution and its steps", body = Execution),
        (status = 404, description = "No such execution", body = ErrorBody)))]
pub async fn get_execution(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Execution>> {
    Ok(Json(execution(&state, &id).await?))
}

async fn control(state: &AppState, id: &str, c: Control) -> ApiResult<Response> {
    state.engine.control(id, c).await?;
    let full = execution(state, id).await?;
    Ok((StatusCode::ACCEPTED, Json(full)).into_response())
}

/// Pause: nothing new starts; running steps finish, unless `now` aborts them (they
/// run again on resume).
#[utoipa::path(post, path = "/executions/{id}/pause", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    request_body(content = Option<PauseBody>, content_type = "application/json",
        description = "Optional; no body pauses gracefully"),
    responses(
        (status = 202, description = "Asked: the run pauses within a second", body = Execution),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    JsonText(body): JsonText,
) -> ApiResult<Response> {
    let now = match body {
        None => false,
        // `null` is no body too.
        Some(text) => {
            serde_json::from_str::<Option<PauseBody>>(&text)
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "the pause body must be {{\"now\": true|false}} or nothing: {e}"
                    ))
                })?
                .unwrap_or_default()
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

/// Resume a paused, failed or interrupted execution; with `budget`, raise its
/// budget first (a run paused by its budget continues).
#[utoipa::path(post, path = "/executions/{id}/resume", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    request_body(content = Option<ResumeBody>, content_type = "application/json",
        description = "Optional; no body resumes as it is"),
    responses(
        (status = 202, description = "Resumed", body = Execution),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "Not resumable (running, completed or cancelled)", body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    JsonText(body): JsonText,
) -> ApiResult<Response> {
    let body = match body {
        None => ResumeBody::default(),
        Some(text) => serde_json::from_str::<Option<ResumeBody>>(&text)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "the resume body must be {{\"budget\": {{\"usd\"?, \"tokens\"?}}}} or nothing: {e}"
                ))
            })?
            .unwrap_or_default(),
    };
    if let Some(b) = body.budget {
        let budget = b.budget()?;
        state.engine.set_budget(&id, budget).await?;
    }
    control(&state, &id, Control::Resume).await
}

/// Cancel an execution: in-flight provider calls are aborted; final.
#[utoipa::path(post, path = "/executions/{id}/cancel", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 202, description = "Cancelled", body = Execution),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "Already finished", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    control(&state, &id, Control::Cancel).await
}

/// Restore points of an execution, newest first.
#[utoipa::path(get, path = "/executions/{id}/checkpoints", tag = "checkpoints",
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "Newest first", body = Vec<Checkpoint>, links(
            ("RestoreCheckpoint" = (operation_id = "restore_checkpoint", parameters(("id" = "$response.body#/0/id")))),
            ("ExportCheckpoint" = (operation_id = "export_checkpoint", parameters(("id" = "$response.body#/0/id")))))),
        (status = 404, description = "No such execution", body = ErrorBody)))]
pub async fn list_checkpoints(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<Checkpoint>>> {
    state.engine.execution(&id).await?;
    let rows = state.engine.store().list_checkpoints(&id).await?;
    Ok(Json(rows.into_iter().map(Checkpoint::from).collect()))
}

/// Rewind the execution to this checkpoint (earlier attempts stay in the history)
/// and continue it.
#[utoipa::path(post, path = "/checkpoints/{id}/restore", tag = "checkpoints",
    params(("id" = String, Path, description = "The checkpoint's id")),
    responses(
        (status = 202, description = "Restored and continuing", body = Execution),
        (status = 404, description = "No such checkpoint", body = ErrorBody),
        (status = 409, description = "The execution is running or cancelled", body = ErrorBody)))]
pub async fn restore_checkpoint(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let (rec, _handle) = state.engine.restore(&id, true).await?;
    let full = execution(&state, &rec.id).await?;
    Ok((StatusCode::ACCEPTED, Json(full)).into_response())
}

/// A checkpoint file: the workflow text, the run's state and every output.
#[utoipa::path(get, path = "/checkpoints/{id}/export", tag = "checkpoints",
    params(("id" = String, Path, description = "The checkpoint's id")),
    responses(
        (status = 200, description = "The file (`Content-Disposition: attachment`)", body = CheckpointFileBody,
            headers(("content-disposition" = String, description = "attachment; filename=\"ax-checkpoint-….json\""))),
        (status = 404, description = "No such checkpoint", body = ErrorBody)))]
pub async fn export_checkpoint(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let file = state.engine.export_checkpoint(&id).await?;
    let name = format!(
        "ax-checkpoint-{}-{id}.json",
        file.execution_id.clone().unwrap_or_default()
    );
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        )],
        Json(CheckpointFileBody(file)),
    )
        .into_response())
}

/// Import a checkpoint file as a new execution. It stays stopped unless
/// `?resume=true`: the file may come from anywhere, and continuing spends the
/// server's provider keys.
#[utoipa::path(post, path = "/checkpoints/import", tag = "checkpoints",
    params(ImportQuery),
    request_body(content = CheckpointFileBody, content_type = "application/json"),
    responses(
        (status = 201, description = "A new execution restored from the file", body = Execution),
        (status = 422, description = "The file is well formed but cannot be used: a newer version, missing or corrupt outputs, an invalid workflow, a checkpoint that does not fit it", body = ErrorBody)))]
pub async fn import_checkpoint(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ImportQuery>,
    JsonText(body): JsonText,
) -> ApiResult<Response> {
    let body = body.ok_or_else(|| {
        ApiError::bad_request(
            "send a checkpoint file (as exported by the designer or `GET /api/checkpoints/{id}/export`) as the body, with `Content-Type: application/json`",
        )
    })?;
    // The documented shape first (400 when it does not match), then what the core
    // can use (422).
    let value: Value = serde_json::from_str(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    super::model::check_checkpoint_file_shape(&value)?;
    let file = CheckpointFile::from_json(&body).map_err(|e| {
        ApiError::unprocessable(
            "bad-checkpoint",
            format!("not a usable checkpoint file: {e}"),
        )
    })?;
    let (rec, _handle) = state
        .engine
        .import(file, q.resume.unwrap_or(false))
        .await
        .map_err(ApiError::unprocessable_if_bad_request)?;
    let full = execution(&state, &rec.id).await?;
    Ok((StatusCode::CREATED, Json(full)).into_response())
}
