//! What a web page may do to a server on 127.0.0.1 (docs/api.md, "Security"), over
//! real HTTP: forged Host headers (DNS rebinding), writes from other origins
//! (CSRF), the content types a form can send, CORS only for named origins, and
//! checkpoint imports that do not spend provider keys unasked.

use super::common::{Backend, TestEngine, engine};
use ax_server::api::{Access, AppState, app};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct Server {
    pub base: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub t: TestEngine,
}

pub(super) async fn serve(token: Option<&str>, hosts: &[&str], cors: &[&str]) -> Server {
    let t = engine(Backend::Sqlite).await;
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let access =
        Access::new("127.0.0.1".parse().expect("ip"), &own(hosts), &own(cors)).expect("access");
    let state = AppState {
        engine: t.engine.clone(),
        token: token.map(Arc::from),
        web_dir: None,
        access: Arc::new(access),
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
        port: addr.port(),
        client: reqwest::Client::new(),
        t,
    }
}

const WF: &str = "name: sec\nsteps:\n  - {key: a, agent: backend, prompt: \"a\"}\n";

impl Server {
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub async fn send(rb: RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The stored workflows and executions, read as a client on the server's own name.
    async fn counts(&self) -> (usize, usize) {
        let n = |v: Value| v.as_array().map_or(usize::MAX, Vec::len);
        let (_, _, w) = Server::send(self.req(Method::GET, "/api/workflows")).await;
        let (_, _, e) = Server::send(self.req(Method::GET, "/api/executions")).await;
        (n(w), n(e))
    }
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str, hint: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains(hint), "`{hint}` not in: {msg}");
}

/// A DNS-rebinding page reaches the server under the attacker's name: every route
/// refuses it, reads included, with a JSON error that says how to allow a name.
#[tokio::test]
async fn foreign_host_names_are_refused_on_every_route() {
    let s = serve(None, &["ax.example.test", ".corp.test"], &[]).await;
    let (st, _, w) = Server::send(
        s.req(Method::POST, "/api/workflows")
            .json(&json!({"source": WF})),
    )
    .await;
    assert_eq!(st, 201, "{w}");
    let wid = w["id"].as_str().expect("id").to_owned();
    let evil = format!("attacker.example:{}", s.port);
    let routes = [
        (Method::GET, "/".to_owned()),
        (Method::GET, "/healthz".to_owned()),
        (Method::GET, "/api/openapi.json".to_owned()),
        (Method::GET, "/api/workflows".to_owned()),
        (Method::GET, format!("/api/workflows/{wid}")),
        (Method::GET, "/api/executions".to_owned()),
        (Method::GET, "/api/executions/x/events".to_owned()),
        (Method::POST, "/api/workflows".to_owned()),
        (Method::DELETE, format!("/api/workflows/{wid}")),
        (Method::OPTIONS, "/api/workflows".to_owned()),
    ];
    for (method, path) in &routes {
        for host in [
            evil.as_str(),
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "10.1.2.3:80",
            "evilcorp.test",
        ] {
            let (st, headers, body) = Server::send(
                s.req(method.clone(), path)
                    .header("host", host)
                    .header("accept", "text/event-stream")
                    .json(&json!({"source": WF})),
            )
            .await;
            assert_error(st, &body, 403, "host-not-allowed", "--allowed-host");
            assert!(
                headers["content-type"]
                    .to_str()
                    .unwrap_or("")
                    .starts_with("application/json"),
                "{method} {path} Host {host}: {headers:?}"
            );
        }
    }
    // Nothing leaked, nothing changed.
    assert_eq!(s.counts().await, (1, 0));
    // The server's own names, in any spelling browsers send, and the allowed ones.
    for host in [
        format!("127.0.0.1:{}", s.port),
        format!("localhost:{}", s.port),
        format!("LOCALHOST.:{}", s.port),
        format!("[::1]:{}", s.port),
        "localhost".to_owned(),
        "app.localhost:9999".to_owned(),
        "ax.example.test".to_owned(),
        "team.corp.test:443".to_owned(),
    ] {
        let (st, _, body) =
            Server::send(s.req(Method::GET, "/api/workflows").header("host", &host)).await;
        assert_eq!(st, 200, "Host {host}: {body}");
    }
    let (st, _, body) = Server::send(s.req(Method::GET, "/").header("host", "bad host!")).await;
    assert_error(st, &body, 400, "bad-request", "Host");
}

