//! Cost control on the server: a step's own model settings reach the provider
//! and show in status and events; a budget pauses a run before the attempt
//! that would pass it, and raising it lets the run finish, charging nothing twice.

use super::common::{Backend, TestEngine, engine};
use ax_core::{Budget, ExecutionState};
use ax_server::engine::RunOptions;
use ax_server::store::{self, Control};
use std::collections::BTreeMap;

async fn start(t: &TestEngine, yaml: &str, options: RunOptions) -> (String, ExecutionState) {
    let wf = t
        .engine
        .create_workflow(yaml.to_owned(), Some("t.yaml".into()))
        .await
        .expect("valid workflow");
    let (rec, handle) = t
        .engine
        .start_with(&wf.id, BTreeMap::new(), options)
        .await
        .expect("starts");
    let end = handle.await.expect("runner");
    (rec.id, end.state)
}

async fn events(t: &TestEngine, id: &str) -> Vec<store::EventRecord> {
    t.engine
        .store()
        .events_after(id, 0, 1000)
        .await
        .expect("events")
}

async fn step_settings_reach_the_provider(b: Backend) {
    let t = engine(b).await;
    let yaml = r#"
name: pinned
steps:
  - {key: plain, agent: backend, prompt: plain}
  - key: pinned
    agent: backend
    prompt: pinned
    model: fake-2
    temperature: 0.25
    maxTokens: 321
    system: Be terse.
"#;
    let (id, state) = start(&t, yaml, RunOptions::default()).await;
    assert_eq!(state, ExecutionState::Completed);
    let bodies = t.fake.bodies.lock().expect("lock").clone();
    let body = |p: &str| {
        bodies
            .iter()
            .find(|b| b["messages"].to_string().contains(p))
            .cloned()
            .expect("called")
    };
    let pinned = body("\"pinned\"");
    assert_eq!(pinned["model"], "fake-2");
    assert_eq!(pinned["temperature"], 0.25);
    assert_eq!(pinned["max_tokens"], 321);
    assert_eq!(pinned["messages"][0]["role"], "system");
    assert_eq!(pinned["messages"][0]["content"], "Be terse.");
    let plain = body("\"plain\"");
    assert_eq!(plain["model"], "fake-1");
    assert_ne!(plain["max_tokens"], 321);
    // Status shows the settings and the model that answered.
    let steps = t
        .engine
        .store()
        .execution_steps(&id, false)
        .await
        .expect("steps");
    let s = steps.iter().find(|s| s.key == "pinned").expect("pinned");
    assert_eq!(s.model.as_deref(), Some("fake-2"));
    let settings = s.settings.as_ref().expect("settings");
    assert_eq!(settings.model.as_deref(), Some("fake-2"));
    assert_eq!(settings.max_tokens, Some(321));
    assert!(
        steps
            .iter()
            .any(|s| s.key == "plain" && s.settings.is_none())
    );
    // The attempt's `running` event carries them.
    let ev = events(&t, &id).await;
    let running = ev
        .iter()
        .find(|e| e.step.as_deref() == Some("pinned") && e.state.as_deref() == Some("running"))
        .expect("running event");
    let data = running.data.as_ref().expect("data");
    assert_eq!(data["settings"]["model"], "fake-2");
    assert_eq!(data["settings"]["temperature"], 0.25);
}

/// Each answer of the fake is 11 tokens in and 7 out (18), at $1 and $2 per
/// million; an attempt of these steps may use 1 + 10 tokens at most (a prompt of 2
/// bytes; agent `tester` is not in the agents file: no system prompt).
const CHAIN: &str = r#"
name: chain
config:
  budget: {tokens: 40}
steps:
  - {key: a, agent: tester, prompt: aa, maxTokens: 10}
  - {key: b, agent: tester, prompt: bb, maxTokens: 10, dependencies: [a]}
  - {key: c, agent: tester, prompt: cc, maxTokens: 10, dependencies: [b]}
"#;

