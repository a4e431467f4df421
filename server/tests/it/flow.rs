//! Approval steps and forEach items on the durable engine (issue 11): decisions
//! from this process and from others, across restarts, over HTTP; deadlines;
//! item attempts and progress recorded.

use super::common::{
    Backend, TestEngine, engine, engine_as, start_file, state, step, test_settings, wait_for,
};
use ax_core::ExecutionState;
use ax_server::api::{Access, AppState, app};
use ax_server::engine::{Decision, Engine, EngineError};
use ax_server::store::{self, Owner, Store};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const SIGN_OFF: &str = r#"
name: release
steps:
  - {key: audit, agent: backend, prompt: "audit the release"}
  - key: sign-off
    type: approval
    dependencies: [audit]
    prompt: "Ship it? The audit said: {{audit.result}}"
    outputSchema:
      type: [object, "null"]
      properties: {ticket: {type: string, pattern: "^REL-[0-9]+$"}}
  - key: ship
    agent: backend
    dependencies: [sign-off]
    prompt: "ship with note {{sign-off.result.comment}} and ticket {{sign-off.result.data.ticket ?? \"none\"}}"
"#;

fn approve(comment: &str, data: Option<Value>) -> Decision {
    Decision {
        approve: true,
        comment: Some(comment.into()),
        data,
        by: Some("ana".into()),
    }
}

/// A waiting run has no runner; a decision from this process drives it on.
async fn an_approval_waits_without_a_runner_and_a_decision_drives_it_on(b: Backend) {
    let t = engine(b).await;
    let (id, handle) = start(&t, SIGN_OFF).await;
    let end = handle.await.expect("runner");
    assert_eq!(
        end.state,
        ExecutionState::Waiting,
        "the runner leaves a waiting run"
    );
    assert!(!t.engine.is_running_here(&id));
    let rec = t.engine.execution(&id).await.expect("rec");
    assert_eq!(rec.state, "waiting");
    assert_eq!(rec.owner, None, "nothing owns a waiting run");
    let s = step(t.engine.store(), &id, "sign-off").await;
    assert_eq!(s.state, "waiting");
    assert_eq!(
        s.request.as_deref(),
        Some("Ship it? The audit said: answer(audit the release)")
    );
    // Listed as waiting.
    let waiting = t
        .engine
        .store()
        .list_executions(store::ExecutionFilter {
            state: Some("waiting".into()),
            workflow_id: None,
            parent_id: None,
            limit: 10,
        })
        .await
        .expect("list");
    assert_eq!(waiting.len(), 1);
    // Refused decisions change nothing: bad data (422), an unknown step (404),
    // a step that is not waiting (409).
    let err = t
        .engine
        .decide(
            &id,
            "sign-off",
            approve("go", Some(json!({"ticket": "nope"}))),
        )
        .await
        .expect_err("bad data");
    assert!(matches!(err, EngineError::Unprocessable(_)), "{err}");
    assert!(err.to_string().contains("/ticket"), "{err}");
    let err = t
        .engine
        .decide(&id, "audit", approve("go", None))
        .await
        .expect_err("not an approval");
    assert!(matches!(err, EngineError::Conflict(_)), "{err}");
    let err = t
        .engine
        .decide(&id, "nope", approve("go", None))
        .await
        .expect_err("no such step");
    assert!(matches!(err, EngineError::NotFound(_)), "{err}");
    assert_eq!(state(t.engine.store(), &id).await, ExecutionState::Waiting);
    // The decision.
    let (_, handle) = t
        .engine
        .decide(
            &id,
            "sign-off",
            approve("ship it", Some(json!({"ticket": "REL-7"}))),
        )
        .await
        .expect("approves");
    let end = handle
        .expect("this process drives it on")
        .await
        .expect("runner");
    assert_eq!(end.state, ExecutionState::Completed);
    assert_eq!(
        t.fake
            .calls_exact("ship with note ship it and ticket REL-7"),
        1
    );
    let s = step(t.engine.store(), &id, "sign-off").await;
    let result: Value = serde_json::from_str(s.output.as_deref().unwrap_or("null")).expect("json");
    assert_eq!(result["approved"], true);
    assert_eq!(result["by"], "ana");
    // Deciding again: 409.
    let err = t
        .engine
        .decide(&id, "sign-off", approve("again", None))
        .await
        .expect_err("ended");
    assert!(matches!(err, EngineError::Conflict(_)), "{err}");
}

