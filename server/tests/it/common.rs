//! Shared fixtures: a scripted OpenAI-compatible LLM server on 127.0.0.1, and an
//! engine on a real database: a SQLite file in a temporary directory, or a
//! fresh database on the PostgreSQL server that `AX_TEST_PG` names.

use ax_server::config::AgentsConfig;
use ax_server::engine::{Engine, Settings};
use ax_server::providers::Router;
use ax_server::store::{DbTarget, Owner, Store};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fake LLM speaking the OpenAI Chat Completions wire format. The prompt
/// scripts its behaviour with directives:
/// - `[sleep:MS]` answer after MS milliseconds;
/// - `[fail:STATUS xN]` answer STATUS the first N times (N = 1000 means always);
/// - `[json:{...}]` answer exactly this text;
/// - `[leak]` / `[leak-401]` repeat the Authorization header in an answer / an error;
/// - otherwise answer `answer(<first line of the prompt>)`.
#[derive(Clone, Default)]
pub struct FakeLlm {
    calls: Arc<Mutex<HashMap<String, u32>>>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Every request body, in order.
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

impl FakeLlm {
    pub fn calls(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn calls_exact(&self, prompt: &str) -> usize {
        self.log
            .lock()
            .map(|l| l.iter().filter(|p| *p == prompt).count())
            .unwrap_or(0)
    }

    pub fn calls_for(&self, needle: &str) -> usize {
        self.log
            .lock()
            .map(|l| l.iter().filter(|p| p.contains(needle)).count())
            .unwrap_or(0)
    }
}

fn directive<'a>(prompt: &'a str, name: &str) -> Option<&'a str> {
    let start = prompt.find(&format!("[{name}:"))? + name.len() + 2;
    let end = prompt[start..].find(']')? + start;
    Some(&prompt[start..end])
}

async fn chat(
    State(fake): State<FakeLlm>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let prompt = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|x| x["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let n = {
        let mut calls = fake.calls.lock().expect("lock");
        let c = calls.entry(prompt.clone()).or_insert(0);
        *c += 1;
        *c
    };
    if let Ok(mut log) = fake.log.lock() {
        log.push(prompt.clone());
    }
    if let Ok(mut bodies) = fake.bodies.lock() {
        bodies.push(body.clone());
    }
    if let Some(ms) = directive(&prompt, "sleep").and_then(|s| s.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(spec) = directive(&prompt, "fail") {
        let mut parts = spec.split(" x");
        let status: u16 = parts
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(500);
        let times: u32 = parts
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1000);
        if n <= times {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (
                code,
                Json(json!({"error": {"message": format!("scripted {status}"), "type": "test"}})),
            )
                .into_response();
        }
    }
    // A careless server that repeats credentials back.
    if prompt.contains("[leak-401]") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": format!("Incorrect API key provided: {auth}")}})),
        )
            .into_response();
    }
    if prompt.contains("[leak]") {
        return Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("your header was {auth}")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}
        }))
        .into_response();
    }
    let content = match directive(&prompt, "json") {
        Some(j) => j.to_owned(),
        None => format!("answer({})", prompt.lines().next().unwrap_or("")),
    };
    Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    }))
    .into_response()
}

pub async fn fake_llm() -> (FakeLlm, SocketAddr) {
    let fake = FakeLlm::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (fake, addr)
}

/// An agents config that sends every agent to the fake server (no key needed).
pub fn agents_toml(addr: SocketAddr) -> String {
    format!(
        "[defaults]\nprovider = \"fake\"\n\n[providers.fake]\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodel = \"fake-1\"\ntimeout_ms = 10000\n\n[prices.\"fake-1\"]\ninput = 1.0\noutput = 2.0\n"
    )
}

/// Which database a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The server's URL (`AX_TEST_PG`); each test gets its own database.
    Postgres(String),
}

/// Set by `cargo xtask test`: a missing PostgreSQL server is then an error,
/// never a silent skip.
const REQUIRE_PG: &str = "AX_REQUIRE_PG";
/// `postgres://USER@HOST:PORT/DB` of a server tests may create databases on
/// (`cargo xtask pg` starts a throwaway one and sets it).
const TEST_PG: &str = "AX_TEST_PG";

