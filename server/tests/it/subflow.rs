//! Sub-workflows on the durable engine (issue 11): `type: workflow` steps run
//! child executions that are listed like any run, report their outcome to the
//! parent, wait with it, and follow its cancel.

use super::common::{
    Backend, TestEngine, dead_owner, engine, engine_as, start_file, state, step, wait_for,
};
use ax_core::ExecutionState;
use ax_server::api::{Access, AppState, app};
use ax_server::engine::{Decision, EngineError, RunOptions};
use ax_server::store::{self, Control};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const CHILD: &str = r#"
name: summarize
inputs:
  topic: {description: the topic}
steps:
  - {key: sum, agent: backend, prompt: "sum about {{topic}}"}
outputs:
  summary: "{{sum.result}}"
"#;

const PARENT: &str = r#"
name: report
steps:
  - key: research
    type: workflow
    workflow: ./lib/summarize.yaml
    inputs: {topic: "rust"}
  - {key: write, agent: backend, dependencies: [research], prompt: "write {{research.result.summary}}"}
"#;

async fn store_child(t: &TestEngine, text: &str) {
    t.engine
        .create_workflow(text.to_owned(), Some("lib/summarize.yaml".into()))
        .await
        .expect("the child is valid");
}

/// The child runs as its own execution with its parent recorded; its
/// `outputs` are the step's result.
async fn a_child_s_outputs_are_the_step_s_result(b: Backend) {
    let t = engine(b).await;
    store_child(&t, CHILD).await;
    let (id, handle) = start(&t, PARENT).await;
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed, "{:?}", end.reason);
    let research = step(t.engine.store(), &id, "research").await;
    let result: Value =
        serde_json::from_str(research.output.as_deref().unwrap_or("")).expect("JSON result");
    assert_eq!(result, json!({"summary": "answer(sum about rust)"}));
    let write = step(t.engine.store(), &id, "write").await;
    assert_eq!(
        write.output.as_deref(),
        Some("answer(write answer(sum about rust))")
    );
    let children = t.engine.children(&id).await.expect("children");
    assert_eq!(children.len(), 1, "one child");
    let child = &children[0];
    assert_eq!(child.state, "completed");
    assert_eq!(child.workflow, "summarize");
    assert_eq!(
        child.parent,
        Some(store::ParentLink {
            id: id.clone(),
            step: "research".into(),
            attempt: 1,
            item: None,
        })
    );
    assert_eq!(child.inputs, json!({"topic": "rust"}));
    // Listed like any run.
    let all = t
        .engine
        .store()
        .list_executions(store::ExecutionFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 2);
    // Deleting the parent's workflow leaves the child, unlinked.
    let parent_wf = t.engine.execution(&id).await.expect("parent").workflow_id;
    let deleted = t.engine.store().delete_workflow(&parent_wf).await;
    assert!(
        matches!(deleted, Ok(store::DeleteOutcome::Deleted)),
        "{deleted:?}"
    );
    let child = t
        .engine
        .execution(&child.id)
        .await
        .expect("the child stays");
    assert_eq!(child.parent, None);
}

/// A failed child fails the step (and so the run), saying why.
async fn a_failed_child_fails_the_step(b: Backend) {
    let t = engine(b).await;
    store_child(
        &t,
        &CHILD.replace("sum about", "[fail:400 x1000] sum about"),
    )
    .await;
    let (id, handle) = start(&t, PARENT).await;
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Failed, "{:?}", end.reason);
    let research = step(t.engine.store(), &id, "research").await;
    assert_eq!(research.state, "failed");
    let error = research.error.unwrap_or_default();
    assert!(
        error.contains("the sub-workflow `summarize` failed"),
        "{error}"
    );
    assert_ne!(
        step(t.engine.store(), &id, "write").await.state,
        "completed"
    );
    let children = t.engine.children(&id).await.expect("children");
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].state, "failed");
    // Pruning finished runs removes parent and child alike.
    let report = t
        .engine
        .store()
        .prune(store::PruneOptions {
            keep: 1,
            older_than: Some(0),
            delete_finished: true,
            now: store::now_ms() + 1000,
        })
        .await
        .expect("pruned");
    assert_eq!(report.executions_deleted, 2);
}

