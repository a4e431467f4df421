//! The durable engine against a real SQLite file and a real HTTP provider.

use super::common::{Backend, dead_owner, engine, engine_as, engine_on, start_stored, wait_for};
use ax_core::ExecutionState;
use ax_server::store::{self, Control, Owner, PruneOptions};
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
    t.engine
        .store()
        .execution_steps(id, true)
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

async fn fan_out_fan_in_records_everything(b: Backend) {
    let t = engine(b).await;
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
    let cps = t.engine.store().list_checkpoints(&id).await.expect("cps");
    assert_eq!(cps.len(), 5);
    assert_eq!(cps[0].completed_steps.len(), 4);
    // Every transition has an event, in order.
    let events = t
        .engine
        .store()
        .events_after(&id, 0, 1000)
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
    // One step by its key reads as the list shows it (without the output).
    for mut want in s {
        want.output = None;
        let one = t
            .engine
            .store()
            .execution_step(&id, &want.key)
            .await
            .expect("step")
            .expect("found");
        assert_eq!(json!(one), json!(want));
    }
    assert!(
        t.engine
            .store()
            .execution_step(&id, "nope")
            .await
            .expect("step")
            .is_none()
    );
}

async fn retries_then_succeeds_and_exhausts(b: Backend) {
    let t = engine(b).await;
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
    let n = t
        .engine
        .store()
        .attempts(&id)
        .await
        .expect("attempts")
        .len();
    assert_eq!(n, 6);
}

