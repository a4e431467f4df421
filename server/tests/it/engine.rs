//! The durable engine against a real SQLite file and a real HTTP provider.

use super::common::{engine, engine_on, wait_for};
use ax_core::ExecutionState;
use ax_server::store::{self, Control};
use serde_json::json;
use std::collections::BTreeMap;

async fn run(t: &super::common::TestEngine, yaml: &str) -> (String, ExecutionState) {
    let wf = t
        .engine
        .create_workflow(yaml.to_owned(), Some("t.yaml".into()))
        .await
        .expect("valid workflow");
    let (rec, handle) = t
        .engine
        .start(&wf.id, BTreeMap::new())
        .await
        .expect("starts");
    let end = handle.await.expect("runner");
    (rec.id, end.state)
}

async fn steps(t: &super::common::TestEngine, id: &str) -> Vec<store::StepRecord> {
    let id = id.to_owned();
    t.engine
        .store()
        .read(move |c| store::execution_steps(c, &id, true))
        .await
        .expect("steps")
}

fn state_of(steps: &[store::StepRecord], key: &str) -> String {
    steps
        .iter()
        .find(|s| s.key == key)
        .map(|s| s.state.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn fan_out_fan_in_records_everything() {
    let t = engine().await;
    let yaml = r#"
name: fan
steps:
  - {key: root, agent: backend, prompt: "root [sleep:30]"}
  - {key: a, agent: backend, prompt: "a {{root.result}} [sleep:60]", dependencies: [root]}
  - {key: b, agent: backend, prompt: "b {{root.result}} [sleep:60]", dependencies: [root]}
  - {key: join, agent: product, prompt: "join {{a.result}} {{b.result}}", dependencies: [a, b]}
"#;
    let started = std::time::Instant::now();
    let (id, state) = run(&t, yaml).await;
    assert_eq!(state, ExecutionState::Completed);
    // a and b ran in parallel: well under 30 + 60 + 60 ms of sleeping in series.
    assert!(started.elapsed().as_millis() < 2_000);
    let s = steps(&t, &id).await;
    let join = s.iter().find(|x| x.key == "join").expect("join");
    assert_eq!(
        join.output.as_deref(),
        Some(
            "answer(join answer(a answer(root [sleep:30]) [sleep:60]) answer(b answer(root [sleep:30]) [sleep:60]))"
        )
    );
    assert_eq!((join.tokens_in, join.tokens_out), (11, 7));
    assert_eq!(join.provider.as_deref(), Some("fake"));
    assert_eq!(join.model.as_deref(), Some("fake-1"));
    assert!(join.cost_usd.is_some_and(|c| c > 0.0));
    // Restore points: one at the start, one per settled step (the last one is also the end).
    let cps = t
        .engine
        .store()
        .read({
            let id = id.clone();
            move |c| store::list_checkpoints(c, &id)
        })
        .await
        .expect("cps");
    assert_eq!(cps.len(), 5);
    assert_eq!(cps[0].completed_steps.len(), 4);
    // Every transition has an event, in order.
    let events = t
        .engine
        .store()
        .read({
            let id = id.clone();
            move |c| store::events_after(c, &id, 0, 1000)
        })
        .await
        .expect("events");
    let last = events
        .iter()
        .rev()
        .find(|e| e.kind == "execution")
        .expect("execution event");
    assert_eq!(last.state.as_deref(), Some("completed"));
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let rec = t.engine.execution(&id).await.expect("rec");
    assert!(rec.owner.is_none(), "ownership is released at the end");
}

#[tokio::test]
async fn retries_then_succeeds_and_exhausts() {
    let t = engine().await;
    let yaml = r#"
name: retry
steps:
  - key: flaky
    agent: backend
    prompt: "flaky [fail:503 x2]"
    retryPolicy: {maxRetries: 3, retryDelayMs: 20}
  - key: doomed
    agent: backend
    prompt: "doomed [fail:500 x1000]"
    optional: true
    retryPolicy: {maxRetries: 2, retryDelayMs: 10, retryBackoffMultiplier: 1}
"#;
    let (id, state) = run(&t, yaml).await;
    assert_eq!(state, ExecutionState::Completed);
    let s = steps(&t, &id).await;
    assert_eq!(state_of(&s, "flaky"), "completed");
    assert_eq!(
        s.iter().find(|x| x.key == "flaky").map(|x| x.attempts),
        Some(3)
    );
    assert_eq!(state_of(&s, "doomed"), "failed");
    let doomed = s.iter().find(|x| x.key == "doomed").expect("doomed");
    assert_eq!(doomed.attempts, 3);
    assert_eq!(doomed.error_class.as_deref(), Some("server-error"));
    assert_eq!(t.fake.calls_for("doomed"), 3);
    // Every attempt has its own row.
    let n: i64 = t
        .engine
        .store()
        .read({
            let id = id.clone();
            move |c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM workflow_step_executions WHERE execution_id = ?1",
                    [&id],
                    |r| r.get(0),
                )?)
            }
        })
        .await
        .expect("count");
    assert_eq!(n, 6);
}