async fn budget_pauses_before_the_attempt_that_would_pass_it(b: Backend) {
    let t = engine(b).await;
    // a: 0 + 11 <= 40; b: 18 + 11 <= 40; c: 36 + 11 > 40: paused before c.
    let (id, state) = start(&t, CHAIN, RunOptions::default()).await;
    let rec = t.engine.execution(&id).await.expect("rec");
    let reason = rec.reason.clone().unwrap_or_default();
    assert_eq!(state, ExecutionState::Paused);
    assert_eq!(t.fake.calls(), 2, "{reason}");
    assert!(
        reason.starts_with("budget: the next attempt of `c`"),
        "{reason}"
    );
    let ev = events(&t, &id).await;
    let paused = ev
        .iter()
        .find(|e| e.kind == "execution" && e.state.as_deref() == Some("paused"))
        .expect("paused event");
    let data = paused.data.as_ref().expect("data");
    assert_eq!(data["reason"], "budget");
    assert_eq!(data["spent"]["tokens"], 36);
    assert_eq!(data["budget"]["tokens"], 40);
    // Resuming without more budget pauses again, calling nothing.
    let (_, handle) = t
        .engine
        .control(&id, Control::Resume)
        .await
        .expect("resume");
    let end = handle.expect("driven here").await.expect("runner");
    assert_eq!(end.state, ExecutionState::Paused);
    assert_eq!(t.fake.calls(), 2);
    // Raised: c runs, a and b are not asked again.
    t.engine
        .set_budget(
            &id,
            Budget {
                usd: None,
                tokens: Some(100),
            },
        )
        .await
        .expect("budget");
    let (_, handle) = t
        .engine
        .control(&id, Control::Resume)
        .await
        .expect("resume");
    let end = handle.expect("driven here").await.expect("runner");
    assert_eq!(end.state, ExecutionState::Completed);
    assert_eq!(t.fake.calls(), 3);
    for p in ["aa", "bb", "cc"] {
        assert_eq!(t.fake.calls_exact(p), 1, "{p}");
    }
    let steps = t
        .engine
        .store()
        .execution_steps(&id, false)
        .await
        .expect("steps");
    let tokens: u64 = steps.iter().map(|s| s.tokens_in + s.tokens_out).sum();
    assert_eq!(tokens, 54);
    let rec = t.engine.execution(&id).await.expect("rec");
    assert_eq!(rec.budget.tokens, Some(100));
}

/// In dollars: the price table bounds each attempt; a run that could pass the
/// budget never starts the attempt, and a model without a price is refused.
async fn usd_budget_counts_the_price_table(b: Backend) {
    let t = engine(b).await;
    let yaml = CHAIN.replace("budget: {tokens: 40}", "budget: {usd: 0.00008}");
    // Worst case per attempt: 1 token at $1/M + 10 at $2/M = $0.000021; each
    // answer costs $0.000025. a: 0.000021; b: 0.000046; c: 0.000071 <= 0.00008.
    let (_, state) = start(&t, &yaml, RunOptions::default()).await;
    assert_eq!(state, ExecutionState::Completed);
    // The run's own budget is lower than the file's: paused before b.
    let low = RunOptions {
        budget: Budget {
            usd: Some(0.00004),
            tokens: None,
        },
        ..RunOptions::default()
    };
    let (id, state) = start(&t, &yaml, low).await;
    assert_eq!(state, ExecutionState::Paused);
    let reason = t.engine.execution(&id).await.expect("rec").reason;
    assert!(
        reason
            .as_deref()
            .unwrap_or("")
            .contains("next attempt of `b`"),
        "{reason:?}"
    );
    // An unpriced model cannot be bounded in dollars.
    let unpriced = yaml.replace("prompt: aa,", "prompt: aa, model: no-price,");
    let (id, state) = start(&t, &unpriced, RunOptions::default()).await;
    assert_eq!(state, ExecutionState::Paused);
    let reason = t.engine.execution(&id).await.expect("rec").reason;
    assert!(
        reason.as_deref().unwrap_or("").contains("without a price"),
        "{reason:?}"
    );
}

const CACHED: &str = r#"
name: cached
config: {cache: true}
steps:
  - {key: a, agent: tester, prompt: "first"}
  - {key: b, agent: tester, prompt: "second {{a.result}}", dependencies: [a]}
"#;