const WAITING_CHILD: &str = r#"
name: summarize
inputs:
  topic: {description: the topic}
steps:
  - {key: ok, type: approval, prompt: "summarize {{topic}}?"}
  - {key: sum, agent: backend, dependencies: [ok], prompt: "sum about {{topic}}"}
outputs:
  summary: "{{sum.result}}"
"#;

/// A child waiting for a decision makes its parent wait (no runner for
/// either); the decision on the child drives both to the end.
async fn a_waiting_child_makes_its_parent_wait(b: Backend) {
    let t = engine(b).await;
    store_child(&t, WAITING_CHILD).await;
    let (id, handle) = start(&t, PARENT).await;
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Waiting, "{:?}", end.reason);
    let children = t.engine.children(&id).await.expect("children");
    let child = children[0].id.clone();
    wait_for(10, "the child to wait", || async {
        state(t.engine.store(), &child).await == ExecutionState::Waiting
    })
    .await;
    let decision = Decision {
        approve: true,
        ..Decision::default()
    };
    t.engine
        .decide(&child, "ok", decision)
        .await
        .expect("decided");
    wait_for(10, "the parent to complete", || async {
        state(t.engine.store(), &id).await == ExecutionState::Completed
    })
    .await;
    let research = step(t.engine.store(), &id, "research").await;
    let result: Value =
        serde_json::from_str(research.output.as_deref().unwrap_or("")).expect("JSON result");
    assert_eq!(result, json!({"summary": "answer(sum about rust)"}));
}

/// Cancelling the parent cancels its running child.
async fn cancelling_the_parent_cancels_the_child(b: Backend) {
    let t = engine(b).await;
    store_child(&t, WAITING_CHILD).await;
    let (id, handle) = start(&t, PARENT).await;
    handle.await.expect("runner");
    let children = t.engine.children(&id).await.expect("children");
    let child = children[0].id.clone();
    t.engine
        .control(&id, Control::Cancel)
        .await
        .expect("cancelled");
    assert_eq!(
        state(t.engine.store(), &id).await,
        ExecutionState::Cancelled
    );
    wait_for(10, "the child to be cancelled", || async {
        state(t.engine.store(), &child).await == ExecutionState::Cancelled
    })
    .await;
}

/// Pausing the parent pauses its child; resuming it resumes the same child
/// (no second one is started).
async fn pause_and_resume_reach_the_child(b: Backend) {
    let t = engine(b).await;
    store_child(&t, WAITING_CHILD).await;
    let (id, handle) = start(&t, PARENT).await;
    handle.await.expect("runner");
    let child = t.engine.children(&id).await.expect("children")[0]
        .id
        .clone();
    t.engine.control(&id, Control::Pause).await.expect("paused");
    assert_eq!(state(t.engine.store(), &id).await, ExecutionState::Paused);
    wait_for(10, "the child to pause", || async {
        state(t.engine.store(), &child).await == ExecutionState::Paused
    })
    .await;
    let (_, runner) = t
        .engine
        .control(&id, Control::Resume)
        .await
        .expect("resumed");
    if let Some(r) = runner {
        r.await.expect("runner");
    }
    wait_for(10, "the child to wait again", || async {
        state(t.engine.store(), &child).await == ExecutionState::Waiting
    })
    .await;
    let children = t.engine.children(&id).await.expect("children");
    assert_eq!(children.len(), 1, "no second child");
    let decision = Decision {
        approve: true,
        ..Decision::default()
    };
    t.engine
        .decide(&child, "ok", decision)
        .await
        .expect("decided");
    wait_for(10, "the parent to complete", || async {
        state(t.engine.store(), &id).await == ExecutionState::Completed
    })
    .await;
}