#[tokio::test]
async fn bad_request_fails_the_run_without_retry() {
    let t = engine().await;
    let yaml = "name: bad\nsteps:\n  - {key: a, agent: backend, prompt: \"a [fail:400 x1000]\", retryPolicy: {maxRetries: 5}}\n  - {key: b, agent: backend, prompt: b, dependencies: [a]}\n";
    let (id, state) = run(&t, yaml).await;
    assert_eq!(state, ExecutionState::Failed);
    assert_eq!(t.fake.calls_for("a [fail"), 1);
    let rec = t.engine.execution(&id).await.expect("rec");
    assert!(
        rec.reason
            .as_deref()
            .unwrap_or("")
            .contains("step `a` failed"),
        "{:?}",
        rec.reason
    );
    let s = steps(&t, &id).await;
    assert_eq!(state_of(&s, "a"), "failed");
    assert_eq!(
        s.iter()
            .find(|x| x.key == "a")
            .and_then(|x| x.error_class.clone())
            .as_deref(),
        Some("invalid-request")
    );
    assert_eq!(state_of(&s, "b"), "pending");
}

#[tokio::test]
async fn continue_on_error_and_when_skips() {
    let t = engine().await;
    let yaml = r#"
name: branches
config: {continueOnError: true}
steps:
  - {key: audit, agent: security, prompt: "audit [json:{\"severity\": \"low\"}]", outputSchema: {type: object, required: [severity]}}
  - {key: page, agent: devops, prompt: page, dependencies: [audit], when: '{{audit.result.severity}} == "high"'}
  - {key: broken, agent: backend, prompt: "broken [fail:401 x1000]"}
  - {key: after-broken, agent: backend, prompt: "x {{broken.result}}", dependencies: [broken]}
  - {key: report, agent: writer, prompt: "report {{audit.result.severity}}", dependencies: [audit]}
"#;
    let (id, state) = run(&t, yaml).await;
    assert_eq!(state, ExecutionState::Failed);
    let s = steps(&t, &id).await;
    assert_eq!(state_of(&s, "page"), "skipped");
    assert_eq!(state_of(&s, "broken"), "failed");
    assert_eq!(state_of(&s, "after-broken"), "skipped");
    assert_eq!(state_of(&s, "report"), "completed");
    assert_eq!(t.fake.calls_for("report low"), 1);
}

#[tokio::test]
async fn step_timeout_aborts_the_call() {
    let t = engine().await;
    let yaml = "name: slow\nsteps:\n  - {key: a, agent: backend, prompt: \"a [sleep:3000]\", timeoutMs: 150}\n";
    let started = std::time::Instant::now();
    let (id, state) = run(&t, yaml).await;
    assert_eq!(state, ExecutionState::Failed);
    assert!(
        started.elapsed().as_millis() < 2_500,
        "the timeout cut the 3 s call short"
    );
    let s = steps(&t, &id).await;
    assert_eq!(s[0].error_class.as_deref(), Some("timeout"));
}

#[tokio::test]
async fn pause_resume_and_cancel_mid_step() {
    let t = engine().await;
    let yaml = r#"
name: long
config: {parallelism: 1}
steps:
  - {key: s1, agent: backend, prompt: "s1 [sleep:200]"}
  - {key: s2, agent: backend, prompt: "s2 [sleep:200]", dependencies: [s1]}
  - {key: s3, agent: backend, prompt: "s3 [sleep:200]", dependencies: [s2]}
"#;
    let wf = t
        .engine
        .create_workflow(yaml.to_owned(), None)
        .await
        .expect("wf");
    let (rec, handle) = t
        .engine
        .start(&wf.id, BTreeMap::new())
        .await
        .expect("start");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    t.engine
        .control(&rec.id, Control::Pause)
        .await
        .expect("pause");
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Paused);
    // s1 was in flight and finished; nothing else started.
    let s = steps(&t, &rec.id).await;
    assert_eq!(state_of(&s, "s1"), "completed");
    assert_eq!(state_of(&s, "s2"), "ready");
    assert_eq!(t.fake.calls(), 1);
    // Resume, then cancel while s2 is in flight: the call is aborted.
    let (_, handle) = t
        .engine
        .control(&rec.id, Control::Resume)
        .await
        .expect("resume");
    let handle = handle.expect("runs here");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    t.engine
        .control(&rec.id, Control::Cancel)
        .await
        .expect("cancel");
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Cancelled);
    let s = steps(&t, &rec.id).await;
    assert_eq!(state_of(&s, "s2"), "cancelled");
    assert_eq!(state_of(&s, "s3"), "cancelled");
    assert_eq!(t.fake.calls_for("s3"), 0);
    // A cancelled run is final.
    assert!(t.engine.control(&rec.id, Control::Resume).await.is_err());
}

