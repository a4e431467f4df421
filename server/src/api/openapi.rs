//! The routes and their OpenAPI 3.1 description, from one list: each handler's
//! `#[utoipa::path]` and the wire types of `model.rs` generate the document, and
//! utoipa-axum registers the same handlers with the router, so a route cannot be
//! served undocumented or documented unserved. Responses that the middleware
//! gives on every route (Host, Origin, token, content type, body size) are added
//! to each operation here, where that middleware is known.

use super::model::ErrorBody;
use super::{AppState, decisions, handlers, metrics, sse};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response as DocResponse, ResponseBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Doc, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ax",
        description = "Durable multi-agent LLM workflows: validate, store and run workflows, control executions, checkpoints and live events. Every error is `{\"error\": {\"code\", \"message\"}}` (docs/api.md). Without AX_TOKEN the server answers only on loopback names; with it, send `Authorization: Bearer <token>`."
    ),
    tags(
        (name = "server", description = "Health and metrics"),
        (name = "workflows", description = "Validate and store workflow files"),
        (name = "executions", description = "Runs, their control and their events"),
        (name = "checkpoints", description = "Restore points, export and import"),
    )
)]
struct ApiDoc;

/// The routes with their documentation (paths under `/api` are nested there).
fn routes() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .routes(routes!(document))
        .routes(routes!(handlers::validate))
        .routes(routes!(handlers::list_workflows, handlers::create_workflow))
        .routes(routes!(handlers::get_workflow, handlers::delete_workflow))
        .routes(routes!(handlers::stats))
        .routes(routes!(
            handlers::list_executions,
            handlers::start_execution
        ))
        .routes(routes!(handlers::get_execution))
        .routes(routes!(handlers::pause))
        .routes(routes!(handlers::resume))
        .routes(routes!(handlers::cancel))
        .routes(routes!(decisions::approve))
        .routes(routes!(decisions::reject))
        .routes(routes!(handlers::list_checkpoints))
        .routes(routes!(sse::events))
        .routes(routes!(handlers::import_checkpoint))
        .routes(routes!(handlers::restore_checkpoint))
        .routes(routes!(handlers::export_checkpoint));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::health))
        .routes(routes!(metrics::metrics))
        .nest("/api", api)
}

/// The router of `/healthz` and `/api/…` (without fallbacks and middleware).
pub fn router() -> Router<AppState> {
    routes().split_for_parts().0
}

/// The OpenAPI document of a server without (`token` false) or with a token, which
/// every operation then requires.
pub fn spec(token: bool) -> Doc {
    let mut doc = routes().split_for_parts().1;
    // After the routes are merged in: `#[openapi(modifiers)]` runs before that.
    MiddlewareResponses.modify(&mut doc);
    if token {
        doc.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
    doc
}

fn to_json(doc: Doc) -> String {
    doc.to_json().unwrap_or_else(|e| {
        format!("{{\"error\": {{\"code\": \"internal\", \"message\": \"{e}\"}}}}")
    })
}

static OPEN: LazyLock<String> = LazyLock::new(|| to_json(spec(false)));
static WITH_TOKEN: LazyLock<String> = LazyLock::new(|| to_json(spec(true)));

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "server",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API (with the token requirement when the server has one)", content_type = "application/json")))]
pub async fn document(State(state): State<AppState>) -> Response {
    let doc = if state.token.is_some() {
        WITH_TOKEN.as_str()
    } else {
        OPEN.as_str()
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc,
    )
        .into_response()
}

/// The answers the middleware can give on any route, and the token scheme.
struct MiddlewareResponses;

fn error_response(description: &str) -> RefOr<DocResponse> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                    .build(),
            )
            .build(),
    )
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (bool, &mut Operation)> {
    [
        (false, item.get.as_mut()),
        (false, item.head.as_mut()),
        (true, item.post.as_mut()),
        (true, item.put.as_mut()),
        (true, item.patch.as_mut()),
        (true, item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(write, op)| op.map(|op| (write, op)))
}

impl Modify for MiddlewareResponses {
    fn modify(&self, doc: &mut Doc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            ErrorBody::name().into_owned(),
            <ErrorBody as utoipa::PartialSchema>::schema(),
        );
        let mut schemas = Vec::new();
        <ErrorBody as ToSchema>::schemas(&mut schemas);
        components.schemas.extend(schemas);
        components.security_schemes.insert(
            "bearer".to_owned(),
            RefOr::T(SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer))),
        );
        let common = [
            (
                "400",
                "A malformed Host header or query string, or a body that is not what the route takes",
            ),
            (
                "401",
                "This server has a token (AX_TOKEN) and the request did not carry it",
            ),
            (
                "403",
                "`host-not-allowed`: the Host is not one of the server's names (DNS rebinding); \
                 `cross-origin`: a write from a page on another origin",
            ),
            ("500", "An internal error (the message says what failed)"),
        ];
        let too_large = [("413", "The body is larger than 8 MiB")];
        let writes = [(
            "415",
            "A Content-Type this route does not take: never `text/plain`, \
                 `application/x-www-form-urlencoded` or `multipart/form-data`; send \
                 `application/json` (or a workflow file as `application/yaml`)",
        )];
        for item in doc.paths.paths.values_mut() {
            for (write, op) in operations(item) {
                let extra: &[(&str, &str)] = if write { &writes } else { &[] };
                let body: &[(&str, &str)] = if op.request_body.is_some() {
                    &too_large
                } else {
                    &[]
                };
                for (status, description) in common.iter().chain(extra).chain(body) {
                    op.responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}
