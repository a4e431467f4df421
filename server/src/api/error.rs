//! API errors: `{"error": {"code", "message"}}` with a fitting status, and a JSON
//! body extractor whose rejections use the same shape.

use crate::engine::EngineError;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub report: Option<Box<ax_core::Report>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            report: None,
        }
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", message)
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("{} {}: {}", self.status, self.code, self.message);
        }
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(r) = self.report {
            body["report"] = serde_json::to_value(*r).unwrap_or_default();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Invalid(report) => {
                let first = report
                    .errors
                    .first()
                    .map(|p| {
                        let at = match (p.line, p.column) {
                            (Some(l), Some(c)) => format!(" at {l}:{c}"),
                            _ => String::new(),
                        };
                        format!(": [{}]{at} {}", p.code, p.message)
                    })
                    .unwrap_or_default();
                ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    code: "invalid-workflow",
                    message: format!(
                        "the workflow is not valid ({} error(s)){first}",
                        report.errors.len()
                    ),
                    report: Some(report),
                }
            }
            EngineError::NotFound(m) => ApiError::not_found(m),
            EngineError::Conflict(m) => ApiError::conflict(m),
            EngineError::BadRequest(m) => ApiError::bad_request(m),
            EngineError::Internal(e) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("{e:#}"),
            ),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{e:#}"),
        )
    }
}

/// `Json<T>` whose rejections are API errors (400, 413, 415).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match &rejection {
                JsonRejection::BytesRejection(_)
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too-large",
                        format!(
                            "the request body is larger than {} bytes",
                            super::BODY_LIMIT
                        ),
                    )
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "bad-request",
                    "send the body as JSON with `Content-Type: application/json`",
                ),
                _ => ApiError::bad_request(format!(
                    "the request body is not what this route expects: {}",
                    rejection.body_text()
                )),
            }),
        }
    }
}
