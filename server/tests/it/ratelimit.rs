//! Per-provider capacity, shared by every run of the process: `max_concurrency`
//! caps the calls in flight, `requests_per_minute` spaces them, and waiting for
//! capacity is neither a failure nor a retry, and is shown while it happens.

use super::common::engine_on;
use ax_core::ExecutionState;
use ax_server::config::AgentsConfig;
use ax_server::providers::Router;
use ax_server::store::DbTarget;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An OpenAI Chat Completions server that counts calls in flight and logs when
/// each call arrived.
#[derive(Clone, Default)]
struct Counting {
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    /// Answer 429 to this many calls first.
    limited: Arc<AtomicUsize>,
    /// If set, each call holds on until the test adds a permit.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

async fn chat(State(c): State<Counting>, Json(body): Json<Value>) -> axum::response::Response {
    use axum::response::IntoResponse;
    c.arrivals.lock().expect("lock").push(Instant::now());
    if c.limited
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let err = json!({"error": {"message": "Rate limit reached", "type": "requests"}});
        return (axum::http::StatusCode::TOO_MANY_REQUESTS, Json(err)).into_response();
    }
    let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    c.most.fetch_max(now, Ordering::SeqCst);
    match &c.gate {
        Some(gate) => gate.acquire().await.expect("gate").forget(),
        None => tokio::time::sleep(Duration::from_millis(150)).await,
    }
    c.in_flight.fetch_sub(1, Ordering::SeqCst);
    Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    }))
    .into_response()
}

async fn counting() -> (Counting, SocketAddr) {
    serve_fake(Counting::default()).await
}

