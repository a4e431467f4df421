//! Every route over real HTTP on 127.0.0.1.

use super::common::{Backend, engine};
use ax_server::api::{Access, AppState, app};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

struct Server {
    base: String,
    client: reqwest::Client,
    _t: super::common::TestEngine,
}

async fn serve(token: Option<&str>) -> Server {
    serve_on(Backend::Sqlite, token).await
}

async fn serve_on(backend: Backend, token: Option<&str>) -> Server {
    let t = engine(backend).await;
    let state = AppState {
        engine: t.engine.clone(),
        token: token.map(Arc::from),
        web_dir: None,
        access: Arc::new(Access::local("127.0.0.1".parse().expect("ip"))),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app(state)).await;
    });
    Server {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        _t: t,
    }
}

const WF: &str = "name: api-test\nsteps:\n  - {key: a, agent: backend, prompt: \"a [sleep:50]\"}\n  - {key: b, agent: backend, prompt: \"b {{a.result}}\", dependencies: [a]}\n";

impl Server {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    async fn wait_state(&self, id: &str, want: &str) -> Value {
        for _ in 0..300 {
            let (_, e) = self.get(&format!("/api/executions/{id}")).await;
            if e["state"] == want {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, e) = self.get(&format!("/api/executions/{id}")).await;
        panic!("execution {id} never became {want}: {e}");
    }
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn health_validate_and_workflows(b: Backend) {
    let s = serve_on(b, None).await;
    let (st, h) = s.get("/healthz").await;
    assert_eq!((st, h["status"].as_str()), (200, Some("ok")));
    let (st, r) = s.post("/api/validate", json!({"source": WF})).await;
    assert_eq!(st, 200);
    assert_eq!(r["valid"], true);
    assert_eq!(r["order"], json!(["a", "b"]));
    let (st, r) = s.post("/api/validate", json!({"source": "name: x\nsteps:\n  - {key: a, agent: b, prompt: c, dependencies: [a]}\n"})).await;
    assert_eq!(st, 200);
    assert_eq!(r["valid"], false);
    assert_eq!(r["errors"][0]["code"], "self-dependency");
    assert_eq!(r["errors"][0]["line"], 3);

    let (st, w) = s
        .post(
            "/api/workflows",
            json!({"source": WF, "filename": "t.yaml"}),
        )
        .await;
    assert_eq!(st, 201, "{w}");
    let wid = w["id"].as_str().expect("id").to_owned();
    assert_eq!(w["stepCount"], 2);
    let (st, bad) = s
        .post("/api/workflows", json!({"source": "name: x\nsteps: []\n"}))
        .await;
    assert_eq!(st, 422);
    assert_error(&bad, "invalid-workflow");
    assert_eq!(bad["report"]["errors"][0]["code"], "empty-workflow");
    let (_, list) = s.get("/api/workflows").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert!(list[0].get("source").is_none());
    let (st, one) = s.get(&format!("/api/workflows/{wid}")).await;
    assert_eq!(st, 200);
    assert_eq!(one["source"], WF);
    let (st, nf) = s.get("/api/workflows/nope").await;
    assert_eq!(st, 404);
    assert_error(&nf, "not-found");
    let r = s
        .client
        .delete(format!("{}/api/workflows/{wid}", s.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 204);
    let (st, _) = s.get(&format!("/api/workflows/{wid}")).await;
    assert_eq!(st, 404);
}

/// The workflow file itself as the body: YAML by content type, a JSON workflow
/// object, the file name from `?filename=`; clear errors for the rest.
async fn workflow_files_as_request_bodies(b: Backend) {
    let s = serve_on(b, None).await;
    let raw = |path: &str, content_type: &str, body: &str| {
        let req = s
            .client
            .post(format!("{}{path}", s.base))
            .header("content-type", content_type)
            .body(body.to_owned());
        async move {
            let r = req.send().await.expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, w) = raw(
        "/api/workflows?filename=my%20flow.yaml",
        "application/yaml",
        WF,
    )
    .await;
    assert_eq!(st, 201, "{w}");
    assert_eq!(
        (w["stepCount"].as_u64(), w["source"].as_str()),
        (Some(2), Some(WF))
    );
    assert_eq!(w["filename"], "my flow.yaml", "{w}");
    let (st, r) = raw(
        "/api/validate",
        "text/yaml; charset=utf-8",
        "name: x\nsteps:\n  - {key: a, agent: b, prompt: c, dependencies: [a]}\n",
    )
    .await;
    assert_eq!(
        (st, r["errors"][0]["code"].as_str()),
        (200, Some("self-dependency")),
        "{r}"
    );
    assert_eq!(r["errors"][0]["line"], 3);
    let json_wf = r#"{"name": "j", "steps": [{"key": "a", "agent": "b", "prompt": "hi"}]}"#;
    let (st, w) = raw("/api/workflows", "application/json", json_wf).await;
    assert_eq!(
        (st, w["format"].as_str(), w["name"].as_str()),
        (201, Some("json"), Some("j")),
        "{w}"
    );
    // A JSON workflow with a problem reports it with its line.
    let (st, r) = raw(
        "/api/validate",
        "application/json",
        "{\n  \"name\": \"j\",\n  \"steps\": []\n}",
    )
    .await;
    assert_eq!(
        (
            st,
            r["errors"][0]["code"].as_str(),
            r["errors"][0]["line"].as_u64()
        ),
        (200, Some("empty-workflow"), Some(3)),
        "{r}"
    );
    for (content_type, body, status) in [
        ("application/x-www-form-urlencoded", WF, 415),
        ("application/json", "[1]", 400),
        ("application/json", r#"{"source": 3}"#, 400),
        ("application/json", r#"{"source": "x", "extra": 1}"#, 400),
        ("application/json", "{bad", 400),
        ("application/yaml", "\u{0}", 422),
    ] {
        let (st, r) = raw("/api/workflows", content_type, body).await;
        assert_eq!(st, status, "{content_type} {body}: {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{r}"
        );
    }
    let (st, r) = raw("/api/workflows", "application/yaml", "").await;
    assert_eq!(st, 422, "{r}");
    let (_, list) = s.get("/api/workflows").await;
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
}

async fn executions_control_checkpoints_and_import(b: Backend) {
    let s = serve_on(b, None).await;
    let (st, e) = s.post("/api/executions", json!({"source": WF})).await;
    assert_eq!(st, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_owned();
    let done = s.wait_state(&id, "completed").await;
    assert_eq!(done["steps"][1]["output"], "answer(b answer(a [sleep:50]))");
    assert_eq!(done["steps"][0]["tokensIn"], 11);
    // Finished runs refuse control with 409.
    let (st, c) = s
        .post(&format!("/api/executions/{id}/pause"), json!({}))
        .await;
    assert_eq!(st, 409);
    assert_error(&c, "conflict");
    let (_, list) = s.get("/api/executions?state=completed").await;
    assert_eq!(list[0]["id"], id.as_str());
    let (st, bad) = s.get("/api/executions?state=bogus").await;
    assert_eq!(st, 400);
    assert_error(&bad, "bad-request");
    // Checkpoints: list, export, import, restore.
    let (_, cps) = s.get(&format!("/api/executions/{id}/checkpoints")).await;
    let cps = cps.as_array().cloned().unwrap_or_default();
    assert_eq!(cps.len(), 3);
    let first = cps.last().expect("oldest")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = s
        .client
        .get(format!("{}/api/checkpoints/{first}/export", s.base))
        .send()
        .await
        .expect("export");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap_or("")
            .contains("attachment")
    );
    let file: Value = r.json().await.expect("json");
    assert_eq!(file["format"], "ax-checkpoint");
    let r = s
        .client
        .post(format!("{}/api/checkpoints/import?resume=true", s.base))
        .json(&file)
        .send()
        .await
        .expect("import");
    assert_eq!(r.status().as_u16(), 201);
    let imported: Value = r.json().await.expect("json");
    let iid = imported["id"].as_str().expect("id").to_owned();
    assert_ne!(iid, id);
    s.wait_state(&iid, "completed").await;
    let latest = cps[0]["id"].as_str().expect("id").to_owned();
    let (st, _) = s
        .post(&format!("/api/checkpoints/{latest}/restore"), json!({}))
        .await;
    assert_eq!(st, 202);
    s.wait_state(&id, "completed").await;
    let r = s
        .client
        .post(format!("{}/api/checkpoints/import", s.base))
        .header("content-type", "application/json")
        .body("{\"format\": \"nope\"}")
        .send()
        .await
        .expect("import");
    assert_eq!(r.status().as_u16(), 400);
}

async fn pause_resume_cancel_over_http(b: Backend) {
    let s = serve_on(b, None).await;
    let wf = "name: slow\nconfig: {parallelism: 1}\nsteps:\n  - {key: a, agent: backend, prompt: \"a [sleep:300]\"}\n  - {key: b, agent: backend, prompt: \"b [sleep:300]\", dependencies: [a]}\n";
    let (_, e) = s.post("/api/executions", json!({"source": wf})).await;
    let id = e["id"].as_str().expect("id").to_owned();
    let (st, p) = s
        .post(&format!("/api/executions/{id}/pause"), json!({"now": true}))
        .await;
    assert_eq!(st, 202, "{p}");
    s.wait_state(&id, "paused").await;
    let (st, _) = s
        .post(&format!("/api/executions/{id}/resume"), json!({}))
        .await;
    assert_eq!(st, 202);
    let (st, _) = s
        .post(&format!("/api/executions/{id}/cancel"), json!({}))
        .await;
    assert_eq!(st, 202);
    let e = s.wait_state(&id, "cancelled").await;
    assert_eq!(e["steps"][1]["state"], "cancelled");
    let (st, _) = s
        .post(&format!("/api/executions/{id}/resume"), json!({}))
        .await;
    assert_eq!(st, 409);
}

async fn events_as_json_and_server_sent_events_in_order(b: Backend) {
    let s = serve_on(b, None).await;
    let (_, e) = s.post("/api/executions", json!({"source": WF})).await;
    let id = e["id"].as_str().expect("id").to_owned();
    // The stream replays from the start and ends after the final state.
    let mut r = s
        .client
        .get(format!("{}/api/executions/{id}/events", s.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sse");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let read = async {
        while let Ok(Some(chunk)) = r.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the stream ends");
    let ids: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert!(ids.len() >= 8, "{text}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
    let datas: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let last = datas
        .iter()
        .rev()
        .find(|d| d["type"] == "execution")
        .expect("execution events");
    assert_eq!(last["state"].as_str(), Some("completed"));
    // Nothing but the final checkpoint follows the final state.
    let after: Vec<&Value> = datas
        .iter()
        .skip_while(|d| !(d["type"] == "execution" && d["state"] == "completed"))
        .skip(1)
        .collect();
    assert!(after.iter().all(|d| d["type"] == "checkpoint"), "{after:?}");
    // Resuming after an id replays only what came later.
    let (_, json_events) = s
        .get(&format!("/api/executions/{id}/events?after={}", ids[2]))
        .await;
    assert_eq!(json_events.as_array().map(Vec::len), Some(ids.len() - 3));
}

#[tokio::test]
async fn tokens_body_limits_and_unknown_routes() {
    let s = serve(Some("s3cret-token")).await;
    let r = s
        .client
        .get(format!("{}/api/workflows", s.base))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.expect("json");
    assert_error(&body, "unauthorized");
    let r = s
        .client
        .get(format!("{}/api/workflows", s.base))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 200);
    let r = s
        .client
        .get(format!("{}/healthz?token=s3cret-token", s.base))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("set-cookie").is_some());
    let r = s
        .client
        .get(format!("{}/api/workflows", s.base))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 401);
    // 9 MiB body.
    let big = json!({"source": "x".repeat(9 * 1024 * 1024)});
    let r = s
        .client
        .post(format!("{}/api/validate", s.base))
        .bearer_auth("s3cret-token")
        .json(&big)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_error(&body, "too-large");
    let r = s
        .client
        .get(format!("{}/api/nope", s.base))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 404);
    let r = s
        .client
        .post(format!("{}/api/validate", s.base))
        .bearer_auth("s3cret-token")
        .body("not json")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let s = serve(None).await;
    let (st, doc) = s.get("/api/openapi.json").await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let routes = [
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("get", "/api/openapi.json"),
        ("post", "/api/validate"),
        ("get", "/api/workflows"),
        ("post", "/api/workflows"),
        ("get", "/api/workflows/{id}"),
        ("delete", "/api/workflows/{id}"),
        ("get", "/api/stats"),
        ("get", "/api/executions"),
        ("post", "/api/executions"),
        ("get", "/api/executions/{id}"),
        ("post", "/api/executions/{id}/pause"),
        ("post", "/api/executions/{id}/resume"),
        ("post", "/api/executions/{id}/cancel"),
        ("post", "/api/executions/{id}/steps/{key}/approve"),
        ("post", "/api/executions/{id}/steps/{key}/reject"),
        ("get", "/api/executions/{id}/checkpoints"),
        ("get", "/api/executions/{id}/events"),
        ("post", "/api/checkpoints/{id}/restore"),
        ("get", "/api/checkpoints/{id}/export"),
        ("post", "/api/checkpoints/import"),
    ];
    assert_eq!(
        paths.len(),
        routes
            .iter()
            .map(|r| r.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    for (method, path) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
        // And the router serves it (anything but 404/405 from routing).
        let url = format!("{}{}", s.base, path.replace("{id}", "nope"));
        let r = s
            .client
            .request(method.to_uppercase().parse().expect("method"), url)
            .json(&json!({}))
            .send()
            .await
            .expect("req");
        if r.status().as_u16() == 404 {
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_ne!(
                body["error"]["message"], "no such API route; see /api/openapi.json",
                "{method} {path} is not routed"
            );
        } else {
            assert_ne!(r.status().as_u16(), 405, "{method} {path}");
        }
    }
}

/// `GET /api/stats`: per workflow name, runs by state and the rest (the
/// figures themselves are checked against known runs in `stats.rs`).
async fn stats_over_http(b: Backend) {
    let s = serve_on(b, None).await;
    let (st, v) = s.get("/api/stats").await;
    assert_eq!((st, v), (200, json!({"workflows": []})));
    let (_, e) = s.post("/api/executions", json!({"source": WF})).await;
    let id = e["id"].as_str().expect("id").to_owned();
    s.wait_state(&id, "completed").await;
    let (st, v) = s.get("/api/stats?workflow=api-test").await;
    assert_eq!(st, 200, "{v}");
    let w = &v["workflows"][0];
    assert_eq!(w["name"], "api-test");
    assert_eq!(w["runs"], 1);
    assert_eq!(w["byState"], json!({"completed": 1}));
    assert_eq!(w["active"], 0);
    assert_eq!(w["successRate"], 100.0);
    assert_eq!(w["p50DurationMs"], w["p95DurationMs"]);
    assert!(w["tokensIn"].as_u64().is_some_and(|n| n > 0), "{w}");
    assert!(w["costUsd"].is_number());
    let (st, v) = s.get("/api/stats?workflow=nope").await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["error"]["code"], "not-found");
}

/// A budget given at start pauses the run before the attempt that would pass
/// it; resume with a raised budget finishes it; bad budgets are 400s.
async fn budgets_over_http(b: Backend) {
    let s = serve_on(b, None).await;
    let wf = "name: b\nsteps:\n  - {key: a, agent: tester, prompt: aa, maxTokens: 10}\n  - {key: b, agent: tester, prompt: bb, maxTokens: 10, dependencies: [a]}\n";
    let (st, e) = s
        .post(
            "/api/executions",
            json!({"source": wf, "budget": {"tokens": 20}}),
        )
        .await;
    assert_eq!(st, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_owned();
    let e = s.wait_state(&id, "paused").await;
    assert_eq!(e["budget"]["tokens"], 20);
    assert_eq!(e["spent"]["tokens"], 18);
    assert!(
        e["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("budget: the next attempt of `b`"),
        "{e}"
    );
    let (st, body) = s
        .post(
            &format!("/api/executions/{id}/resume"),
            json!({"budget": {"usd": -1}}),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = s
        .post(
            &format!("/api/executions/{id}/resume"),
            json!({"budget": {"euros": 3}}),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, _) = s
        .post(
            &format!("/api/executions/{id}/resume"),
            // JSON Schema's `integer` includes 1000.0, and the API publishes that schema.
            json!({"budget": {"tokens": 1000.0}}),
        )
        .await;
    assert_eq!(st, 202);
    let e = s.wait_state(&id, "completed").await;
    assert_eq!(e["spent"]["tokens"], 36);
    assert_eq!(e["budget"]["tokens"], 1000);
    let (st, body) = s
        .post(
            "/api/executions",
            json!({"source": wf, "budget": {"usd": -0.5}}),
        )
        .await;
    assert_eq!(st, 400, "{body}");
}

crate::on_both_backends!(
    stats_over_http,
    budgets_over_http,
    health_validate_and_workflows,
    workflow_files_as_request_bodies,
    executions_control_checkpoints_and_import,
    pause_resume_cancel_over_http,
    events_as_json_and_server_sent_events_in_order,
);