impl Backend {
    /// The PostgreSQL backend, or None (with a message on the terminal, not
    /// captured by the test harness) when `AX_TEST_PG` is not set.
    pub fn postgres() -> Option<Backend> {
        match std::env::var(TEST_PG) {
            Ok(url) if !url.trim().is_empty() => Some(Backend::Postgres(url)),
            _ => {
                assert!(
                    std::env::var_os(REQUIRE_PG).is_none(),
                    "{TEST_PG} is not set but {REQUIRE_PG} is: the PostgreSQL tests must run \
                     (cargo xtask test starts a server for them)"
                );
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "note: {TEST_PG} is not set: skipping the PostgreSQL variants of the tests \
                         (run them with `cargo xtask pg -- cargo test -p ax-server`)"
                    );
                });
                None
            }
        }
    }

    /// A fresh, empty database of this backend; `dir` holds SQLite files.
    pub async fn fresh(&self, dir: &std::path::Path) -> DbTarget {
        match self {
            Backend::Sqlite => DbTarget::Sqlite(dir.join("ax.db")),
            Backend::Postgres(url) => DbTarget::Postgres(create_database(url).await),
        }
    }
}

/// Create a database named after a fresh id on the server at `url`; returns its URL.
pub async fn create_database(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {TEST_PG}={url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let name = format!("ax_t_{}", ax_server::ids::new_id().to_lowercase());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
    with_database(url, &name)
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..authority_end])
}

/// Run each listed `async fn NAME(backend: Backend)` as two tests,
/// `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(b) = $crate::common::Backend::postgres() {
                        super::$name(b).await
                    }
                }
            )+
        }
    };
}

/// As [`on_both_backends`], for plain (not async) test functions.
#[macro_export]
macro_rules! on_both_backends_sync {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::common::Backend::Sqlite)
                }
            )+
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(b) = $crate::common::Backend::postgres() {
                        super::$name(b)
                    }
                }
            )+
        }
    };
}

pub struct TestEngine {
    pub engine: Arc<Engine>,
    pub fake: FakeLlm,
    /// Keeps the database directory alive.
    pub _dir: tempfile::TempDir,
    pub db: DbTarget,
    pub agents: PathBuf,
}

pub async fn engine(backend: Backend) -> TestEngine {
    let (fake, addr) = fake_llm().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = backend.fresh(dir.path()).await;
    let agents = dir.path().join("agents.toml");
    std::fs::write(&agents, agents_toml(addr)).expect("write agents");
    let engine = engine_on(&db, &agents).await;
    TestEngine {
        engine,
        fake,
        _dir: dir,
        db,
        agents,
    }
}

pub fn test_settings() -> Settings {
    Settings {
        poll_interval: Duration::from_millis(50),
        lease: Duration::from_secs(2),
        claim_interval: Duration::from_millis(200),
        ..Settings::default()
    }
}

pub async fn engine_on(db: &DbTarget, agents: &std::path::Path) -> Arc<Engine> {
    engine_as(db, agents, Owner::this_process()).await
}

/// An engine that records `owner` as the process driving its runs.
pub async fn engine_as(db: &DbTarget, agents: &std::path::Path, owner: Owner) -> Arc<Engine> {
    let store = Store::open(db).await.expect("open store");
    let config = AgentsConfig::load(Some(agents)).expect("agents config");
    let router = Router::new(config, &|_| None).expect("router");
    Engine::with_owner(store, router, test_settings(), owner)
}

/// Poll until `f` is true (or panic after `secs`).
pub async fn wait_for<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Store `yaml` under `filename` and start it on `t`'s engine.
pub async fn start_file(
    t: &TestEngine,
    yaml: &str,
    filename: &str,
) -> (String, tokio::task::JoinHandle<ax_server::engine::RunEnd>) {
    let (rec, handle) = start_stored(t, yaml, Some(filename)).await;
    (rec.id, handle)
}

/// Store a workflow text (under `filename`, if any) and start it.
pub async fn start_stored(
    t: &TestEngine,
    yaml: &str,
    filename: Option<&str>,
) -> (
    ax_server::store::ExecutionRecord,
    tokio::task::JoinHandle<ax_server::engine::RunEnd>,
) {
    let wf = t
        .engine
        .create_workflow(yaml.to_owned(), filename.map(str::to_owned))
        .await
        .expect("valid workflow");
    t.engine
        .start(&wf.id, std::collections::BTreeMap::new())
        .await
        .expect("starts")
}

/// An execution's state (`idle` when it is not there).
pub async fn state(store: &Store, id: &str) -> ax_core::ExecutionState {
    store
        .get_execution(id)
        .await
        .expect("read")
        .map(|r| r.state())
        .unwrap_or(ax_core::ExecutionState::Idle)
}

/// One step of an execution, with its output.
pub async fn step(store: &Store, id: &str, key: &str) -> ax_server::store::StepRecord {
    store
        .execution_steps(id, true)
        .await
        .expect("steps")
        .into_iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no step {key}"))
}

/// An owner whose process is gone: the pid of a child that has exited.
pub fn dead_owner() -> Owner {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    Owner::for_process(pid, None)
}