/// The measurement: a text/plain POST from another origin stored a workflow.
#[tokio::test]
async fn writes_from_other_origins_are_refused() {
    let s = serve(None, &[], &[]).await;
    let own = format!("http://127.0.0.1:{}", s.port);
    // Cross-origin: refused whatever the content type, and body-less writes too.
    for (path, ct, body) in [
        ("/api/workflows", "text/plain", WF.to_owned()),
        (
            "/api/workflows",
            "application/json",
            json!({"source": WF}).to_string(),
        ),
        ("/api/workflows", "application/yaml", WF.to_owned()),
        (
            "/api/executions",
            "application/json",
            json!({"source": WF}).to_string(),
        ),
        (
            "/api/executions",
            "application/x-www-form-urlencoded",
            "source=x".to_owned(),
        ),
        (
            "/api/checkpoints/import?resume=true",
            "text/plain",
            "{}".to_owned(),
        ),
        ("/api/executions/x/cancel", "", String::new()),
    ] {
        for origin in [
            "http://attacker.example",
            "null",
            "http://localhost:3000",
            "https://127.0.0.1:1",
        ] {
            let mut rb = s
                .req(Method::POST, path)
                .header("origin", origin)
                .body(body.clone());
            if !ct.is_empty() {
                rb = rb.header("content-type", ct);
            }
            let (st, _, r) = Server::send(rb).await;
            assert_error(st, &r, 403, "cross-origin", "--cors-origin");
        }
    }
    // A browser that sends no Origin but says another site sent the request.
    for site in ["cross-site", "same-site"] {
        let (st, _, r) = Server::send(
            s.req(Method::POST, "/api/workflows")
                .header("sec-fetch-site", site)
                .json(&json!({"source": WF})),
        )
        .await;
        assert_error(st, &r, 403, "cross-origin", "Sec-Fetch-Site");
    }
    let (st, _, r) = Server::send(
        s.req(Method::DELETE, "/api/workflows/x")
            .header("origin", "http://attacker.example"),
    )
    .await;
    assert_error(st, &r, 403, "cross-origin", "DELETE");
    // What a form or a no-cors fetch can send is refused even without Origin.
    for ct in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (st, _, r) = Server::send(
            s.req(Method::POST, "/api/workflows")
                .header("content-type", ct)
                .body(WF),
        )
        .await;
        assert_error(st, &r, 415, "unsupported-media-type", "application/json");
    }
    assert_eq!(s.counts().await, (0, 0), "nothing was stored");
    // The server's own pages (same origin) and API clients without Origin still write.
    let (st, _, w) = Server::send(
        s.req(Method::POST, "/api/workflows")
            .header("origin", &own)
            .header("sec-fetch-site", "same-origin")
            .json(&json!({"source": WF})),
    )
    .await;
    assert_eq!(st, 201, "{w}");
    let (st, _, w) = Server::send(
        s.req(Method::POST, "/api/workflows")
            .header("content-type", "application/yaml")
            .body(WF),
    )
    .await;
    assert_eq!(st, 201, "{w}");
    let (st, _, e) = Server::send(
        s.req(Method::POST, "/api/executions")
            .header("origin", format!("http://localhost:{}", s.port))
            .header("host", format!("localhost:{}", s.port))
            .json(&json!({"workflowId": w["id"]})),
    )
    .await;
    assert_eq!(st, 201, "{e}");
    // A user typing or bookmarking the URL (Sec-Fetch-Site: none) is not another site.
    let (st, _, r) = Server::send(
        s.req(Method::POST, "/api/validate")
            .header("sec-fetch-site", "none")
            .json(&json!({"source": WF})),
    )
    .await;
    assert_eq!(st, 200, "{r}");
}