/// A rejection fails the run with class `rejected` and the comment.
async fn a_rejection_fails_the_run_with_its_reason(b: Backend) {
    let t = engine(b).await;
    let (id, handle) = start(&t, SIGN_OFF).await;
    handle.await.expect("runner");
    let (_, handle) = t
        .engine
        .decide(
            &id,
            "sign-off",
            Decision {
                approve: false,
                comment: Some("not during the freeze".into()),
                data: None,
                by: Some("bo".into()),
            },
        )
        .await
        .expect("rejects");
    let end = handle.expect("driven here").await.expect("runner");
    assert_eq!(end.state, ExecutionState::Failed);
    let rec = t.engine.execution(&id).await.expect("rec");
    assert_eq!(
        rec.reason.as_deref(),
        Some("step `sign-off` failed: rejected by bo: not during the freeze")
    );
    let s = step(t.engine.store(), &id, "sign-off").await;
    assert_eq!(s.error_class.as_deref(), Some("rejected"));
    assert_eq!(t.fake.calls_for("ship with note"), 0);
}

/// Another live process drives the run (a foreground `ax workflow run`, which
/// keeps its driver while waiting): the decision reaches it through the inbox.
async fn a_decision_from_another_process_reaches_the_driver(b: Backend) {
    let t = engine(b).await;
    let driver = {
        let store = Store::open(&t.db).await.expect("store");
        let config = ax_server::config::AgentsConfig::load(Some(&t.agents)).expect("agents");
        let router = ax_server::providers::Router::new(config, &|_| None).expect("router");
        let settings = ax_server::engine::Settings {
            keep_waiting: true,
            ..test_settings()
        };
        Engine::with_owner(store, router, settings, Owner::this_process())
    };
    let wf = driver
        .create_workflow(SIGN_OFF.to_owned(), None)
        .await
        .expect("valid");
    let (rec, handle) = driver.start(&wf.id, BTreeMap::new()).await.expect("starts");
    let id = rec.id;
    wait_for(10, "the run to wait", || async {
        state(t.engine.store(), &id).await == ExecutionState::Waiting
    })
    .await;
    assert!(driver.is_running_here(&id), "the foreground driver stays");
    // From the other process (the test's engine is a different owner).
    let err = t
        .engine
        .decide(&id, "sign-off", approve("x", Some(json!({"ticket": 7}))))
        .await
        .expect_err("bad data, refused by the driver");
    assert!(matches!(err, EngineError::Unprocessable(_)), "{err}");
    let (_, none) = t
        .engine
        .decide(&id, "sign-off", approve("from afar", None))
        .await
        .expect("approved through the inbox");
    assert!(none.is_none(), "the other process drives it");
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed);
    assert_eq!(
        t.fake
            .calls_exact("ship with note from afar and ticket none"),
        1
    );
}

/// The process that ran it is gone (a restart): a new process applies the
/// decision and drives the run to its end.
async fn a_decision_after_a_restart_drives_the_run_on(b: Backend) {
    let t = engine(b).await;
    let (id, handle) = start(&t, SIGN_OFF).await;
    handle.await.expect("runner");
    drop(t.engine.clone());
    // Another process of this machine (the test's own pid, another token).
    let other = engine_as(&t.db, &t.agents, Owner::this_process()).await;
    let (_, handle) = other
        .decide(&id, "sign-off", approve("after restart", None))
        .await
        .expect("approves");
    let end = handle
        .expect("driven by the new process")
        .await
        .expect("runner");
    assert_eq!(end.state, ExecutionState::Completed);
    assert_eq!(
        t.fake
            .calls_exact("ship with note after restart and ticket none"),
        1
    );
}

