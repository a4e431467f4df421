//! The OpenAPI document is generated from the handlers and exact: every route is in
//! it, every error any layer gives (extractor rejections, 405, 413, the security
//! checks) is JSON of the documented `Error` shape with a documented status, and
//! docs/api.md names every operation. schemathesis checks the rest against a live
//! server (`cargo xtask test schemathesis`).

use super::security::{Server, serve};
use ax_server::api::openapi_spec;
use reqwest::Method;
use serde_json::{Value, json};

fn doc() -> Value {
    serde_json::to_value(openapi_spec(false)).expect("the document serializes")
}

/// The statuses an operation documents.
fn documented(doc: &Value, method: &Method, path: &str) -> Vec<String> {
    doc["paths"][path][method.as_str().to_lowercase()]["responses"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_served_document_is_the_generated_one() {
    let s = serve(None, &[], &[]).await;
    let (st, headers, served) = Server::send(s.req(Method::GET, "/api/openapi.json")).await;
    assert_eq!(st, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(served, doc());
    assert_eq!(served["openapi"], "3.1.0");
    assert!(served.get("security").is_none(), "no token, no requirement");
    let s = serve(Some("tok"), &[], &[]).await;
    let (st, _, served) =
        Server::send(s.req(Method::GET, "/api/openapi.json").bearer_auth("tok")).await;
    assert_eq!(st, 200);
    assert_eq!(served["security"], json!([{"bearer": []}]));
    assert_eq!(
        served["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// A 204 has no body and is documented without one; the wire types are the
/// documented ones.
#[test]
fn the_document_describes_what_handlers_send() {
    let doc = doc();
    let delete = &doc["paths"]["/api/workflows/{id}"]["delete"]["responses"]["204"];
    assert!(
        delete.is_object() && delete.get("content").is_none(),
        "{delete}"
    );
    for (path, method, status, schema) in [
        ("/api/workflows", "post", "201", "Workflow"),
        ("/api/executions", "post", "201", "Execution"),
        ("/api/validate", "post", "200", "Report"),
        (
            "/api/checkpoints/{id}/export",
            "get",
            "200",
            "CheckpointFile",
        ),
        ("/api/workflows", "post", "415", "Error"),
        ("/api/workflows", "get", "403", "Error"),
    ] {
        let r = &doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
            ["$ref"];
        assert_eq!(
            r,
            &json!(format!("#/components/schemas/{schema}")),
            "{method} {path} {status}"
        );
    }
    let states = &doc["components"]["schemas"]["ExecutionSummary"]["properties"]["state"]["enum"];
    assert_eq!(
        states.as_array().map(Vec::len),
        Some(ax_core::ExecutionState::ALL.len()),
        "{states}"
    );
    // What a workflow body may be, exactly: the envelope, or an object without `source`.
    let body = &doc["paths"]["/api/workflows"]["post"]["requestBody"]["content"];
    assert!(body.get("text/plain").is_none(), "{body}");
    assert!(body.get("application/yaml").is_some(), "{body}");
    assert_eq!(
        doc["components"]["schemas"]["WorkflowObject"]["not"],
        json!({"required": ["source"]})
    );
}

/// A request and the error it must get: method, URL, the path as documented, a
/// body with its content type, extra headers, status, error code.
type Case<'a> = (
    Method,
    &'a str,
    &'a str,
    Option<(&'a str, String)>,
    Vec<(&'a str, &'a str)>,
    u16,
    &'a str,
);

/// What axum and the extractors would answer as text/plain is JSON, and each status
/// is one the operation documents.
#[tokio::test]
async fn every_rejection_is_json_with_a_documented_status() {
    let s = serve(None, &[], &[]).await;
    let doc = doc();
    let big = "x".repeat(9 * 1024 * 1024);
    let cases: Vec<Case> = vec![
        (Method::POST, "/api/workflows", "/api/workflows", Some(("application/json", "{bad".into())), vec![], 400, "bad-request"),
        (Method::POST, "/api/executions", "/api/executions", Some(("", "{}".into())), vec![], 415, "unsupported-media-type"),
        (Method::POST, "/api/executions", "/api/executions", Some(("application/json", "{\"workflowId\": 5}".into())), vec![], 400, "bad-request"),
        (Method::POST, "/api/executions", "/api/executions", Some(("application/json", "{\"workflowId\": \"a\", \"source\": \"b\"}".into())), vec![], 400, "bad-request"),
        (Method::POST, "/api/executions", "/api/executions", Some(("application/json", "{\"workflowId\": \"nope\"}".into())), vec![], 404, "not-found"),
        (Method::POST, "/api/executions", "/api/executions", Some(("application/json", json!({"source": "name: x\nsteps: []\n"}).to_string())), vec![], 422, "invalid-workflow"),
        (Method::GET, "/api/workflows?limit=abc", "/api/workflows", None, vec![], 400, "bad-request"),
        (Method::GET, "/api/workflows?limit=0", "/api/workflows", None, vec![], 400, "bad-request"),
        (Method::GET, "/api/executions?limit=1001", "/api/executions", None, vec![], 400, "bad-request"),
        (Method::GET, "/api/executions?state=bogus", "/api/executions", None, vec![], 400, "bad-request"),
        (Method::GET, "/api/executions/x/events?after=-1", "/api/executions/{id}/events", None, vec![], 400, "bad-request"),
        (Method::GET, "/api/executions/x/events", "/api/executions/{id}/events", None, vec![("last-event-id", "soon")], 400, "bad-request"),
        (Method::GET, "/api/workflows/%FF", "/api/workflows/{id}", None, vec![], 400, "bad-request"),
        (Method::GET, "/api/workflows/nope", "/api/workflows/{id}", None, vec![], 404, "not-found"),
        (Method::POST, "/api/validate", "/api/validate", Some(("application/json", json!({"source": big}).to_string())), vec![], 413, "too-large"),
        (Method::POST, "/api/checkpoints/import", "/api/checkpoints/import", Some(("application/json", "{\"format\": \"nope\"}".into())), vec![], 400, "bad-request"),
        (Method::POST, "/api/checkpoints/import?resume=maybe", "/api/checkpoints/import", Some(("application/json", "{}".into())), vec![], 400, "bad-request"),
        (Method::POST, "/api/checkpoints/import", "/api/checkpoints/import", Some(("application/json", json!({"format": "ax-checkpoint", "version": 9, "workflow": {"name": "x", "source": "y"}, "checkpoint": {}, "outputs": {}}).to_string())), vec![], 422, "bad-checkpoint"),
        (Method::POST, "/api/executions/x/pause", "/api/executions/{id}/pause", Some(("application/json", "{\"now\": 1}".into())), vec![], 400, "bad-request"),
        (Method::POST, "/api/executions/x/pause", "/api/executions/{id}/pause", Some(("text/plain", "".into())), vec![], 415, "unsupported-media-type"),
        (Method::POST, "/api/workflows", "/api/workflows", Some(("application/json", "{}".into())), vec![("origin", "http://attacker.example")], 403, "cross-origin"),
        (Method::GET, "/api/workflows", "/api/workflows", None, vec![("host", "attacker.example")], 403, "host-not-allowed"),
    ];
    for (method, url, path, body, headers, want, code) in cases {
        let mut rb = s.req(method.clone(), url);
        if let Some((ct, text)) = body {
            if !ct.is_empty() {
                rb = rb.header("content-type", ct);
            }
            rb = rb.body(text);
        }
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let (st, h, r) = Server::send(rb).await;
        let what = format!("{method} {url}");
        assert_eq!(st, want, "{what}: {r}");
        assert_eq!(h["content-type"], "application/json", "{what}");
        assert_eq!(r["error"]["code"], code, "{what}: {r}");
        assert!(
            r["error"]["message"].as_str().is_some_and(|m| m.len() > 10),
            "{what}: {r}"
        );
        assert!(
            documented(&doc, &method, path).contains(&want.to_string()),
            "{what}: {want} is not documented for {path}"
        );
    }
    // Routing's own answers: 405 keeps its Allow header, unknown API paths are 404.
    for (method, url, allow) in [
        (Method::PATCH, "/api/workflows", Some("GET,HEAD,POST")),
        (Method::PUT, "/api/executions/x/pause", Some("POST")),
        (Method::GET, "/api/nope", None),
        (Method::DELETE, "/api", None),
    ] {
        let (st, h, r) = Server::send(s.req(method.clone(), url)).await;
        let want = if allow.is_some() { 405 } else { 404 };
        assert_eq!(st, want, "{method} {url}: {r}");
        assert_eq!(h["content-type"], "application/json", "{method} {url}");
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        if let Some(a) = allow {
            let got = h["allow"].to_str().unwrap_or("").replace(' ', "");
            assert_eq!(got, a, "{method} {url}");
            assert_eq!(r["error"]["code"], "method-not-allowed");
        }
    }
}

/// docs/api.md names every operation of the document.
#[test]
fn the_api_guide_names_every_operation() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md");
    let doc = doc();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("operations").keys() {
            let line = format!("{} {path}", method.to_uppercase());
            assert!(
                guide.contains(&line),
                "docs/api.md does not mention `{line}`"
            );
        }
    }
}