/// No CORS headers by default, so other origins cannot read answers either.
#[tokio::test]
async fn no_cors_headers_unless_origins_are_named() {
    let s = serve(None, &[], &[]).await;
    let (_, headers, _) = Server::send(
        s.req(Method::GET, "/api/workflows")
            .header("origin", "http://attacker.example"),
    )
    .await;
    assert!(
        !headers
            .keys()
            .any(|k| k.as_str().starts_with("access-control-")),
        "{headers:?}"
    );
    let (st, headers, _) = Server::send(
        s.req(Method::OPTIONS, "/api/workflows")
            .header("origin", "http://attacker.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type"),
    )
    .await;
    assert_ne!(st / 100, 2, "a preflight is not answered");
    assert!(headers.get("access-control-allow-origin").is_none());

    // Named origins (with a token) get proper CORS; others stay refused.
    let s = serve(Some("tok"), &[], &["https://app.example.test"]).await;
    let (st, headers, _) = Server::send(
        s.req(Method::OPTIONS, "/api/executions")
            .header("origin", "https://app.example.test")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            ),
    )
    .await;
    assert_eq!(st / 100, 2, "{headers:?}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.test"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    let (st, headers, w) = Server::send(
        s.req(Method::POST, "/api/workflows")
            .header("origin", "https://app.example.test")
            .header("sec-fetch-site", "cross-site")
            .bearer_auth("tok")
            .json(&json!({"source": WF})),
    )
    .await;
    assert_eq!(st, 201, "{w}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.test"
    );
    let (st, _, r) = Server::send(
        s.req(Method::POST, "/api/workflows")
            .header("origin", "https://other.example.test")
            .bearer_auth("tok")
            .json(&json!({"source": WF})),
    )
    .await;
    assert_error(st, &r, 403, "cross-origin", "--cors-origin");
    let (st, _, r) = Server::send(
        s.req(Method::POST, "/api/workflows")
            .header("origin", "https://app.example.test")
            .json(&json!({"source": WF})),
    )
    .await;
    assert_error(st, &r, 401, "unauthorized", "token");
}