#[tokio::test]
async fn restore_rewinds_and_keeps_history() {
    let t = engine().await;
    let yaml = "name: chain\nsteps:\n  - {key: a, agent: backend, prompt: a}\n  - {key: b, agent: backend, prompt: \"b {{a.result}}\", dependencies: [a]}\n  - {key: c, agent: backend, prompt: \"c {{b.result}}\", dependencies: [b]}\n";
    let (id, state) = run(&t, yaml).await;
    assert_eq!(state, ExecutionState::Completed);
    let cps = t
        .engine
        .store()
        .read({
            let id = id.clone();
            move |c| store::list_checkpoints(c, &id)
        })
        .await
        .expect("cps");
    // The restore point where only `a` had completed.
    let after_a = cps
        .iter()
        .find(|c| c.completed_steps == ["a"])
        .expect("a checkpoint")
        .id
        .clone();
    let (_, handle) = t.engine.restore(&after_a, true).await.expect("restore");
    let end = handle.expect("runs").await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed);
    assert_eq!(t.fake.calls_exact("a"), 1, "a is not run again");
    assert_eq!(t.fake.calls_exact("b answer(a)"), 2);
    // History: the first attempts of b and c are kept, superseded.
    let rows: Vec<(String, i64, i64)> = t
        .engine
        .store()
        .read({
            let id = id.clone();
            move |c| {
                let mut st = c.prepare("SELECT step_key, attempt, superseded FROM workflow_step_executions WHERE execution_id = ?1 ORDER BY id")?;
                let rows = st.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            }
        })
        .await
        .expect("rows");
    assert_eq!(rows.iter().filter(|r| r.2 == 1).count(), 2, "{rows:?}");
    assert_eq!(rows.len(), 5);
    let rec = t.engine.execution(&id).await.expect("rec");
    assert_eq!(rec.state, "completed");
}