/// An approval's deadline wakes the waiting run (`wake_due`, as `ax serve` calls it).
async fn a_deadline_decides_by_on_timeout(b: Backend) {
    let t = engine(b).await;
    let yaml = "name: t\nsteps:\n  - {key: ok, type: approval, prompt: ok?, timeoutMs: 300, onTimeout: approve}\n  - {key: next, agent: backend, prompt: \"timed out {{ok.result.timedOut}}\", dependencies: [ok]}\n";
    let (id, handle) = start(&t, yaml).await;
    assert_eq!(handle.await.expect("runner").state, ExecutionState::Waiting);
    assert_eq!(t.engine.wake_due().await.expect("wake"), 0, "not due yet");
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(t.engine.wake_due().await.expect("wake"), 1);
    wait_for(10, "the run to end", || async {
        state(t.engine.store(), &id).await == ExecutionState::Completed
    })
    .await;
    assert_eq!(t.fake.calls_exact("timed out true"), 1);
}

/// forEach items are attempts with rows of their own, and the step shows its
/// progress.
async fn for_each_items_are_recorded(b: Backend) {
    let t = engine(b).await;
    let yaml = "name: t\nconfig: {parallelism: 2}\nsteps:\n  - {key: each, agent: backend, forEach: [a, b, c], prompt: \"item {{item}} {{index}}\"}\n  - {key: sum, agent: backend, prompt: \"sum {{each.result}}\", dependencies: [each]}\n";
    let (id, handle) = start(&t, yaml).await;
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed, "{:?}", end.reason);
    let s = step(t.engine.store(), &id, "each").await;
    assert_eq!(
        s.items,
        Some(store::ItemProgress {
            completed: 3,
            total: 3
        })
    );
    assert_eq!(
        s.output.as_deref(),
        Some(r#"["answer(item a 0)","answer(item b 1)","answer(item c 2)"]"#)
    );
    let attempts = t.engine.store().attempts(&id).await.expect("attempts");
    let each: Vec<(u32, String)> = attempts
        .iter()
        .filter(|a| a.step == "each")
        .map(|a| (a.attempt, a.state.clone()))
        .collect();
    assert_eq!(each.len(), 3, "{each:?}");
    assert!(each.iter().all(|(_, s)| s == "completed"), "{each:?}");
    let events = t
        .engine
        .store()
        .events_after(&id, 0, 1000)
        .await
        .expect("events");
    let items: Vec<&store::EventRecord> = events.iter().filter(|e| e.kind == "item").collect();
    assert!(items.iter().any(|e| e.state.as_deref() == Some("listed")));
    assert_eq!(
        items
            .iter()
            .filter(|e| e.state.as_deref() == Some("completed"))
            .count(),
        3
    );
}

// ---- HTTP ----

async fn serve(t: &TestEngine) -> String {
    let state = AppState {
        engine: t.engine.clone(),
        token: None,
        web_dir: None,
        access: Arc::new(Access::local("127.0.0.1".parse().expect("ip"))),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app(state)).await;
    });
    format!("http://{addr}")
}

async fn post(base: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.post(format!("{base}{path}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn decisions_over_http(b: Backend) {
    let t = engine(b).await;
    let base = serve(&t).await;
    let (id, handle) = start(&t, SIGN_OFF).await;
    handle.await.expect("runner");
    let path = |verb: &str, key: &str| format!("/api/executions/{id}/steps/{key}/{verb}");
    let (status, body) = post(
        &base,
        &path("approve", "sign-off"),
        Some(json!({"data": {"ticket": "R-1"}})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("/ticket"), "{body}");
    let (status, body) = post(&base, &path("approve", "audit"), None).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = post(
        &base,
        &path("approve", "sign-off"),
        Some(json!({"comment": "x", "extra": 1})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &base,
        &path("reject", "sign-off"),
        Some(json!({"comment": "no", "by": "cy"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_for(10, "the run to fail", || async {
        state(t.engine.store(), &id).await == ExecutionState::Failed
    })
    .await;
    let (status, body) = post(&base, &path("approve", "sign-off"), None).await;
    assert_eq!(status, 409, "{body}");
}

crate::on_both_backends!(
    an_approval_waits_without_a_runner_and_a_decision_drives_it_on,
    a_rejection_fails_the_run_with_its_reason,
    a_decision_from_another_process_reaches_the_driver,
    a_decision_after_a_restart_drives_the_run_on,
    a_deadline_decides_by_on_timeout,
    for_each_items_are_recorded,
    decisions_over_http,
);

async fn start(
    t: &TestEngine,
    yaml: &str,
) -> (String, tokio::task::JoinHandle<ax_server::engine::RunEnd>) {
    start_file(t, yaml, "t.yaml").await
}