/// The process driving a parent and its child dies; another process resumes
/// the parent, which finds its child (no second one) and resumes it too.
async fn a_resumed_parent_finds_its_child_after_a_crash(b: Backend) {
    let t = engine(b).await;
    let first = engine_as(&t.db, &t.agents, dead_owner()).await;
    first
        .create_workflow(
            CHILD.replace("sum about", "[sleep:1500] sum about"),
            Some("lib/summarize.yaml".into()),
        )
        .await
        .expect("child");
    let wf = first
        .create_workflow(PARENT.to_owned(), Some("main.yaml".into()))
        .await
        .expect("parent");
    let (rec, handle) = first.start(&wf.id, BTreeMap::new()).await.expect("start");
    let id = rec.id.clone();
    wait_for(10, "the child's step to run", || async {
        match t
            .engine
            .children(&id)
            .await
            .ok()
            .and_then(|c| c.first().cloned())
        {
            Some(c) => step(t.engine.store(), &c.id, "sum").await.state == "running",
            None => false,
        }
    })
    .await;
    // The parent's driver dies (the child's dies with the process: its lease
    // is taken over below).
    handle.abort();
    let started = std::time::Instant::now();
    let mut recovered = std::collections::BTreeSet::new();
    loop {
        recovered.extend(t.engine.recover_orphans().await.expect("recover"));
        if recovered.len() == 2 || started.elapsed() > std::time::Duration::from_secs(15) {
            assert_eq!(
                recovered.len(),
                2,
                "parent and child are interrupted: {recovered:?}"
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, h) = t
        .engine
        .control(&id, Control::Resume)
        .await
        .expect("resume");
    let end = h.expect("runs here").await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed, "{:?}", end.reason);
    let children = t.engine.children(&id).await.expect("children");
    assert_eq!(children.len(), 1, "no second child: {children:?}");
    assert_eq!(children[0].state, "completed");
}

/// `forEach` with `type: workflow` runs one child per item; the step's result
/// is their results in item order.
async fn for_each_runs_one_child_per_item(b: Backend) {
    let t = engine(b).await;
    store_child(&t, CHILD).await;
    let parent = r#"
name: report
config: {parallelism: 2}
steps:
  - key: research
    type: workflow
    workflow: ./lib/summarize.yaml
    forEach: [a, b, c]
    inputs: {topic: "{{item}}"}
"#;
    let (id, handle) = start(&t, parent).await;
    let end = handle.await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed, "{:?}", end.reason);
    let research = step(t.engine.store(), &id, "research").await;
    let result: Value =
        serde_json::from_str(research.output.as_deref().unwrap_or("")).expect("JSON result");
    assert_eq!(
        result,
        json!([
            {"summary": "answer(sum about a)"},
            {"summary": "answer(sum about b)"},
            {"summary": "answer(sum about c)"}
        ])
    );
    let children = t.engine.children(&id).await.expect("children");
    let mut items: Vec<Option<u32>> = children
        .iter()
        .map(|c| c.parent.as_ref().and_then(|p| p.item))
        .collect();
    items.sort();
    assert_eq!(items, vec![Some(0), Some(1), Some(2)]);
}

/// A reference that names no file and no stored workflow is a validation
/// problem at the step's `workflow:` value.
async fn a_missing_child_is_a_validation_error_with_its_position(b: Backend) {
    let t = engine(b).await;
    let err = t
        .engine
        .create_workflow(PARENT.to_owned(), Some("main.yaml".into()))
        .await
        .expect_err("the child is missing");
    let EngineError::Invalid(report) = err else {
        panic!("not a validation error: {err}")
    };
    let p = &report.errors[0];
    assert_eq!(p.code.as_str(), "missing-workflow", "{p:?}");
    assert_eq!((p.line, p.column), (Some(6), Some(15)), "{p:?}");
    assert!(p.message.contains("lib/summarize.yaml"), "{}", p.message);
    // A stored workflow's name works too.
    store_child(&t, CHILD).await;
    let by_name = PARENT.replace("./lib/summarize.yaml", "summarize");
    t.engine
        .create_workflow(by_name, Some("main.yaml".into()))
        .await
        .expect("found by name");
}

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