#[tokio::test]
async fn a_new_process_resumes_an_interrupted_run() {
    let t = engine().await;
    let yaml = "name: crash\nconfig: {parallelism: 1}\nsteps:\n  - {key: a, agent: backend, prompt: a}\n  - {key: b, agent: backend, prompt: \"b [sleep:5000]\", dependencies: [a]}\n  - {key: c, agent: backend, prompt: c, dependencies: [b]}\n";
    let wf = t
        .engine
        .create_workflow(yaml.to_owned(), None)
        .await
        .expect("wf");
    let (rec, handle) = t
        .engine
        .start(&wf.id, BTreeMap::new())
        .await
        .expect("start");
    let id = rec.id.clone();
    let e = t.engine.clone();
    wait_for(10, "b to start", || {
        let e = e.clone();
        let id = id.clone();
        async move {
            e.store()
                .read(move |c| store::execution_steps(c, &id, false))
                .await
                .map(|s| s[1].state == "running")
                .unwrap_or(false)
        }
    })
    .await;
    // Simulate the process dying: stop the runner without letting it record anything.
    handle.abort();
    // Forge a dead owner (another pid on this host, stale heartbeat).
    let id2 = id.clone();
    t.engine
        .store()
        .write(move |c| {
            c.execute("UPDATE workflow_executions SET owner = 'h/1/x', owner_pid = 999999999, heartbeat_at = 0 WHERE id = ?1", [&id2])?;
            Ok(())
        })
        .await
        .expect("forge");
    // A new engine (another process) sees it interrupted and resumes it.
    let other = engine_on(&t.db, &t.agents);
    let recovered = other.recover_orphans().await.expect("recover");
    assert_eq!(recovered, vec![id.clone()]);
    assert_eq!(
        other.execution(&id).await.expect("rec").state,
        "interrupted"
    );
    let (_, h) = other.control(&id, Control::Resume).await.expect("resume");
    let end = h.expect("runs").await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed, "{:?}", end.reason);
    assert_eq!(
        t.fake.calls_exact("a"),
        1,
        "completed steps do not run again"
    );
    let s = steps(&t, &id).await;
    assert!(s.iter().all(|x| x.state == "completed"));
    // The attempt that died with the process is closed, not left running.
    let id2 = id.clone();
    let rows: Vec<(String, i64, String)> = t
        .engine
        .store()
        .read(move |c| {
            let mut st = c.prepare("SELECT step_key, attempt, state FROM workflow_step_executions WHERE execution_id = ?1 ORDER BY id")?;
            let rows = st.query_map([&id2], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
        .expect("rows");
    assert!(rows.iter().all(|r| r.2 != "running"), "{rows:?}");
    assert!(
        rows.contains(&("b".to_owned(), 1, "aborted".to_owned())),
        "{rows:?}"
    );
    // One `interrupted` event, not two.
    let events = t
        .engine
        .store()
        .read({
            let id = id.clone();
            move |c| store::events_after(c, &id, 0, 1000)
        })
        .await
        .expect("events");
    let interrupted = events
        .iter()
        .filter(|e| e.kind == "execution" && e.state.as_deref() == Some("interrupted"))
        .count();
    assert_eq!(interrupted, 1);
    // Counters agree with the steps.
    let rec = t.engine.execution(&id).await.expect("rec");
    assert_eq!((rec.progress.completed, rec.progress.running), (3, 0));
}

#[tokio::test]
async fn an_execution_nobody_started_can_be_resumed() {
    let t = engine().await;
    let yaml = "name: idle\nsteps:\n  - {key: a, agent: backend, prompt: a}\n";
    let wf = t
        .engine
        .create_workflow(yaml.to_owned(), None)
        .await
        .expect("wf");
    let id = t
        .engine
        .create_execution(&wf.id, BTreeMap::new())
        .await
        .expect("created");
    assert_eq!(t.engine.execution(&id).await.expect("rec").state, "idle");
    let (_, h) = t
        .engine
        .control(&id, Control::Resume)
        .await
        .expect("resume an idle execution");
    assert_eq!(
        h.expect("runs").await.expect("runner").state,
        ExecutionState::Completed
    );
}

#[tokio::test]
async fn prune_keeps_the_newest_restore_points_and_shrinks() {
    let t = engine().await;
    let mut yaml = String::from("name: many\nconfig: {parallelism: 4}\nsteps:\n");
    for i in 0..60 {
        yaml.push_str(&format!(
            "  - {{key: s{i}, agent: backend, prompt: \"step {i} {}\"}}\n",
            "lorem ipsum ".repeat(50)
        ));
    }
    let (id, state) = run(&t, &yaml).await;
    assert_eq!(state, ExecutionState::Completed);
    let report = t
        .engine
        .store()
        .write(|c| store::prune(c, 5, Some(0), true, store::now_ms() + 1000))
        .await
        .expect("prune");
    assert_eq!(report.executions_deleted, 1);
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    let exists = t.engine.execution(&id).await.is_ok();
    assert!(!exists);
    let integrity = t
        .engine
        .store()
        .read(store::integrity_check)
        .await
        .expect("check");
    assert_eq!(integrity, "ok");
}

#[tokio::test]
async fn checkpoints_are_retained_during_a_run() {
    let t = engine().await;
    let mut yaml = String::from("name: chain\nsteps:\n");
    for i in 0..50 {
        let dep = if i == 0 {
            String::new()
        } else {
            format!(", dependencies: [s{}]", i - 1)
        };
        yaml.push_str(&format!(
            "  - {{key: s{i}, agent: backend, prompt: \"s{i}\"{dep}}}\n"
        ));
    }
    let (id, state) = run(&t, &yaml).await;
    assert_eq!(state, ExecutionState::Completed);
    let cps = t
        .engine
        .store()
        .read({
            let id = id.clone();
            move |c| store::list_checkpoints(c, &id)
        })
        .await
        .expect("cps");
    assert!(cps.len() <= 31, "{} restore points kept", cps.len());
    assert_eq!(cps[0].completed_steps.len(), 50);
    // The oldest kept one is still restorable.
    let oldest = cps.last().expect("some").id.clone();
    let (_, h) = t
        .engine
        .restore(&oldest, true)
        .await
        .expect("restore oldest");
    assert_eq!(
        h.expect("runs").await.expect("runner").state,
        ExecutionState::Completed
    );
}

#[tokio::test]
async fn inputs_are_checked_before_anything_runs() {
    let t = engine().await;
    let yaml = "name: inputs\ninputs:\n  topic: {description: what}\nsteps:\n  - {key: a, agent: writer, prompt: \"about {{topic}}\"}\n";
    let wf = t
        .engine
        .create_workflow(yaml.to_owned(), None)
        .await
        .expect("wf");
    let err = t
        .engine
        .start(&wf.id, BTreeMap::new())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("missing input `topic`"), "{err}");
    let (_, h) = t
        .engine
        .start(
            &wf.id,
            BTreeMap::from([("topic".to_owned(), json!("rust"))]),
        )
        .await
        .expect("starts");
    assert_eq!(h.await.expect("runner").state, ExecutionState::Completed);
    assert_eq!(t.fake.calls_for("about rust"), 1);
}