/// A second run of the same workflow makes no provider calls; its answers are
/// recorded as cached (cost 0, the original tokens kept); another model or
/// prompt misses.
async fn a_second_run_is_answered_from_the_cache(b: Backend) {
    let t = engine(b).await;
    let (first, state) = start(&t, CACHED, RunOptions::default()).await;
    assert_eq!(state, ExecutionState::Completed);
    assert_eq!(t.fake.calls(), 2);
    let (second, state) = start(&t, CACHED, RunOptions::default()).await;
    assert_eq!(state, ExecutionState::Completed);
    assert_eq!(t.fake.calls(), 2, "no call on the second run");
    let steps = |id: String| {
        let store = t.engine.store().clone();
        async move { store.execution_steps(&id, true).await.expect("steps") }
    };
    let (one, two) = (steps(first).await, steps(second.clone()).await);
    for (x, y) in one.iter().zip(&two) {
        assert_eq!(x.output, y.output);
        assert_eq!(y.provider.as_deref(), Some("cache"));
        assert_eq!(y.model.as_deref(), Some("fake-1"));
        assert_eq!((y.tokens_in, y.tokens_out), (11, 7));
        assert_eq!(y.cost_usd, Some(0.0));
    }
    let ev = events(&t, &second).await;
    assert!(ev.iter().any(|e| e.state.as_deref() == Some("completed")
        && e.data.as_ref().is_some_and(|d| d["cached"] == true)));
    // A log line says which provider first gave the answer, and when (UTC).
    let note = ev
        .iter()
        .filter_map(|e| e.message.as_deref())
        .find(|m| m.starts_with("answered from the response cache"))
        .expect("a note about the cache");
    assert!(
        note.contains("(first answered by fake / fake-1 at 20") && note.ends_with("Z)"),
        "{note}"
    );
    // Another prompt, another model: misses (b's prompt changes with a's answer).
    let other = CACHED.replace("prompt: \"first\"", "prompt: \"first!\"");
    start(&t, &other, RunOptions::default()).await;
    assert_eq!(t.fake.calls(), 4);
    let model = CACHED.replace(
        "agent: tester, prompt: \"first\"",
        "agent: tester, model: fake-9, prompt: \"first\"",
    );
    start(&t, &model, RunOptions::default()).await;
    assert_eq!(
        t.fake.calls(),
        5,
        "a misses; b's prompt is a's answer, as before"
    );
    let stats = t.engine.store().cache_stats().await.expect("stats");
    assert_eq!((stats.entries, stats.hits), (5, 3));
}

/// `--cache` (the run's option) turns the cache on for steps that say
/// nothing; `cache: false` keeps a step out.
async fn run_option_and_step_opt_out(b: Backend) {
    let t = engine(b).await;
    let yaml = "name: opt\nsteps:\n  - {key: a, agent: tester, prompt: one}\n  - {key: b, agent: tester, prompt: two, cache: false}\n";
    let on = RunOptions {
        cache: true,
        ..RunOptions::default()
    };
    start(&t, yaml, RunOptions::default()).await;
    start(&t, yaml, on).await;
    start(&t, yaml, on).await;
    // a: called by the first run (no cache), kept by the second, hit by the third.
    assert_eq!(t.fake.calls_exact("one"), 2);
    assert_eq!(t.fake.calls_exact("two"), 3);
}

/// The cache's store methods: a hit counts, an old answer is not used under
/// a ttl, stats add up, clear removes by age.
async fn cache_store_keeps_counts_and_clears_by_age(b: Backend) {
    let t = engine(b).await;
    let store = t.engine.store();
    let answer = |key: &str, at: u64| store::CachedAnswer {
        key: key.into(),
        output: "héllo".into(),
        provider: "fake".into(),
        model: "fake-1".into(),
        tokens_in: 3,
        tokens_out: 4,
        cost_usd: Some(0.5),
        created_at: at,
    };
    store.cache_put(answer("k1", 1_000)).await.expect("put");
    store.cache_put(answer("k2", 5_000)).await.expect("put");
    assert!(
        store
            .cache_get("nope", 6_000, None)
            .await
            .expect("get")
            .is_none()
    );
    let hit = store.cache_get("k1", 6_000, None).await.expect("get");
    assert_eq!(hit, Some(answer("k1", 1_000)));
    assert!(
        store
            .cache_get("k1", 6_000, Some(2_000))
            .await
            .expect("get")
            .is_none(),
        "too old"
    );
    assert!(
        store
            .cache_get("k2", 6_000, Some(2_000))
            .await
            .expect("get")
            .is_some()
    );
    let s = store.cache_stats().await.expect("stats");
    assert_eq!((s.entries, s.bytes, s.hits), (2, 12, 2));
    assert!((s.saved_usd - 1.0).abs() < 1e-9);
    assert_eq!((s.oldest_at, s.newest_at), (Some(1_000), Some(5_000)));
    assert_eq!(store.cache_clear(Some(2_000)).await.expect("clear"), 1);
    assert_eq!(store.cache_clear(None).await.expect("clear"), 1);
    assert_eq!(store.cache_stats().await.expect("stats").entries, 0);
}

crate::on_both_backends!(
    step_settings_reach_the_provider,
    budget_pauses_before_the_attempt_that_would_pass_it,
    usd_budget_counts_the_price_table,
    a_second_run_is_answered_from_the_cache,
    run_option_and_step_opt_out,
    cache_store_keeps_counts_and_clears_by_age,
);
