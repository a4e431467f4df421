//! Provider retries and live text through the `ax` binary, as a user runs them,
//! against an Anthropic-format server on 127.0.0.1: a workflow without any
//! retry policy survives a brief rate limit the way the official SDKs do, and
//! `ax serve` relays a streamed answer to its event stream as `step-delta`s.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// An Anthropic Messages server: the first `limited` calls get 429 with this
/// `retry-after`; then a streamed answer, its first event after `first`, then
/// one every `pace`.
#[derive(Clone)]
struct Claude {
    calls: Arc<AtomicUsize>,
    limited: usize,
    retry_after: &'static str,
    first: Duration,
    pace: Duration,
    /// When set, each answer waits for a permit before it streams.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

const ANSWER: &str = "The rate limit passed and the answer streamed in.";

async fn messages(State(c): State<Claude>, axum::Json(body): axum::Json<Value>) -> Response {
    let n = c.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if n <= c.limited {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit"}})),
        )
            .into_response();
        r.headers_mut()
            .insert("retry-after", c.retry_after.parse().expect("header"));
        return r;
    }
    assert_eq!(body["stream"], true, "ax asks for a stream");
    let named = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    let mut events = vec![named(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-test", "stop_reason": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    )];
    for word in ANSWER.split_inclusive(' ') {
        events.push(named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}),
        ));
    }
    events.push(named(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 10}}),
    ));
    events.push(named("message_stop", json!({"type": "message_stop"})));
    if let Some(gate) = &c.gate
        && let Ok(permit) = gate.acquire().await
    {
        permit.forget();
    }
    let (first, pace) = (c.first, c.pace);
    if pace.is_zero() {
        // One chunk: every piece and the end arrive together.
        events = vec![events.concat()];
    }
    let paced = events
        .into_iter()
        .enumerate()
        .map(move |(i, e)| (if i == 0 { first } else { pace }, e));
    let stream =
        futures_util::StreamExt::then(futures_util::stream::iter(paced), |(wait, e)| async move {
            tokio::time::sleep(wait).await;
            Ok::<_, std::io::Error>(e)
        });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("header"));
    r
}

async fn claude(
    limited: usize,
    retry_after: &'static str,
    first: Duration,
    pace: Duration,
) -> (SocketAddr, Arc<AtomicUsize>) {
    claude_gated(limited, retry_after, first, pace, None).await
}

async fn claude_gated(
    limited: usize,
    retry_after: &'static str,
    first: Duration,
    pace: Duration,
    gate: Option<Arc<tokio::sync::Semaphore>>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let c = Claude {
        calls: Arc::new(AtomicUsize::new(0)),
        limited,
        retry_after,
        first,
        pace,
        gate,
    };
    let calls = c.calls.clone();
    let app = axum::Router::new()
        .route("/v1/messages", axum::routing::post(messages))
        .with_state(c);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, calls)
}

/// A directory with an agents file that sends every agent to `addr`.
fn setup(addr: SocketAddr, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("agents.toml"),
        format!(
            "[defaults]\nprovider = \"claude\"\n\n[providers.claude]\nkind = \"anthropic\"\nbase_url = \"http://{addr}\"\nmodel = \"claude-test\"\n{extra}"
        ),
    )
    .expect("agents");
    std::fs::write(
        dir.path().join("one.yaml"),
        "name: one\nsteps:\n  - {key: only, agent: backend, prompt: \"Say something.\"}\n",
    )
    .expect("workflow");
    dir
}

fn ax(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ax"));
    for k in [
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "ANTHROPIC_BASE_URL",
        "AX_DB",
        "AX_AGENTS",
    ] {
        c.env_remove(k);
    }
    c.env("HOME", dir.join("home"))
        .args(args)
        .arg("--db")
        .arg(dir.join("ax.db"))
        .arg("--agents")
        .arg(dir.join("agents.toml"));
    c
}

