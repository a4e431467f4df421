//! `GET /api/stats`, `ax workflow stats` and the store's `workflow_stats` on a
//! database with known runs.

use super::common::{Backend, TestEngine, engine};
use ax_core::ExecutionState;
use ax_server::store::{Control, ExecutionFilter, WorkflowStats, percentile};
use std::collections::BTreeMap;

async fn run(t: &TestEngine, yaml: &str) -> (String, String) {
    let wf = t
        .engine
        .create_workflow(yaml.to_owned(), None)
        .await
        .expect("valid workflow");
    let (rec, handle) = t
        .engine
        .start(&wf.id, BTreeMap::new())
        .await
        .expect("starts");
    handle.await.expect("runner");
    (wf.id, rec.id)
}

const ALPHA_1: &str = "name: alpha\nsteps:\n  - {key: a, agent: backend, prompt: \"one [sleep:20]\"}\n  - {key: b, agent: backend, prompt: \"two {{a.result}}\", dependencies: [a]}\n";
const ALPHA_2: &str =
    "name: alpha\nsteps:\n  - {key: a, agent: backend, prompt: \"uno [sleep:40]\"}\n";
const ALPHA_BAD: &str =
    "name: alpha\nsteps:\n  - {key: a, agent: backend, prompt: \"bad [fail:400 x1000]\"}\n";
const BETA: &str =
    "name: beta\nsteps:\n  - {key: a, agent: backend, prompt: \"slow [sleep:5000]\"}\n";

/// Durations, tokens and cost as the executions and attempts hold them.
async fn expected(t: &TestEngine, workflow_ids: &[&str]) -> (Vec<u64>, u64, u64, f64) {
    let mut durations = Vec::new();
    let (mut tin, mut tout, mut cost) = (0, 0, 0.0);
    for wid in workflow_ids {
        let runs = t
            .engine
            .store()
            .list_executions(ExecutionFilter {
                workflow_id: Some((*wid).to_owned()),
                limit: 100,
                ..ExecutionFilter::default()
            })
            .await
            .expect("list");
        for r in runs {
            if r.state == "completed" {
                durations.push(r.duration_ms.expect("a completed run has a duration"));
            }
            for a in t.engine.store().attempts(&r.id).await.expect("attempts") {
                tin += a.tokens_in;
                tout += a.tokens_out;
            }
            let steps = t
                .engine
                .store()
                .execution_steps(&r.id, false)
                .await
                .expect("steps");
            cost += steps.iter().filter_map(|s| s.cost_usd).sum::<f64>();
        }
    }
    durations.sort_unstable();
    (durations, tin, tout, cost)
}

async fn stats_count_known_runs(b: Backend) {
    let t = engine(b).await;
    // alpha, three stored versions: 2 + 1 completed runs and 1 failed one.
    let (v1, _) = run(&t, ALPHA_1).await;
    run(&t, ALPHA_1).await;
    let (v2, _) = run(&t, ALPHA_2).await;
    let (bad, _) = run(&t, ALPHA_BAD).await;
    // beta: one cancelled run and one still paused.
    let wf = t
        .engine
        .create_workflow(BETA.to_owned(), None)
        .await
        .expect("wf");
    for (control, want) in [
        (Control::Cancel, ExecutionState::Cancelled),
        (Control::PauseNow, ExecutionState::Paused),
    ] {
        let (rec, handle) = t
            .engine
            .start(&wf.id, BTreeMap::new())
            .await
            .expect("start");
        t.engine.control(&rec.id, control).await.expect("control");
        assert_eq!(handle.await.expect("runner").state, want);
    }

    let all = t.engine.store().workflow_stats(None).await.expect("stats");
    let names: Vec<&str> = all.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let alpha = &all[0];
    assert_eq!(alpha.runs, 4);
    assert_eq!(
        alpha.by_state,
        BTreeMap::from([("completed".to_owned(), 3), ("failed".to_owned(), 1)])
    );
    assert_eq!(alpha.active, 0);
    assert_eq!(alpha.success_rate, Some(75.0));
    let mut ids = alpha.workflow_ids.clone();
    ids.sort();
    let mut want_ids = vec![v1.clone(), v2.clone(), bad.clone()];
    want_ids.sort();
    assert_eq!(ids, want_ids);
    let (durations, tin, tout, cost) =
        expected(&t, &[v1.as_str(), v2.as_str(), bad.as_str()]).await;
    assert_eq!(durations.len(), 3);
    assert_eq!(alpha.p50_duration_ms, Some(durations[1]));
    assert_eq!(alpha.p95_duration_ms, Some(durations[2]));
    assert!(tin > 0 && tout > 0);
    assert_eq!((alpha.tokens_in, alpha.tokens_out), (tin, tout));
    assert!(
        (alpha.cost_usd - cost).abs() < 1e-9 && cost > 0.0,
        "{} vs {cost}",
        alpha.cost_usd
    );

    let beta = &all[1];
    assert_eq!(beta.runs, 2);
    assert_eq!(
        beta.by_state,
        BTreeMap::from([("cancelled".to_owned(), 1), ("paused".to_owned(), 1)])
    );
    assert_eq!(beta.active, 1, "the paused run is active");
    assert_eq!(beta.success_rate, None, "no run completed or failed");
    assert_eq!((beta.p50_duration_ms, beta.p95_duration_ms), (None, None));

    // One name, or one stored version by its id.
    let only: Vec<WorkflowStats> = t
        .engine
        .store()
        .workflow_stats(Some("beta"))
        .await
        .expect("beta");
    assert_eq!(only, vec![beta.clone()]);
    let one = t
        .engine
        .store()
        .workflow_stats(Some(v2.as_str()))
        .await
        .expect("v2");
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0].runs, one[0].workflow_ids.clone()),
        (1, vec![v2.clone()])
    );
    assert!(
        t.engine
            .store()
            .workflow_stats(Some("nope"))
            .await
            .expect("none")
            .is_empty()
    );
}

crate::on_both_backends!(stats_count_known_runs);

#[test]
fn nearest_rank_percentiles() {
    assert_eq!(percentile(&[], 50), None);
    assert_eq!(percentile(&[7], 95), Some(7));
    let v: Vec<u64> = (1..=20).collect();
    assert_eq!(percentile(&v, 50), Some(10));
    assert_eq!(percentile(&v, 95), Some(19));
    assert_eq!(percentile(&v, 100), Some(20));
}
