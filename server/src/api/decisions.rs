//! Decisions on approval steps: `POST /api/executions/{id}/steps/{key}/approve`
//! and `…/reject`, with an optional JSON body (`data` for approvals only). A step
//! that is not waiting answers 409, data that does not satisfy the step's
//! `outputSchema` 422 (saying where).

use super::AppState;
use super::error::{ApiError, ApiPath, JsonText};
use super::handlers::execution;
use super::model::{ApproveBody, ErrorBody, Execution, RejectBody};
use crate::engine::Decision;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;

type ApiResult<T> = Result<T, ApiError>;

/// No body, `null` or the object `T`.
fn body<T: for<'de> Deserialize<'de> + Default>(text: Option<String>, shape: &str) -> ApiResult<T> {
    match text {
        None => Ok(T::default()),
        Some(t) => serde_json::from_str::<Option<T>>(&t)
            .map(Option::unwrap_or_default)
            .map_err(|e| {
                ApiError::bad_request(format!("the body must be {shape} or nothing: {e}"))
            }),
    }
}

async fn decide(
    state: &AppState,
    id: &str,
    key: &str,
    decision: Decision,
) -> ApiResult<Json<Execution>> {
    state.engine.decide(id, key, decision).await?;
    Ok(Json(execution(state, id).await?))
}

/// Approve a waiting approval step: it completes with
/// `{"approved": true, "comment", "data", "decidedAt"}` and the run goes on.
#[utoipa::path(post, path = "/executions/{id}/steps/{key}/approve", tag = "executions",
    params(("id" = String, Path, description = "The execution's id"),
        ("key" = String, Path, description = "The approval step's key")),
    request_body(content = Option<ApproveBody>, content_type = "application/json",
        description = "Optional: a comment, data for the step's outputSchema, who decided"),
    responses(
        (status = 200, description = "Decided; the execution after the decision", body = Execution),
        (status = 404, description = "No such execution or step", body = ErrorBody),
        (status = 409, description = "The step is not waiting for a decision", body = ErrorBody),
        (status = 422, description = "`data` does not satisfy the step's outputSchema", body = ErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    ApiPath((id, key)): ApiPath<(String, String)>,
    JsonText(text): JsonText,
) -> ApiResult<Json<Execution>> {
    let b: ApproveBody = body(
        text,
        r#"{"comment"?: text, "data"?: any JSON, "by"?: text}"#,
    )?;
    let decision = Decision {
        approve: true,
        comment: b.comment,
        data: b.data,
        by: b.by,
    };
    decide(&state, &id, &key, decision).await
}

/// Reject a waiting approval step: it fails with class `rejected` and the comment
/// in its message (`optional: true` lets the run go on).
#[utoipa::path(post, path = "/executions/{id}/steps/{key}/reject", tag = "executions",
    params(("id" = String, Path, description = "The execution's id"),
        ("key" = String, Path, description = "The approval step's key")),
    request_body(content = Option<RejectBody>, content_type = "application/json",
        description = "Optional: the reason, who decided"),
    responses(
        (status = 200, description = "Decided; the execution after the decision", body = Execution),
        (status = 404, description = "No such execution or step", body = ErrorBody),
        (status = 409, description = "The step is not waiting for a decision", body = ErrorBody)))]
pub async fn reject(
    State(state): State<AppState>,
    ApiPath((id, key)): ApiPath<(String, String)>,
    JsonText(text): JsonText,
) -> ApiResult<Json<Execution>> {
    let b: RejectBody = body(text, r#"{"comment"?: text, "by"?: text}"#)?;
    let decision = Decision {
        approve: false,
        comment: b.comment,
        data: None,
        by: b.by,
    };
    decide(&state, &id, &key, decision).await
}