/// Run `ax` off the async runtime (the fake server lives on it).
async fn run(dir: &Path, args: &[&str]) -> Output {
    let mut c = ax(dir, args);
    tokio::task::spawn_blocking(move || c.output().expect("runs ax"))
        .await
        .expect("joins")
}

async fn json_of(dir: &Path, args: &[&str]) -> Value {
    let out = run(dir, args).await;
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn path_arg(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_brief_rate_limit_is_retried_without_a_retry_policy() {
    let (addr, calls) = claude(2, "0", Duration::ZERO, Duration::ZERO).await;
    let dir = setup(addr, "");
    let d = dir.path();
    let v = json_of(
        d,
        &[
            "workflow",
            "run",
            &path_arg(d, "one.yaml"),
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(v["state"], "completed", "{v}");
    let step = &v["steps"][0];
    assert_eq!(step["attempts"], 3, "{step}");
    assert_eq!(step["output"], ANSWER);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // The two retries are in the events (one JSON object a line), with the
    // decision and the SDK-style backoff.
    let id = v["id"].as_str().expect("id");
    let out = run(d, &["workflow", "events", id, "--format", "json"]).await;
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect();
    let waits: Vec<&Value> = events
        .iter()
        .filter(|e| e["state"] == "waiting-retry")
        .collect();
    assert_eq!(waits.len(), 2, "{events:?}");
    for (n, w) in waits.iter().enumerate() {
        assert_eq!(w["attempt"], n as u64 + 1);
        assert_eq!(w["data"]["class"], "rate-limit");
        let reason = w["data"]["reason"].as_str().unwrap_or("");
        assert!(
            reason.starts_with(&format!("retry {} of 2 in ", n + 1)),
            "{reason}"
        );
        assert!(
            w["message"].as_str().unwrap_or("").contains("HTTP 429"),
            "{w}"
        );
    }
    let runs = events
        .iter()
        .filter(|e| e["type"] == "step" && e["state"] == "running")
        .count();
    assert_eq!(runs, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_settings_decide_and_a_long_retry_after_is_not_waited_for() {
    // max_retries = 0 in the agents file: fail at once, as before.
    let (addr, calls) = claude(1, "0", Duration::ZERO, Duration::ZERO).await;
    let dir = setup(addr, "max_retries = 0\n");
    let d = dir.path();
    let v = json_of(
        d,
        &[
            "workflow",
            "run",
            &path_arg(d, "one.yaml"),
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["steps"][0]["attempts"], 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // A provider asking for a day: failed now, saying why, not parked for a day.
    let (addr, calls) = claude(1, "86400", Duration::ZERO, Duration::ZERO).await;
    let dir = setup(addr, "");
    let d = dir.path();
    let started = Instant::now();
    let v = json_of(
        d,
        &[
            "workflow",
            "run",
            &path_arg(d, "one.yaml"),
            "--format",
            "json",
        ],
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let text = v.to_string();
    assert!(text.contains("longer than the 60 s ax waits"), "{text}");
    // A workflow's own policy still rules: no retries means none.
    let (addr, calls) = claude(1, "0", Duration::ZERO, Duration::ZERO).await;
    let dir = setup(addr, "");
    let d = dir.path();
    std::fs::write(
        d.join("strict.yaml"),
        "name: strict\nsteps:\n  - {key: only, agent: backend, prompt: hi, retryPolicy: {maxRetries: 0}}\n",
    )
    .expect("write");
    let v = json_of(
        d,
        &[
            "workflow",
            "run",
            &path_arg(d, "strict.yaml"),
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(v["state"], "failed");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// `ax serve` on a free port; killed on drop.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_relays_streamed_text_as_step_delta_events() {
    // Word by word.
    relayed(
        Duration::from_millis(40),
        Duration::from_millis(40),
        None,
        1,
    )
    .await;
    // In one burst the moment the reader is subscribed, so that the text and the
    // step's completion reach the event stream together, again and again.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    relayed(Duration::ZERO, Duration::ZERO, Some(gate), 15).await;
}

async fn relayed(
    first: Duration,
    pace: Duration,
    gate: Option<Arc<tokio::sync::Semaphore>>,
    runs: usize,
) {
    let (addr, _) = claude_gated(0, "0", first, pace, gate.clone()).await;
    let dir = setup(addr, "");
    let d = dir.path();
    let port = free_port();
    let child = ax(d, &["serve", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let _serve = Serve(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "ax serve never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let source = std::fs::read_to_string(d.join("one.yaml")).expect("read");
    for run in 0..runs {
        let created: Value = client
            .post(format!("{base}/api/executions"))
            .json(&json!({"source": source}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let id = created["id"].as_str().expect("id").to_owned();
        let mut r = client
            .get(format!("{base}/api/executions/{id}/events"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("events");
        if let Some(gate) = &gate {
            gate.add_permits(1);
        }
        let mut text = String::new();
        let read = async {
            while let Ok(Some(chunk)) = r.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the stream ends with the run");
        check_relayed(&text, &id, run);
        if run == 0 {
            // Deltas are not stored: the JSON list of events has none.
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
                    .all(|e| e["type"] != "step-delta"),
                "{stored}"
            );
        }
    }
}

/// Every piece of the answer, in order, before the step's completion.
fn check_relayed(text: &str, id: &str, run: usize) {
    // Blocks of `event:`/`data:` lines, in order.
    let blocks: Vec<(String, Value)> = text
        .split("\n\n")
        .filter_map(|b| {
            let kind = b.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = b.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((kind.to_owned(), serde_json::from_str(data).ok()?))
        })
        .collect();
    let deltas: Vec<&Value> = blocks
        .iter()
        .filter(|(k, _)| k == "step-delta")
        .map(|(_, v)| v)
        .collect();
    let mut joined = String::new();
    for d in &deltas {
        assert_eq!(d["execution"], id);
        assert_eq!(d["step"], "only");
        assert_eq!(d["attempt"], 1);
        assert_eq!(
            d["offset"].as_u64(),
            Some(joined.chars().count() as u64),
            "run {run}: {d}"
        );
        joined.push_str(d["text"].as_str().expect("text"));
    }
    assert_eq!(joined, ANSWER, "run {run}: {text}");
    let completed = blocks
        .iter()
        .position(|(k, v)| k == "step" && v["state"] == "completed")
        .expect("the step completed");
    let last_delta = blocks
        .iter()
        .rposition(|(k, _)| k == "step-delta")
        .expect("deltas");
    assert!(last_delta < completed, "run {run}: {text}");
}

/// `ax workflow run --stream` prints the streamed text whole, under a line
/// naming the step, before the step's completion line; without `--stream`
/// (and not on a terminal) the output has no text, and `--format json` stays
/// one JSON document.
#[tokio::test(flavor = "multi_thread")]
async fn workflow_run_stream_prints_the_text_as_it_arrives() {
    // Word by word, then all in one burst with the completion.
    for pace in [Duration::from_millis(30), Duration::ZERO] {
        let (addr, _) = claude(0, "0", Duration::from_millis(30), pace).await;
        let dir = setup(addr, "");
        let d = dir.path();
        let file = path_arg(d, "one.yaml");
        let out = run(d, &["workflow", "run", &file, "--stream"]).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        let head = text.find("  ┌ only\n").expect("a line naming the step");
        let said = text.find(ANSWER).expect("the whole answer, in order");
        let done = text.find("  ✓ only").expect("the completion line");
        assert!(head < said && said < done, "{text}");
        assert!(
            text[said..].starts_with(&format!("{ANSWER}\n  ✓ only")),
            "{text}"
        );
        // Without --stream: the lines as before, no text.
        let out = run(d, &["workflow", "run", &file]).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("  ✓ only"), "{text}");
        assert!(
            !text.contains("┌") && !text.contains("rate limit passed"),
            "{text}"
        );
        // JSON output is the status document alone, --stream or not.
        let v = json_of(
            d,
            &["workflow", "run", &file, "--stream", "--format", "json"],
        )
        .await;
        assert_eq!(v["steps"][0]["output"], ANSWER);
    }
}