async fn bad_request_fails_the_run_without_retry(b: Backend) {
    let t = engine(b).await;
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

async fn continue_on_error_and_when_skips(b: Backend) {
    let t = engine(b).await;
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

async fn step_timeout_aborts_the_call(b: Backend) {
    let t = engine(b).await;
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

async fn pause_resume_and_cancel_mid_step(b: Backend) {
    let t = engine(b).await;
    let yaml = r#"
name: long
config: {parallelism: 1}
steps:
  - {key: s1, agent: backend, prompt: "s1 [sleep:200]"}
  - {key: s2, agent: backend, prompt: "s2 [sleep:200]", dependencies: [s1]}
  - {key: s3, agent: backend, prompt: "s3 [sleep:200]", dependencies: [s2]}
"#;
    let (rec, handle) = start_stored(&t, yaml, None).await;
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

async fn restore_rewinds_and_keeps_history(b: Backend) {
    let t = engine(b).await;
    let yaml = "name: chain\nsteps:\n  - {key: a, agent: backend, prompt: a}\n  - {key: b, agent: backend, prompt: \"b {{a.result}}\", dependencies: [a]}\n  - {key: c, agent: backend, prompt: \"c {{b.result}}\", dependencies: [b]}\n";
    let (id, state) = run(&t, yaml).await;
    assert_eq!(state, ExecutionState::Completed);
    let cps = t.engine.store().list_checkpoints(&id).await.expect("cps");
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
    let rows = t.engine.store().attempts(&id).await.expect("rows");
    assert_eq!(rows.iter().filter(|r| r.superseded).count(), 2, "{rows:?}");
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .filter(|r| r.superseded)
            .all(|r| r.step != "a" && r.attempt == 1),
        "{rows:?}"
    );
    let rec = t.engine.execution(&id).await.expect("rec");
    assert_eq!(rec.state, "completed");
}

async fn a_new_process_resumes_an_interrupted_run(b: Backend) {
    let t = engine(b).await;
    let yaml = "name: crash\nconfig: {parallelism: 1}\nsteps:\n  - {key: a, agent: backend, prompt: a}\n  - {key: b, agent: backend, prompt: \"b [sleep:5000]\", dependencies: [a]}\n  - {key: c, agent: backend, prompt: c, dependencies: [b]}\n";
    // The first process: its runs are recorded under a process that is gone.
    let first = engine_as(&t.db, &t.agents, dead_owner()).await;
    let wf = first
        .create_workflow(yaml.to_owned(), None)
        .await
        .expect("wf");
    let (rec, handle) = first.start(&wf.id, BTreeMap::new()).await.expect("start");
    let id = rec.id.clone();
    let e = first.clone();
    wait_for(10, "b to start", || {
        let e = e.clone();
        let id = id.clone();
        async move {
            e.store()
                .execution_steps(&id, false)
                .await
                .map(|s| s[1].state == "running")
                .unwrap_or(false)
        }
    })
    .await;
    // The process dies: the runner stops without recording anything.
    handle.abort();
    // A new engine (another process) sees it interrupted and resumes it.
    let other = engine_on(&t.db, &t.agents).await;
    // SQLite sees at once that the process is gone; PostgreSQL when its lease runs out.
    let started = std::time::Instant::now();
    let recovered = loop {
        let r = other.recover_orphans().await.expect("recover");
        if !r.is_empty() || started.elapsed() > std::time::Duration::from_secs(15) {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
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
    let rows = t.engine.store().attempts(&id).await.expect("rows");
    assert!(rows.iter().all(|r| r.state != "running"), "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r.step == "b" && r.attempt == 1 && r.state == "aborted"),
        "{rows:?}"
    );
    // One `interrupted` event, not two.
    let events = t
        .engine
        .store()
        .events_after(&id, 0, 1000)
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

async fn an_execution_nobody_started_can_be_resumed(b: Backend) {
    let t = engine(b).await;
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

async fn prune_keeps_the_newest_restore_points_and_shrinks(b: Backend) {
    let t = engine(b).await;
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
        .prune(PruneOptions {
            keep: 5,
            older_than: Some(0),
            delete_finished: true,
            now: store::now_ms() + 1000,
        })
        .await
        .expect("prune");
    assert_eq!(report.executions_deleted, 1);
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    let exists = t.engine.execution(&id).await.is_ok();
    assert!(!exists);
    let integrity = t.engine.store().check().await.expect("check");
    assert_eq!(integrity, "ok");
}

async fn checkpoints_are_retained_during_a_run(b: Backend) {
    let t = engine(b).await;
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
    let cps = t.engine.store().list_checkpoints(&id).await.expect("cps");
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

async fn inputs_are_checked_before_anything_runs(b: Backend) {
    let t = engine(b).await;
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

/// A request left for an owner that stopped before taking it (here: the run
/// paused and its process let go) must not fire when the run is next resumed.
async fn a_request_its_owner_never_took_does_not_fire_later(b: Backend) {
    let t = engine(b).await;
    let yaml = "name: stale\nconfig: {parallelism: 1}\nsteps:\n  - {key: a, agent: backend, prompt: \"a [sleep:100]\"}\n  - {key: b, agent: backend, prompt: b, dependencies: [a]}\n";
    let (rec, handle) = start_stored(&t, yaml, None).await;
    t.engine
        .control(&rec.id, Control::Pause)
        .await
        .expect("pause");
    assert_eq!(handle.await.expect("runner").state, ExecutionState::Paused);
    // A cancel that arrived as the owner let go: nobody took it.
    t.engine
        .store()
        .request_control(&rec.id, Control::Cancel, store::now_ms())
        .await
        .expect("request");
    let (_, h) = t
        .engine
        .control(&rec.id, Control::Resume)
        .await
        .expect("resume");
    let end = h.expect("runs here").await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed, "{:?}", end.reason);
}

/// An owner whose lease ran out (suspended, or a long prune held the
/// database) but whose process is alive keeps its run: nobody declares it
/// dead, and its next write goes through.
async fn a_live_owner_with_a_stale_lease_keeps_its_run(b: Backend) {
    let t = engine(b).await;
    // This owner never renews within the test (its keeper sleeps 60 s).
    let store = ax_server::store::Store::open(&t.db).await.expect("store");
    let config = ax_server::config::AgentsConfig::load(Some(&t.agents)).expect("agents");
    let router = ax_server::providers::Router::new(config, &|_| None).expect("router");
    let sleepy = ax_server::engine::Engine::with_owner(
        store,
        router,
        ax_server::engine::Settings {
            poll_interval: std::time::Duration::from_secs(60),
            lease: std::time::Duration::from_secs(1),
            ..ax_server::engine::Settings::default()
        },
        Owner::this_process(),
    );
    let yaml = "name: slow\nsteps:\n  - {key: a, agent: backend, prompt: \"a [sleep:3000]\"}\n";
    let wf = sleepy
        .create_workflow(yaml.to_owned(), None)
        .await
        .expect("wf");
    let (rec, handle) = sleepy.start(&wf.id, BTreeMap::new()).await.expect("start");
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    // The lease ran out; the process is alive. Other processes leave it be.
    let other = engine_on(&t.db, &t.agents).await;
    assert!(other.recover_orphans().await.expect("recover").is_empty());
    assert_eq!(other.claim_once().await.expect("claim"), 0);
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed, "{:?}", end.reason);
    assert_eq!(t.fake.calls_for("a [sleep"), 1);
    let leases = t.engine.store().leases(&rec.id).await.expect("leases");
    assert_eq!(leases.len(), 1, "{leases:?}");
}

/// Cancel is final: importing a checkpoint of a cancelled execution, with its
/// workflow as it was or edited (which re-runs the changed steps), and asked to
/// resume, leaves the new execution cancelled and calls no provider.
async fn importing_a_cancelled_run_does_not_revive_it(b: Backend) {
    let t = engine(b).await;
    let yaml = "name: final\nconfig: {parallelism: 1}\nsteps:\n  - {key: a, agent: backend, prompt: a}\n  - {key: b, agent: backend, prompt: \"b [sleep:5000]\", dependencies: [a]}\n  - {key: c, agent: backend, prompt: c, dependencies: [b]}\n";
    let (rec, handle) = start_stored(&t, yaml, None).await;
    let fake = t.fake.clone();
    wait_for(10, "step b to start", || {
        let fake = fake.clone();
        async move { fake.calls_for("b [sleep") == 1 }
    })
    .await;
    t.engine
        .control(&rec.id, Control::Cancel)
        .await
        .expect("cancel");
    assert_eq!(
        handle.await.expect("runner").state,
        ExecutionState::Cancelled
    );
    let cps = t
        .engine
        .store()
        .list_checkpoints(&rec.id)
        .await
        .expect("cps");
    assert_eq!(cps[0].state, "cancelled");
    let file = t
        .engine
        .export_checkpoint(&cps[0].id)
        .await
        .expect("export");
    let edited = yaml.replace("prompt: a}", "prompt: a2}");
    for source in [yaml.to_owned(), edited] {
        let mut f = file.clone();
        f.workflow.source = source;
        let (imported, handle) = t.engine.import(f, true).await.expect("import");
        assert!(handle.is_none(), "nothing runs");
        assert_eq!(imported.state, "cancelled", "{:?}", imported.reason);
        let steps = steps(&t, &imported.id).await;
        assert!(
            steps.iter().all(|s| s.state != "pending"),
            "{:?}",
            steps.iter().map(|s| (&s.key, &s.state)).collect::<Vec<_>>()
        );
    }
    assert_eq!(t.fake.calls_for("a2"), 0);
    assert_eq!(t.fake.calls_exact("c"), 0);
}

crate::on_both_backends!(
    importing_a_cancelled_run_does_not_revive_it,
    fan_out_fan_in_records_everything,
    retries_then_succeeds_and_exhausts,
    bad_request_fails_the_run_without_retry,
    continue_on_error_and_when_skips,
    step_timeout_aborts_the_call,
    pause_resume_and_cancel_mid_step,
    restore_rewinds_and_keeps_history,
    a_new_process_resumes_an_interrupted_run,
    an_execution_nobody_started_can_be_resumed,
    prune_keeps_the_newest_restore_points_and_shrinks,
    checkpoints_are_retained_during_a_run,
    inputs_are_checked_before_anything_runs,
    a_request_its_owner_never_took_does_not_fire_later,
    a_live_owner_with_a_stale_lease_keeps_its_run,
);