/// Over HTTP: children are stored workflows found by file name; a missing one
/// is a 422 at the step's position; executions show their parent and children.
async fn sub_workflows_over_http(b: Backend) {
    let t = engine(b).await;
    let base = serve(&t).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let req = client.post(format!("{base}{path}")).json(&body);
        async move {
            let r = req.send().await.expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = post(
        "/api/workflows",
        json!({"source": PARENT, "filename": "main.yaml"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let problem = &body["report"]["errors"][0];
    assert_eq!(problem["code"], "missing-workflow", "{body}");
    assert_eq!(
        (problem["line"].as_u64(), problem["column"].as_u64()),
        (Some(6), Some(15))
    );
    let (status, body) = post(
        "/api/workflows",
        json!({"source": CHILD, "filename": "lib/summarize.yaml"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(
        "/api/executions",
        json!({"source": PARENT, "filename": "main.yaml"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    wait_for(10, "the run to complete", || async {
        state(t.engine.store(), &id).await == ExecutionState::Completed
    })
    .await;
    let get = |path: String| {
        let req = client.get(format!("{base}{path}"));
        async move {
            req.send()
                .await
                .expect("request")
                .json::<Value>()
                .await
                .expect("JSON")
        }
    };
    let run = get(format!("/api/executions/{id}")).await;
    let children = run["children"].as_array().expect("children");
    assert_eq!(children.len(), 1, "{run}");
    assert_eq!(children[0]["parent"]["id"], id.as_str());
    assert_eq!(children[0]["parent"]["step"], "research");
    let listed = get(format!("/api/executions?parentId={id}")).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], children[0]["id"]);
    assert!(run.get("parent").is_none(), "{run}");
}

/// A run started with `--cache` (the run's option) passes it to its children:
/// a second such run answers the child's step from the cache too.
async fn a_cached_run_s_children_use_the_cache(b: Backend) {
    let t = engine(b).await;
    store_child(&t, CHILD).await;
    let wf = t
        .engine
        .create_workflow(PARENT.to_owned(), Some("main.yaml".into()))
        .await
        .expect("valid workflow");
    let cached = RunOptions {
        cache: true,
        ..RunOptions::default()
    };
    for run in 0..2 {
        let (rec, handle) = t
            .engine
            .start_with(&wf.id, BTreeMap::new(), cached)
            .await
            .expect("starts");
        let end = handle.await.expect("runner");
        assert_eq!(
            end.state,
            ExecutionState::Completed,
            "run {run}: {:?}",
            end.reason
        );
        let children = t.engine.children(&rec.id).await.expect("children");
        assert_eq!(children.len(), 1, "run {run}");
        assert!(children[0].cache, "run {run}: the child runs with --cache");
    }
    assert_eq!(
        t.fake.calls_exact("sum about rust"),
        1,
        "the second run's child is answered from the cache"
    );
    assert_eq!(t.fake.calls(), 2, "one call per step, over both runs");
}

const TWO_STEP_CHILD: &str = r#"
name: summarize
inputs:
  topic: {description: the topic}
steps:
  - {key: s1, agent: backend, maxTokens: 10, prompt: "s1 {{topic}}"}
  - {key: s2, agent: backend, maxTokens: 10, dependencies: [s1], prompt: "s2 {{s1.result}} and a little more text"}
outputs:
  summary: "{{s2.result}}"
"#;

const BUDGETED_PARENT: &str = r#"
name: report
config: {budget: {tokens: 190}}
steps:
  - key: research
    type: workflow
    workflow: ./lib/summarize.yaml
    inputs: {topic: "rust"}
  - {key: write, agent: backend, maxTokens: 10, dependencies: [research], prompt: "w"}
"#;

/// A run's budget covers its sub-workflows: the child runs on what the run
/// has left, pauses there and pauses the run; the child's own budget cannot
/// be raised past it; raising the run's lets both finish, and what the child
/// spent is charged to the run (its status counts it).
async fn a_parent_s_budget_covers_its_children(b: Backend) {
    let t = engine(b).await;
    store_child(&t, TWO_STEP_CHILD).await;
    let (id, handle) = start(&t, BUDGETED_PARENT).await;
    let end = handle.await.expect("runner");
    // Every call is 18 tokens (11 in, 7 out). An attempt may use up to 10
    // tokens of answer, its prompt and the agent's system prompt (s1: 174):
    // with 18 of the child's 190 spent, s2 does not start.
    wait_for(10, "the parent to pause for its budget", || async {
        state(t.engine.store(), &id).await == ExecutionState::Paused
    })
    .await;
    let _ = end;
    let child = t.engine.children(&id).await.expect("children")[0].clone();
    assert_eq!(
        child.budget.tokens,
        Some(190),
        "the child runs on what was left"
    );
    assert_eq!(
        state(t.engine.store(), &child.id).await,
        ExecutionState::Paused
    );
    let rec = t.engine.execution(&id).await.expect("parent");
    let reason = rec.reason.unwrap_or_default();
    assert!(
        reason.starts_with("budget: the sub-workflow of `research` used what this run had left for it (the next attempt of `s2`"),
        "{reason}"
    );
    assert_eq!(t.fake.calls(), 1, "s2 was not called");
    // The child's own budget is its parent's to raise.
    let refused = t
        .engine
        .set_budget(
            &child.id,
            ax_core::Budget {
                usd: None,
                tokens: Some(1000),
            },
        )
        .await
        .expect_err("refused");
    assert!(
        refused.to_string().contains(&format!(
            "raise that one instead: `ax workflow resume {id} --budget-tokens N`"
        )),
        "{refused}"
    );
    // Raised: the child gets what is left now, finishes, and so does the parent.
    t.engine
        .set_budget(
            &id,
            ax_core::Budget {
                usd: None,
                tokens: Some(1000),
            },
        )
        .await
        .expect("raised");
    let (_, runner) = t
        .engine
        .control(&id, Control::Resume)
        .await
        .expect("resumed");
    if let Some(r) = runner {
        r.await.expect("runner");
    }
    wait_for(10, "the parent to complete", || async {
        state(t.engine.store(), &id).await == ExecutionState::Completed
    })
    .await;
    let child = t.engine.execution(&child.id).await.expect("child");
    assert_eq!(child.state(), ExecutionState::Completed);
    assert_eq!(child.budget.tokens, Some(1000), "given what was left");
    assert_eq!(t.fake.calls(), 3);
    // Three calls of 18 tokens, within the budget, counted on the parent.
    assert_eq!(
        t.engine.children_spent(&id).await.expect("spent").tokens,
        36
    );
    let base = serve(&t).await;
    let run: Value = reqwest::get(format!("{base}/api/executions/{id}"))
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(run["spent"]["tokens"], 54, "{run}");
}

crate::on_both_backends!(
    a_child_s_outputs_are_the_step_s_result,
    a_failed_child_fails_the_step,
    a_waiting_child_makes_its_parent_wait,
    cancelling_the_parent_cancels_the_child,
    pause_and_resume_reach_the_child,
    a_resumed_parent_finds_its_child_after_a_crash,
    for_each_runs_one_child_per_item,
    sub_workflows_over_http,
    a_missing_child_is_a_validation_error_with_its_position,
    a_cached_run_s_children_use_the_cache,
    a_parent_s_budget_covers_its_children,
);

async fn start(
    t: &TestEngine,
    yaml: &str,
) -> (String, tokio::task::JoinHandle<ax_server::engine::RunEnd>) {
    start_file(t, yaml, "main.yaml").await
}