async fn serve_fake(c: Counting) -> (Counting, SocketAddr) {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(c.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (c, addr)
}

fn agents(addr: SocketAddr, limits: &str) -> String {
    format!(
        "[defaults]\nprovider = \"fake\"\nmax_tokens = 10\n\n[providers.fake]\nkind = \"openai\"\n\
         base_url = \"http://{addr}/v1\"\nmodel = \"fake-1\"\nstream = false\n{limits}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrency_holds_across_runs_and_waiting_is_no_retry() {
    let (fake, addr) = counting().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agents.toml");
    std::fs::write(&path, agents(addr, "max_concurrency = 2")).expect("write");
    let db = DbTarget::Sqlite(dir.path().join("ax.db"));
    let engine = engine_on(&db, &path).await;
    let yaml = "name: wide\nsteps:\n  - {key: a, agent: x, prompt: a}\n  - {key: b, agent: x, prompt: b}\n  - {key: c, agent: x, prompt: c}\n";
    let wf = engine
        .create_workflow(yaml.to_owned(), Some("t.yaml".into()))
        .await
        .expect("valid workflow");
    // Two runs of three parallel steps: six calls, one provider, one process.
    let mut runs = Vec::new();
    for _ in 0..2 {
        runs.push(
            engine
                .start_with(&wf.id, BTreeMap::new(), Default::default())
                .await
                .expect("starts"),
        );
    }
    for (rec, handle) in runs {
        let end = handle.await.expect("runner");
        assert_eq!(end.state, ExecutionState::Completed);
        let steps = engine
            .store()
            .execution_steps(&rec.id, false)
            .await
            .expect("steps");
        for s in &steps {
            assert_eq!(s.attempts, 1, "step {} waited without using a retry", s.key);
        }
    }
    assert_eq!(fake.arrivals.lock().expect("lock").len(), 6);
    assert!(
        fake.most.load(Ordering::SeqCst) <= 2,
        "at most 2 calls at once"
    );
    assert_eq!(fake.most.load(Ordering::SeqCst), 2, "the limit is used");
}

fn router(addr: SocketAddr, limits: &str) -> Arc<Router> {
    let config = AgentsConfig::parse(
        &agents(addr, limits),
        ax_server::config::FileFormat::Toml,
        "agents.toml",
    )
    .expect("config");
    Arc::new(Router::new(config, &|_| None).expect("router"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_spaces_the_calls() {
    let (fake, addr) = counting().await;
    // 600 a minute: one every 100 ms.
    let router = router(addr, "requests_per_minute = 600");
    let before = Instant::now();
    let calls = (0..4)
        .map(|i| {
            let router = Arc::clone(&router);
            tokio::spawn(async move { router.complete("x", &format!("p{i}"), None, None).await })
        })
        .collect::<Vec<_>>();
    let mut waited = 0;
    for call in calls {
        let outcome = call.await.expect("join");
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        waited += outcome
            .notes
            .iter()
            .filter(|n| n.contains("waited") && n.contains("capacity of provider fake"))
            .count();
    }
    assert!(
        waited >= 3,
        "the calls that waited say so in the run log ({waited})"
    );
    let arrivals = fake.arrivals.lock().expect("lock").clone();
    assert_eq!(arrivals.len(), 4);
    // The last call may not start before three intervals have passed; slowness
    // can only make it later.
    let last = arrivals.iter().max().expect("calls");
    assert!(
        *last - before >= Duration::from_millis(290),
        "four calls within {:?}",
        *last - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_slows_the_provider_down() {
    let (fake, addr) = counting().await;
    fake.limited.store(1, Ordering::SeqCst);
    // 1200 a minute: one every 50 ms; after a 429, one every 100 ms.
    let router = router(addr, "requests_per_minute = 1200");
    let first = router.complete("x", "p0", None, None).await;
    assert!(first.result.is_err(), "the scripted 429");
    let after = Instant::now();
    let calls = (1..4)
        .map(|i| {
            let router = Arc::clone(&router);
            tokio::spawn(async move { router.complete("x", &format!("p{i}"), None, None).await })
        })
        .collect::<Vec<_>>();
    for call in calls {
        let o = call.await.expect("join");
        assert!(o.result.is_ok(), "{:?}", o.result);
    }
    let arrivals = fake.arrivals.lock().expect("lock").clone();
    assert_eq!(arrivals.len(), 4);
    // Halved, three calls take two 100 ms intervals (50 ms ones at full rate).
    let last = arrivals.iter().max().expect("calls");
    assert!(
        *last - after >= Duration::from_millis(190),
        "{:?}",
        *last - after
    );
}

#[test]
fn limits_must_be_positive_and_known() {
    let check = |limits: &str| {
        let text = agents("127.0.0.1:1".parse().expect("addr"), limits);
        AgentsConfig::parse(&text, ax_server::config::FileFormat::Toml, "agents.toml")
            .and_then(|c| {
                c.check()
                    .map_err(|p| anyhow::anyhow!(p.join("\n")))
                    .map(|_| c)
            })
            .map_err(|e| format!("{e:#}"))
    };
    let ok = check("max_concurrency = 4\nrequests_per_minute = 60\ntokens_per_minute = 90000")
        .expect("valid limits");
    let fake = &ok.providers["fake"];
    assert_eq!(fake.max_concurrency, Some(4));
    assert_eq!(fake.tokens_per_minute, Some(90000));
    for field in [
        "max_concurrency",
        "requests_per_minute",
        "tokens_per_minute",
    ] {
        let err = check(&format!("{field} = 0")).expect_err("0 is refused");
        assert!(err.contains(field) && err.contains("positive"), "{err}");
        let err = check(&format!("{field} = -3")).expect_err("negative is refused");
        assert!(err.contains(field), "{err}");
    }
    let err = check("max_concurency = 2").expect_err("typo refused");
    assert!(err.contains("max_concurency"), "{err}");
}

/// With `max_concurrency = 1`, a step that starts while another step's call is
/// in flight is announced as waiting on the event stream (`step-waiting` with
/// `waitingFor`), then as no longer waiting once its call is sent; the wait is
/// not a state change, and both steps complete with one attempt each. The fake
/// holds every call until the test lets it go, so nothing depends on timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_waiting_for_capacity_is_shown_waiting_then_runs() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (fake, addr) = serve_fake(Counting {
        gate: Some(Arc::clone(&gate)),
        ..Counting::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agents.toml");
    std::fs::write(&path, agents(addr, "max_concurrency = 1")).expect("write");
    let db = DbTarget::Sqlite(dir.path().join("ax.db"));
    let engine = engine_on(&db, &path).await;
    let state = ax_server::api::AppState {
        engine: engine.clone(),
        token: None,
        web_dir: None,
        access: Arc::new(ax_server::api::Access::local(
            "127.0.0.1".parse().expect("ip"),
        )),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, ax_server::api::app(state)).await;
    });
    // `w` starts once `go` is approved, while `a`'s call holds the only slot.
    let yaml = "name: queue\nsteps:\n  - {key: a, agent: x, prompt: a}\n  - {key: go, type: approval, prompt: go?}\n  - {key: w, agent: x, prompt: w, dependencies: [go]}\n";
    let wf = engine
        .create_workflow(yaml.to_owned(), Some("t.yaml".into()))
        .await
        .expect("valid workflow");
    let (rec, handle) = engine
        .start_with(&wf.id, BTreeMap::new(), Default::default())
        .await
        .expect("starts");
    let id = rec.id.clone();
    let arrived = || fake.arrivals.lock().expect("lock").len();
    super::common::wait_for(20, "a's call", || async { arrived() == 1 }).await;
    let client = reqwest::Client::new();
    let mut events = client
        .get(format!("{base}/api/executions/{id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("events");
    let approved = client
        .post(format!("{base}/api/executions/{id}/steps/go/approve"))
        .send()
        .await
        .expect("approve");
    assert!(
        approved.status().is_success(),
        "{:?}",
        approved.text().await
    );
    let mut text = String::new();
    let read_until_waiting = async {
        while !text.contains("event: step-waiting") {
            let chunk = events.chunk().await.expect("stream").expect("not ended");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_until_waiting)
        .await
        .expect("w is announced waiting");
    assert_eq!(arrived(), 1, "w's call is not sent while a's is in flight");
    gate.add_permits(2);
    let read_rest = async {
        while let Ok(Some(chunk)) = events.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_rest)
        .await
        .expect("the stream ends with the run");
    assert_eq!(
        handle.await.expect("runner").state,
        ExecutionState::Completed
    );

    let blocks: Vec<(String, Value)> = text
        .split("\n\n")
        .filter_map(|b| {
            let kind = b.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = b.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((kind.to_owned(), serde_json::from_str(data).ok()?))
        })
        .collect();
    let waits: Vec<&Value> = blocks
        .iter()
        .filter(|(k, _)| k == "step-waiting")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        waits,
        [
            &json!({"execution": id, "step": "w", "attempt": 1, "waitingFor": "capacity of provider fake"}),
            &json!({"execution": id, "step": "w", "attempt": 1, "waitingFor": null}),
        ],
        "{text}"
    );
    let at = |kind: &str, step: &str, state: Option<&str>| {
        blocks
            .iter()
            .position(|(k, v)| {
                k == kind && v["step"] == step && state.is_none_or(|s| v["state"] == s)
            })
            .unwrap_or_else(|| panic!("no {kind} {step} {state:?} in {text}"))
    };
    let started = at("step-waiting", "w", None);
    assert!(at("step", "a", Some("completed")) > started, "{text}");
    assert!(at("step", "w", Some("completed")) > started, "{text}");
    // The wait changed no state: `w` ran once, and no event says otherwise.
    assert!(
        !blocks
            .iter()
            .any(|(k, v)| k == "step" && v["step"] == "w" && v["state"] == "waiting-retry"),
        "{text}"
    );
    let steps = engine
        .store()
        .execution_steps(&id, false)
        .await
        .expect("steps");
    for s in steps.iter().filter(|s| s.key != "go") {
        assert_eq!(s.attempts, 1, "step {} waited without using a retry", s.key);
    }
    assert_eq!(arrived(), 2);
    assert_eq!(fake.most.load(Ordering::SeqCst), 1, "one call at a time");
    // Not stored: the JSON list of events has none.
    let stored: Value = client
        .get(format!("{base}/api/executions/{id}/events"))
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    assert!(
        stored
            .as_array()
            .expect("list")
            .iter()
            .all(|e| e["type"] != "step-waiting"),
        "{stored}"
    );
}

/// `ax workflow run --stream` prints `⏳ KEY waiting for capacity of provider
/// NAME` while a step waits for the only slot, before that step's `✓` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflow_run_shows_a_step_waiting_for_capacity() {
    use std::io::BufRead;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (fake, addr) = serve_fake(Counting {
        gate: Some(Arc::clone(&gate)),
        ..Counting::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("agents.toml"), agents(addr, "max_concurrency = 1")).expect("write");
    let yaml = "name: pair\nsteps:\n  - {key: a, agent: x, prompt: a}\n  - {key: b, agent: x, prompt: b}\n";
    std::fs::write(d.join("pair.yaml"), yaml).expect("write");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ax"))
        .env_remove("AX_DB")
        .env_remove("AX_AGENTS")
        .env("HOME", d.join("home"))
        .args(["workflow", "run"])
        .arg(d.join("pair.yaml"))
        .arg("--stream")
        .arg("--db")
        .arg(d.join("ax.db"))
        .arg("--agents")
        .arg(d.join("agents.toml"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs ax");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let waiting = async {
        while let Some(line) = rx.recv().await {
            let found =
                line.contains("⏳") && line.contains("waiting for capacity of provider fake");
            lines.push(line);
            if found {
                return;
            }
        }
        panic!("ax ended without a waiting line: {lines:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("a step is shown waiting");
    // The other step's call holds the only slot (it may still be on its way).
    assert!(fake.arrivals.lock().expect("lock").len() <= 1, "{lines:?}");
    gate.add_permits(2);
    let rest = async {
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), rest)
        .await
        .expect("ax ends");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{lines:?}");
    let waited = lines
        .iter()
        .position(|l| l.contains("⏳"))
        .expect("waiting line");
    let key = if lines[waited].contains("⏳ a ") {
        "a"
    } else {
        "b"
    };
    let done = lines
        .iter()
        .position(|l| l.starts_with(&format!("  ✓ {key} ")))
        .unwrap_or_else(|| panic!("{key} completes: {lines:?}"));
    assert!(waited < done, "{lines:?}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("⏳")).count(),
        1,
        "{lines:?}"
    );
    assert_eq!(fake.arrivals.lock().expect("lock").len(), 2);
}