/// Importing takes JSON only, and leaves the run stopped unless asked to continue.
#[tokio::test]
async fn checkpoint_import_needs_json_and_does_not_run_unasked() {
    let s = serve(None, &[], &[]).await;
    let (st, _, e) = Server::send(
        s.req(Method::POST, "/api/executions")
            .json(&json!({"source": "name: imp\nsteps:\n  - {key: a, agent: x, prompt: first}\n  - {key: b, agent: x, prompt: \"second {{a.result}}\", dependencies: [a]}\n"})),
    )
    .await;
    assert_eq!(st, 201, "{e}");
    let id = e["id"].as_str().expect("id").to_owned();
    let mut done = Value::Null;
    for _ in 0..500 {
        let (_, _, x) = Server::send(s.req(Method::GET, &format!("/api/executions/{id}"))).await;
        if x["state"] == "completed" {
            done = x;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(done["state"], "completed");
    let (_, _, cps) =
        Server::send(s.req(Method::GET, &format!("/api/executions/{id}/checkpoints"))).await;
    // The oldest restore point: nothing completed yet.
    let first = cps
        .as_array()
        .and_then(|a| a.last())
        .and_then(|c| c["id"].as_str())
        .expect("a checkpoint")
        .to_owned();
    let (st, _, file) =
        Server::send(s.req(Method::GET, &format!("/api/checkpoints/{first}/export"))).await;
    assert_eq!(st, 200);
    let text = file.to_string();
    let calls = s.t.fake.calls();
    for ct in ["", "text/plain", "application/octet-stream"] {
        let mut rb = s
            .req(Method::POST, "/api/checkpoints/import")
            .body(text.clone());
        if !ct.is_empty() {
            rb = rb.header("content-type", ct);
        }
        let (st, _, r) = Server::send(rb).await;
        assert_error(
            st,
            &r,
            415,
            "unsupported-media-type",
            "Content-Type: application/json",
        );
    }
    let (st, _, imported) =
        Server::send(s.req(Method::POST, "/api/checkpoints/import").json(&file)).await;
    assert_eq!(st, 201, "{imported}");
    let iid = imported["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, now) = Server::send(s.req(Method::GET, &format!("/api/executions/{iid}"))).await;
    assert!(
        matches!(now["state"].as_str(), Some("interrupted" | "paused")),
        "an import without ?resume=true stays stopped: {now}"
    );
    assert_eq!(s.t.fake.calls(), calls, "no provider was called");
    // Resuming it is an explicit step; so is `?resume=true`.
    let (st, _, r) =
        Server::send(s.req(Method::POST, &format!("/api/executions/{iid}/resume"))).await;
    assert_eq!(st, 202, "{r}");
    let (st, _, r) = Server::send(
        s.req(Method::POST, "/api/checkpoints/import?resume=true")
            .json(&file),
    )
    .await;
    assert_eq!(st, 201, "{r}");
    let rid = r["id"].as_str().expect("id").to_owned();
    for id in [iid, rid] {
        let mut state = Value::Null;
        for _ in 0..500 {
            let (_, _, x) =
                Server::send(s.req(Method::GET, &format!("/api/executions/{id}"))).await;
            state = x["state"].clone();
            if state == "completed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(state, "completed", "{id}");
    }
}

fn ax_serve(dir: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ax"));
    for k in [
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "AX_TOKEN",
        "AX_ALLOWED_HOSTS",
        "AX_CORS_ORIGINS",
        "AX_BIND",
        "AX_PORT",
    ] {
        c.env_remove(k);
    }
    c.arg("serve")
        .args(args)
        .arg("--db")
        .arg(dir.join("ax.db"))
        .env("HOME", dir);
    c
}

/// `ax serve` refuses settings that would open it to other pages or machines
/// without a token, and says which flag or variable to set.
#[test]
fn serve_refuses_openings_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, envs, hint) in [
        (vec!["--bind", "0.0.0.0"], vec![], "AX_TOKEN"),
        (vec!["--bind", "::"], vec![], "AX_TOKEN"),
        (
            vec!["--cors-origin", "https://app.example.test"],
            vec![],
            "AX_TOKEN",
        ),
        (
            vec![],
            vec![("AX_CORS_ORIGINS", "https://a.test,https://b.test")],
            "https://a.test, https://b.test",
        ),
        (vec!["--allowed-host", "*"], vec![], "AX_TOKEN"),
        (
            vec!["--allowed-host", "http://ax.example.test/"],
            vec![],
            "--allowed-host",
        ),
        (
            vec!["--cors-origin", "app.example.test"],
            vec![("AX_TOKEN", "t")],
            "--cors-origin",
        ),
    ] {
        let out = ax_serve(dir.path(), &args)
            .args(["--port", "0"])
            .envs(envs)
            .output()
            .expect("runs ax");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(hint), "{args:?}: `{hint}` not in {err}");
    }
}

/// The real binary with AX_ALLOWED_HOSTS: its own and the allowed names answer,
/// another name does not.
#[test]
fn serve_answers_only_its_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let child = ax_serve(dir.path(), &["--port", &port.to_string()])
        .env("AX_ALLOWED_HOSTS", "ax.example.test, .corp.test")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let get = |host: &str| {
        client
            .get(format!("http://127.0.0.1:{port}/api/workflows"))
            .header("host", host)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while get(&format!("127.0.0.1:{port}")) != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "ax serve never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&format!("localhost:{port}")), 200);
    assert_eq!(get("ax.example.test"), 200);
    assert_eq!(get("build.corp.test:8080"), 200);
    assert_eq!(get(&format!("attacker.example:{port}")), 403);
    assert_eq!(get("ax.example.test.attacker.example"), 403);
}
