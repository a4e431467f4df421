//! API errors: `{"error": {"code", "message"}}` with a fitting status, and a JSON
//! body extractor whose rejections use the same shape.

use super::model::{ErrorBody, ErrorDetail, FilenameQuery, Report, Source};
use crate::engine::EngineError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

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
    /// Well-formed per the documented schema, but not usable (422).
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    /// An engine error, where a "bad request" means a schema-valid body whose
    /// content does not fit (inputs a workflow does not declare, a checkpoint that
    /// does not fit its workflow): 422.
    pub fn unprocessable_if_bad_request(e: EngineError) -> ApiError {
        match e {
            EngineError::BadRequest(m) => ApiError::unprocessable("unprocessable", m),
            other => ApiError::from(other),
        }
    }
    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("{} {}: {}", self.status, self.code, self.message);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
            report: self.report.map(|r| Report::from(*r)),
        };
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
            EngineError::Unprocessable(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m)
            }
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

/// `Query<T>` whose rejections are API errors (400) that name the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!(
                    "the query string is not what this route takes ({}); see /api/openapi.json",
                    e.body_text()
                        .trim_start_matches("Failed to deserialize query string: ")
                ))
            })
    }
}

/// `Path<T>` whose rejections are API errors (400).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e: PathRejection| {
                ApiError::bad_request(format!("the URL path cannot be read: {}", e.body_text()))
            })
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
                    too_large()
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::unsupported_media_type(
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

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        format!(
            "the request body is larger than {} bytes",
            super::BODY_LIMIT
        ),
    )
}

/// Read a whole body within the size limit.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad_request(format!("cannot read the request body: {rejection}"))
        }
    })
}

/// A JSON body kept as text, for routes that parse it with their own errors; `None`
/// when the body is empty. A body that is not declared as JSON is refused (415).
pub struct JsonText(pub Option<String>);

impl<S: Send + Sync> FromRequest<S> for JsonText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = super::access::content_type(req.headers());
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonText(None));
        }
        if content_type != "application/json" && !content_type.ends_with("+json") {
            return Err(ApiError::unsupported_media_type(
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let text = String::from_utf8(bytes.to_vec()).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Ok(JsonText(Some(text)))
    }
}

/// The workflow text of `POST /api/workflows` and `POST /api/validate`, sent either
/// as `{"source", "filename"?}` (`application/json`) or as the file itself: a
/// YAML body (`application/yaml`, `application/x-yaml`, `text/yaml`) or a JSON
/// workflow (`application/json` whose object has no `source` field), with the file
/// name in `?filename=` when given. Not `text/plain`: any web page can post that.
pub struct SourceText {
    pub source: String,
    pub filename: Option<String>,
}

impl<S: Send + Sync> FromRequest<S> for SourceText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = super::access::content_type(req.headers());
        let filename = Query::<FilenameQuery>::try_from_uri(req.uri())
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "the query string is not what this route takes ({})",
                    e.body_text()
                ))
            })?
            .0
            .filename
            .filter(|f| !f.is_empty());
        let is_json = content_type == "application/json" || content_type.ends_with("+json");
        let is_text = matches!(
            content_type.as_str(),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
        );
        if !is_json && !is_text {
            let given = if content_type.is_empty() {
                "no Content-Type".to_owned()
            } else {
                format!("`Content-Type: {content_type}`")
            };
            return Err(ApiError::unsupported_media_type(format!(
                "{given}: send `{{\"source\": TEXT}}` as `application/json`, or the workflow \
                 file itself as `application/yaml` (or `application/json` for a JSON workflow)"
            )));
        }
        let bytes = body_bytes(req, state).await?;
        let text = String::from_utf8(bytes.to_vec()).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        if is_json {
            // `{"source": …}` is the envelope; any other object is a workflow.
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                ApiError::bad_request(format!(
                    "the request body is not valid JSON: {e} (send YAML as `application/yaml`)"
                ))
            })?;
            if value.get("source").is_some() {
                let body: Source = serde_json::from_value(value).map_err(|e| {
                    ApiError::bad_request(format!(
                        "the request body is not what this route expects: {e}"
                    ))
                })?;
                return Ok(SourceText {
                    source: body.source,
                    filename: body.filename.or(filename),
                });
            }
            if !value.is_object() {
                return Err(ApiError::bad_request(
                    "send `{\"source\": TEXT, \"filename\"?: NAME}` or a JSON workflow object",
                ));
            }
            return Ok(SourceText {
                source: text,
                filename,
            });
        }
        Ok(SourceText {
            source: text,
            filename,
        })
    }
}

/// Errors that axum and tower-http answer themselves (405 with its `Allow` header,
/// a body-limit 413, a ServeDir failure) come as plain text or empty bodies; give
/// them the API's JSON shape, keeping status and headers.
pub async fn json_errors(req: Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let content_type = super::access::content_type(resp.headers());
    if !(content_type.is_empty() || content_type == "text/plain") {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let allow = parts
        .headers
        .get(axum::http::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            format!(
                "{path} does not take {method}{}",
                allow.map(|a| format!(": use {a}")).unwrap_or_default()
            ),
        ),
        StatusCode::NOT_FOUND => ("not-found", format!("nothing at {path}")),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too-large",
            format!(
                "the request body is larger than {} bytes",
                super::BODY_LIMIT
            ),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", text.clone()),
        s if s.is_server_error() => ("internal", text.clone()),
        _ => ("bad-request", text.clone()),
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        message
    };
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
        },
        report: None,
    };
    (parts, Json(body)).into_response()
}
