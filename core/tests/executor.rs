//! The executor's behaviour, driven in virtual time: scheduling, retries,
//! failures, conditions, timeouts, control, checkpoints.

use ax_core::exec::{AbortReason, Action, Event, Execution, Rate, Spend, StepError};
use ax_core::sim::{Reply, Simulator};
use ax_core::{Budget, Checkpoint, ErrorClass, ExecutionState, Plan, ProviderRetry, StepState};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn plan(yaml: &str) -> Arc<Plan> {
    match Plan::from_text(yaml, Some("t.yaml")) {
        Ok(p) => p,
        Err(r) => panic!("invalid test workflow: {:?}", r.errors),
    }
}

fn exec(yaml: &str) -> Execution {
    Execution::new(plan(yaml), BTreeMap::new(), 7).expect("execution")
}

fn ok(ms: u64, out: &str) -> Reply {
    Reply::Succeed {
        after_ms: ms,
        output: out.to_owned(),
    }
}

fn fail(ms: u64, class: ErrorClass) -> Reply {
    Reply::Fail {
        after_ms: ms,
        error: StepError::new(class, format!("simulated {class}")),
    }
}

fn state_of(e: &Execution, key: &str) -> StepState {
    e.step(key).map(|s| s.state).unwrap_or(StepState::Pending)
}

const FAN: &str = r#"
name: fan
config: {parallelism: 2}
steps:
  - {key: root, agent: a, prompt: start}
  - {key: b1, agent: a, prompt: "one {{root.result}}", dependencies: [root]}
  - {key: b2, agent: a, prompt: "two {{root.result}}", dependencies: [root]}
  - {key: b3, agent: a, prompt: "three {{root.result}}", dependencies: [root]}
  - {key: join, agent: a, prompt: "{{b1.result}}|{{b2.result}}|{{b3.result}}", dependencies: [b1, b2, b3]}
"#;

#[test]
fn fan_out_fan_in_respects_dependencies_and_parallelism() {
    let mut sim = Simulator::new(exec(FAN), 1000, |s| ok(10, &format!("<{}>", s.key)));
    assert_eq!(sim.run(1000), Ok(ExecutionState::Completed));
    let starts = sim.starts();
    let keys: Vec<&str> = starts.iter().map(|(_, s)| s.key.as_str()).collect();
    assert_eq!(keys, ["root", "b1", "b2", "b3", "join"]);
    // root at 1000; b1, b2 at 1010 (cap 2); b3 when one finishes; join last.
    let times: Vec<u64> = starts.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [1000, 1010, 1010, 1020, 1030]);
    assert_eq!(starts[4].1.prompt, "<b1>|<b2>|<b3>");
    assert_eq!(starts[1].1.prompt, "one <root>");
    // Never more than 2 in flight.
    let mut running = 0i32;
    let mut peak = 0;
    for (_, a) in &sim.log {
        match a {
            Action::StepChanged {
                state: StepState::Running,
                ..
            } => running += 1,
            Action::StepChanged {
                state: StepState::Completed | StepState::Failed | StepState::WaitingRetry,
                ..
            } => running -= 1,
            _ => {}
        }
        peak = peak.max(running);
    }
    assert_eq!(peak, 2);
}

#[test]
fn retries_with_backoff_then_succeeds() {
    let yaml = r#"
name: r
steps:
  - key: flaky
    agent: a
    prompt: go
    retryPolicy: {maxRetries: 3, retryDelayMs: 100, retryBackoffMultiplier: 2}
"#;
    let mut calls = 0;
    let mut sim = Simulator::new(exec(yaml), 0, |_| {
        calls += 1;
        if calls < 3 {
            fail(5, ErrorClass::RateLimit)
        } else {
            ok(5, "done")
        }
    });
    assert_eq!(sim.run(1000), Ok(ExecutionState::Completed));
    let starts = sim.starts();
    assert_eq!(starts.len(), 3);
    assert_eq!(
        starts.iter().map(|(_, s)| s.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Delays: 100·2^0 ±20 %, then 100·2^1 ±20 %.
    let d1 = starts[1].0 - 5;
    let d2 = starts[2].0 - starts[1].0 - 5;
    assert!((80..=120).contains(&d1), "first delay {d1}");
    assert!((160..=240).contains(&d2), "second delay {d2}");
    let s = sim.exec.step("flaky").expect("step");
    assert_eq!((s.attempt, s.failures), (3, 2));
}

#[test]
fn jitter_is_deterministic_per_seed() {
    let yaml = "name: j\nsteps:\n  - {key: a, agent: a, prompt: p, retryPolicy: {maxRetries: 5, retryDelayMs: 1000}}\n";
    let e1 = Execution::new(plan(yaml), BTreeMap::new(), 1).expect("e");
    let e2 = Execution::new(plan(yaml), BTreeMap::new(), 1).expect("e");
    let e3 = Execution::new(plan(yaml), BTreeMap::new(), 2).expect("e");
    let d = |e: &Execution| {
        (1..=5)
            .map(|n| e.retry_delay(0, n, None))
            .collect::<Vec<_>>()
    };
    assert_eq!(d(&e1), d(&e2));
    assert_ne!(d(&e1), d(&e3));
    // retry-after wins when longer.
    assert_eq!(e1.retry_delay(0, 1, Some(60_000)), 60_000);
}

#[test]
fn retries_exhausted_fails_the_run_and_cancels_in_flight() {
    let yaml = r#"
name: x
config: {maxRetries: 1}
steps:
  - {key: bad, agent: a, prompt: p}
  - {key: slow, agent: a, prompt: p}
  - {key: after, agent: a, prompt: p, dependencies: [slow]}
"#;
    let mut sim = Simulator::new(exec(yaml), 0, |s| {
        if s.key == "bad" {
            fail(10, ErrorClass::ServerError)
        } else {
            ok(10_000, "x")
        }
    });
    assert_eq!(sim.run(1000), Ok(ExecutionState::Failed));
    let e = &sim.exec;
    assert_eq!(state_of(e, "bad"), StepState::Failed);
    assert_eq!(state_of(e, "slow"), StepState::Cancelled);
    assert_eq!(state_of(e, "after"), StepState::Pending);
    assert!(
        e.reason().unwrap_or("").contains("step `bad` failed"),
        "{:?}",
        e.reason()
    );
    assert!(sim.log.iter().any(|(_, a)| matches!(a, Action::AbortStep { key, reason: AbortReason::RunFailed, .. } if key == "slow")));
    // config.maxRetries (1) and the provider's default retries of a transient
    // failure (2) combine: the larger count applies.
    assert_eq!(e.step("bad").map(|s| s.attempt), Some(3));
}

#[test]
fn transient_failures_without_a_policy_get_the_providers_retries() {
    let yaml = "name: p\nsteps:\n  - {key: a, agent: a, prompt: p}\n";
    let with = |retry: Option<ProviderRetry>, class: ErrorClass| {
        let mut calls = 0;
        let mut sim = Simulator::new(exec(yaml), 0, move |_| {
            calls += 1;
            let mut error = StepError::new(class, "simulated");
            error.provider_retry = retry;
            if calls <= 2 {
                Reply::Fail { after_ms: 5, error }
            } else {
                ok(5, "done")
            }
        });
        let end = sim.run(100_000);
        (end, sim)
    };
    // The SDK defaults: 2 retries, 0.5 s then 1 s, less up to 25 %.
    let (end, sim) = with(None, ErrorClass::RateLimit);
    assert_eq!(end, Ok(ExecutionState::Completed));
    let starts = sim.starts();
    assert_eq!(starts.len(), 3);
    let d1 = starts[1].0 - starts[0].0 - 5;
    let d2 = starts[2].0 - starts[1].0 - 5;
    assert!((375..=500).contains(&d1), "{d1}");
    assert!((750..=1000).contains(&d2), "{d2}");
    let reasons: Vec<&str> = sim
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::StepChanged {
                state: StepState::WaitingRetry,
                reason: Some(r),
                ..
            } => Some(r.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons[0].starts_with("retry 1 of 2 in "), "{reasons:?}");
    // The provider's own settings, passed with the failure.
    let none = ProviderRetry {
        max_retries: 0,
        ..ProviderRetry::DEFAULT
    };
    let (end, sim) = with(Some(none), ErrorClass::Overloaded);
    assert_eq!(end, Ok(ExecutionState::Failed));
    assert_eq!(sim.starts().len(), 1);
    // Never for what retrying cannot fix.
    let (end, sim) = with(None, ErrorClass::Truncated);
    assert_eq!(end, Ok(ExecutionState::Failed));
    assert_eq!(sim.starts().len(), 1);
    assert_eq!(
        sim.exec.step("a").and_then(|s| s.reason.clone()).as_deref(),
        Some("truncated errors are not retried")
    );
    // The settings are an input, never recorded: a checkpoint's error has none,
    // and the run restores as it was.
    let (_, mut sim) = with(Some(none), ErrorClass::Overloaded);
    let cp = sim.exec.snapshot();
    let err = cp.steps["a"].error.as_ref().expect("the error is kept");
    assert_eq!(err.provider_retry, None);
    assert!(
        !serde_json::to_string(&cp)
            .expect("json")
            .contains("maxRetries")
    );
}

#[test]
fn for_each_items_get_the_providers_retries_each_with_its_own_jitter() {
    let yaml =
        "name: m\nsteps:\n  - {key: each, agent: w, forEach: [a, b], prompt: \"{{item}}\"}\n";
    let mut tries: BTreeMap<String, u32> = BTreeMap::new();
    let mut sim = Simulator::new(exec(yaml), 0, move |s| {
        let n = tries.entry(s.prompt.clone()).or_default();
        *n += 1;
        if *n <= 2 {
            fail(5, ErrorClass::Overloaded)
        } else {
            ok(5, &s.prompt)
        }
    });
    assert_eq!(sim.run(1000), Ok(ExecutionState::Completed));
    let items = sim
        .exec
        .step("each")
        .and_then(|s| s.items.clone())
        .expect("items");
    assert!(items.runs.iter().all(|r| r.failures == 2));
    // The two items failed together and do not retry in lockstep (attempt
    // numbers count across the step's items: 3 and 4 are the first retries).
    let second: Vec<u64> = sim
        .starts()
        .iter()
        .filter(|(_, s)| (3..=4).contains(&s.attempt))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(second.len(), 2);
    assert_ne!(second[0], second[1]);
}

#[test]
fn non_retryable_errors_fail_at_once() {
    let yaml = "name: x\nsteps:\n  - {key: a, agent: a, prompt: p, retryPolicy: {maxRetries: 5}}\n";
    let mut sim = Simulator::new(exec(yaml), 0, |_| fail(1, ErrorClass::Auth));
    assert_eq!(sim.run(100), Ok(ExecutionState::Failed));
    assert_eq!(sim.starts().len(), 1);
    // A policy can make any class retryable, or restrict the defaults.
    let yaml = "name: x\nsteps:\n  - {key: a, agent: a, prompt: p, retryPolicy: {maxRetries: 2, retryDelayMs: 1, retryableErrors: [auth]}}\n";
    let mut sim = Simulator::new(exec(yaml), 0, |_| fail(1, ErrorClass::Auth));
    assert_eq!(sim.run(100), Ok(ExecutionState::Failed));
    assert_eq!(sim.starts().len(), 3);
}

#[test]
fn optional_failure_does_not_fail_the_run() {
    let yaml = r#"
name: x
steps:
  - {key: extra, agent: a, prompt: p, optional: true}
  - {key: main, agent: a, prompt: p}
  - {key: needs-extra, agent: a, prompt: "{{extra.result}}", dependencies: [extra]}
  - {key: tolerant, agent: a, prompt: "{{extra.result ?? \"none\"}} and {{main.result}}", dependencies: [extra, main], optional: true}
"#;
    let mut sim = Simulator::new(exec(yaml), 0, |s| {
        if s.key == "extra" {
            fail(1, ErrorClass::Auth)
        } else {
            ok(1, "ok")
        }
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    let e = &sim.exec;
    assert_eq!(state_of(e, "extra"), StepState::Failed);
    assert_eq!(state_of(e, "needs-extra"), StepState::Skipped);
    assert_eq!(
        e.step("needs-extra")
            .and_then(|s| s.reason.clone())
            .as_deref(),
        Some("dependency `extra` failed")
    );
    // The optional consumer ran with its fallback.
    assert_eq!(state_of(e, "tolerant"), StepState::Completed);
    let prompt = sim
        .starts()
        .into_iter()
        .find(|(_, s)| s.key == "tolerant")
        .map(|(_, s)| s.prompt);
    assert_eq!(prompt.as_deref(), Some("none and ok"));
}

#[test]
fn continue_on_error_runs_independent_branches_then_fails() {
    let yaml = r#"
name: x
config: {continueOnError: true}
steps:
  - {key: a, agent: a, prompt: p}
  - {key: a2, agent: a, prompt: p, dependencies: [a]}
  - {key: b, agent: a, prompt: p}
  - {key: b2, agent: a, prompt: p, dependencies: [b]}
"#;
    let mut sim = Simulator::new(exec(yaml), 0, |s| {
        if s.key == "a" {
            fail(1, ErrorClass::InvalidRequest)
        } else {
            ok(5, "ok")
        }
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Failed));
    let e = &sim.exec;
    assert_eq!(state_of(e, "a2"), StepState::Skipped);
    assert_eq!(state_of(e, "b2"), StepState::Completed);
    assert_eq!(e.reason(), Some("required step failed: a"));
}

#[test]
fn when_false_skips_and_propagates() {
    let yaml = r#"
name: x
steps:
  - key: audit
    agent: security
    prompt: audit
    outputSchema: {type: object, required: [severity], properties: {severity: {enum: [low, high]}}}
  - {key: escalate, agent: a, prompt: "page someone", dependencies: [audit], when: '{{audit.result.severity}} == "high"'}
  - {key: notify, agent: a, prompt: "{{escalate.result}}", dependencies: [escalate]}
  - {key: summary, agent: a, prompt: "{{audit.result.severity}}", dependencies: [audit]}
"#;
    let mut sim = Simulator::new(exec(yaml), 0, |s| {
        ok(
            1,
            if s.key == "audit" {
                "```json\n{\"severity\": \"low\"}\n```"
            } else {
                "ok"
            },
        )
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    let e = &sim.exec;
    assert_eq!(state_of(e, "escalate"), StepState::Skipped);
    assert!(e.step("escalate").is_some_and(|s| s.skipped_by_condition));
    assert_eq!(state_of(e, "notify"), StepState::Skipped);
    assert_eq!(state_of(e, "summary"), StepState::Completed);
    let prompt = sim
        .starts()
        .into_iter()
        .find(|(_, s)| s.key == "summary")
        .map(|(_, s)| s.prompt);
    assert_eq!(prompt.as_deref(), Some("low"));
}

#[test]
fn condition_errors_fail_the_step_clearly() {
    let yaml = r#"
name: x
steps:
  - {key: a, agent: a, prompt: p}
  - {key: b, agent: a, prompt: p, dependencies: [a], when: '{{a.result.level}} > 3'}
"#;
    let mut sim = Simulator::new(exec(yaml), 0, |_| ok(1, "not json"));
    assert_eq!(sim.run(100), Ok(ExecutionState::Failed));
    let err = sim
        .exec
        .step("b")
        .and_then(|s| s.error.clone())
        .expect("error");
    assert_eq!(err.class, ErrorClass::Template);
    assert!(err.message.contains("not JSON"), "{}", err.message);
}

#[test]
fn output_schema_failures_retry_with_feedback() {
    let yaml = r#"
name: x
steps:
  - key: a
    agent: a
    prompt: give json
    retryPolicy: {maxRetries: 2, retryDelayMs: 10}
    outputSchema: {type: object, required: [ok]}
"#;
    let mut n = 0;
    let mut sim = Simulator::new(exec(yaml), 0, |_| {
        n += 1;
        match n {
            1 => ok(1, "sure! here it is"),
            2 => ok(1, "{\"nope\": 1}"),
            _ => ok(1, "{\"ok\": true}"),
        }
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    let starts = sim.starts();
    assert_eq!(starts.len(), 3);
    assert!(
        starts[1].1.prompt.contains("not JSON"),
        "{}",
        starts[1].1.prompt
    );
    assert!(
        starts[2].1.prompt.contains("`ok` is required"),
        "{}",
        starts[2].1.prompt
    );
}

#[test]
fn step_timeout_aborts_and_retries() {
    let yaml = "name: x\nsteps:\n  - {key: a, agent: a, prompt: p, timeoutMs: 50, retryPolicy: {maxRetries: 1, retryDelayMs: 10}}\n";
    let mut n = 0;
    let mut sim = Simulator::new(exec(yaml), 0, |_| {
        n += 1;
        if n == 1 { Reply::Hang } else { ok(5, "fast") }
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    assert!(sim.log.iter().any(|(t, a)| *t == 50
        && matches!(
            a,
            Action::AbortStep {
                reason: AbortReason::Timeout,
                ..
            }
        )));
    let s = sim.exec.step("a").expect("a");
    assert_eq!((s.attempt, s.failures), (2, 1));
}

#[test]
fn run_timeout_excludes_paused_time() {
    let yaml = "name: x\nconfig: {timeout: 100}\nsteps:\n  - {key: a, agent: a, prompt: p}\n  - {key: b, agent: a, prompt: p, dependencies: [a]}\n";
    // Pause for a long time in the middle: the run still has budget afterwards.
    let mut sim = Simulator::new(exec(yaml), 0, |_| ok(40, "x"));
    sim.schedule(10, Event::Pause { immediate: false });
    sim.schedule(10_000, Event::Resume);
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    // Without pauses, slow steps exceed it.
    let mut sim = Simulator::new(exec(yaml), 0, |_| ok(70, "x"));
    assert_eq!(sim.run(100), Ok(ExecutionState::Failed));
    assert_eq!(sim.exec.reason(), Some("the run timed out after 100 ms"));
    assert_eq!(sim.exec.finished_at(), Some(100));
}

#[test]
fn graceful_pause_lets_in_flight_finish_then_checkpoints() {
    let mut sim = Simulator::new(exec(FAN), 0, |_| ok(10, "x"));
    sim.schedule(15, Event::Pause { immediate: false });
    let state = sim.run(1000).expect("runs");
    assert_eq!(state, ExecutionState::Paused);
    let e = &sim.exec;
    // b1 and b2 were in flight at 15 and finished; nothing new started.
    assert_eq!(state_of(e, "b1"), StepState::Completed);
    assert_eq!(state_of(e, "b2"), StepState::Completed);
    assert_eq!(state_of(e, "b3"), StepState::Ready);
    assert!(e.is_quiescent());
    let last_cp = sim
        .log
        .iter()
        .rev()
        .find(|(_, a)| matches!(a, Action::Checkpoint))
        .map(|(t, _)| *t);
    assert_eq!(last_cp, Some(20));
    // Resume finishes the run.
    sim.schedule(100, Event::Resume);
    assert_eq!(sim.run(1000), Ok(ExecutionState::Completed));
}

#[test]
fn immediate_pause_aborts_without_using_retries() {
    let yaml = "name: x\nsteps:\n  - {key: a, agent: a, prompt: p}\n";
    let mut sim = Simulator::new(exec(yaml), 0, |_| ok(100, "x"));
    sim.schedule(10, Event::Pause { immediate: true });
    sim.schedule(50, Event::Resume);
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    let s = sim.exec.step("a").expect("a");
    assert_eq!((s.attempt, s.failures), (2, 0));
    assert!(sim.log.iter().any(|(t, a)| *t == 10
        && matches!(
            a,
            Action::AbortStep {
                reason: AbortReason::Paused,
                ..
            }
        )));
}

#[test]
fn cancel_mid_step_aborts_everything() {
    let mut sim = Simulator::new(exec(FAN), 0, |_| ok(10, "x"));
    sim.schedule(
        15,
        Event::Cancel {
            reason: Some("user asked".into()),
        },
    );
    assert_eq!(sim.run(1000), Ok(ExecutionState::Cancelled));
    let e = &sim.exec;
    assert_eq!(state_of(e, "root"), StepState::Completed);
    for k in ["b1", "b2", "b3", "join"] {
        assert_eq!(state_of(e, k), StepState::Cancelled, "{k}");
    }
    assert_eq!(
        sim.log
            .iter()
            .filter(|(_, a)| matches!(
                a,
                Action::AbortStep {
                    reason: AbortReason::Cancelled,
                    ..
                }
            ))
            .count(),
        2
    );
    assert!(matches!(
        sim.log.last(),
        Some((_, Action::WakeAt { .. } | Action::Finished { .. }))
    ));
    // Results arriving after the cancel are stale.
    let mut e = sim.exec.clone();
    let err = e.handle(
        Event::StepSucceeded {
            key: "b1".into(),
            attempt: 1,
            output: "late".into(),
        },
        20,
    );
    assert!(err.is_err());
    assert!(e.handle(Event::Resume, 30).is_err());
}

#[test]
fn resume_after_failure_reruns_only_what_failed() {
    let yaml = r#"
name: x
steps:
  - {key: a, agent: a, prompt: p}
  - {key: b, agent: a, prompt: "{{a.result}}", dependencies: [a]}
  - {key: c, agent: a, prompt: "{{b.result}}", dependencies: [b]}
"#;
    let mut broken = true;
    let mut sim = Simulator::new(exec(yaml), 0, move |s| {
        if s.key == "b" && broken {
            broken = false;
            fail(1, ErrorClass::InvalidRequest)
        } else {
            ok(1, &format!("{}!", s.key))
        }
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Failed));
    sim.schedule(sim.now + 5, Event::Resume);
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    let keys: Vec<String> = sim.starts().into_iter().map(|(_, s)| s.key).collect();
    assert_eq!(keys, ["a", "b", "b", "c"]);
}

#[test]
fn checkpoints_restore_identically_and_deltas_fold() {
    let mut sim = Simulator::new(exec(FAN), 0, |s| ok(10, &format!("<{}>", s.key)));
    sim.feed(Event::Start).expect("start");
    let mut base = sim.exec.snapshot();
    let mut steps = 0;
    while !sim.exec.state().is_terminal() && steps < 50 {
        steps += 1;
        sim.run(1).expect("one event");
        // A delta folded on the previous state equals a full snapshot.
        let delta = sim.exec.take_delta();
        base.apply(&delta);
        assert_eq!(base, sim.exec.peek_snapshot());
        // Round-trip through JSON and restore: identical behaviour afterwards.
        let json = base.to_json();
        let cp = Checkpoint::from_json(&json).expect("parses");
        let outputs = sim.exec.outputs();
        let (restored, compat) =
            Execution::restore(sim.exec.plan().clone(), &cp, &|h| outputs.get(h).cloned())
                .expect("restores");
        assert!(compat.same_definition);
        let mut a = sim.exec.clone();
        let mut b = restored;
        for ev in [Event::Tick, Event::Pause { immediate: true }, Event::Resume] {
            assert_eq!(a.handle(ev.clone(), sim.now + 1), b.handle(ev, sim.now + 1));
        }
    }
    assert_eq!(sim.exec.state(), ExecutionState::Completed);
}

#[test]
fn checkpoints_are_small_and_refer_to_outputs() {
    let big = "x".repeat(10_000);
    let mut sim = Simulator::new(exec(FAN), 0, |_| ok(1, &big));
    sim.run(1000).expect("runs");
    let cp = sim.exec.snapshot();
    let json = cp.to_json();
    assert!(json.len() < 4_000, "{} bytes", json.len());
    assert!(!json.contains("xxxxxxxxxx"));
    assert_eq!(cp.output_hashes().len(), 1);
    assert_eq!(cp.completed_steps().len(), 5);
    // Missing outputs are reported, not invented.
    let err = Execution::restore(sim.exec.plan().clone(), &cp, &|_| None)
        .err()
        .map(|e| e.to_string());
    assert!(err.unwrap_or_default().contains("needs the output of step"));
}

#[test]
fn restore_against_an_edited_definition_reruns_changed_steps_and_descendants() {
    let mut sim = Simulator::new(exec(FAN), 0, |s| ok(1, &format!("<{}>", s.key)));
    assert_eq!(sim.run(1000), Ok(ExecutionState::Completed));
    let cp = sim.exec.snapshot();
    let outputs = sim.exec.outputs();
    let edited = FAN.replace("\"two {{root.result}}\"", "\"TWO {{root.result}}\"");
    let (mut e, compat) =
        Execution::restore(plan(&edited), &cp, &|h| outputs.get(h).cloned()).expect("restores");
    assert!(!compat.same_definition);
    assert_eq!(compat.rerun, ["b2", "join"]);
    assert_eq!(compat.kept, ["root", "b1", "b3"]);
    assert_eq!(e.state(), ExecutionState::Interrupted);
    assert_eq!(state_of(&e, "b2"), StepState::Ready);
    assert_eq!(state_of(&e, "join"), StepState::Pending);
    let actions = e.handle(Event::Resume, 5000).expect("resume");
    let started: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::StartStep(s) => Some(s.key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["b2"]);
}

#[test]
fn interrupt_requeues_in_flight_attempts() {
    let mut sim = Simulator::new(exec(FAN), 0, |_| ok(10, "x"));
    sim.feed(Event::Start).expect("start");
    sim.run(1).expect("root done");
    let cp = sim.exec.snapshot();
    let outputs = sim.exec.outputs();
    // The process dies; a new one restores the checkpoint.
    let (mut e, _) = Execution::restore(sim.exec.plan().clone(), &cp, &|h| outputs.get(h).cloned())
        .expect("restore");
    e.interrupt(100).expect("interrupt");
    assert_eq!(e.state(), ExecutionState::Interrupted);
    assert_eq!(state_of(&e, "b1"), StepState::Ready);
    let actions = e.handle(Event::Resume, 101).expect("resume");
    let attempts: Vec<(String, u32)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::StartStep(s) => Some((s.key.clone(), s.attempt)),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [("b1".to_owned(), 2), ("b2".to_owned(), 2)]);
    assert_eq!(e.step("b1").map(|s| s.failures), Some(0));
}

#[test]
fn inputs_are_checked_and_defaulted() {
    let yaml = "name: x\ninputs:\n  topic: {description: t}\n  tone: {default: calm}\nsteps:\n  - {key: a, agent: a, prompt: \"{{topic}} {{tone}} {{extra}}\"}\n";
    let p = plan(yaml);
    let err = Execution::new(p.clone(), BTreeMap::new(), 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("`extra`, `topic`") && err.contains("--input topic="),
        "{err}"
    );
    let err = Execution::new(
        p.clone(),
        BTreeMap::from([("topc".to_owned(), json!("x"))]),
        1,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("did you mean `topic`"), "{err}");
    let inputs = BTreeMap::from([
        ("topic".to_owned(), json!("rust")),
        ("extra".to_owned(), Value::from(3)),
    ]);
    let mut sim = Simulator::new(Execution::new(p, inputs, 1).expect("ok"), 0, |_| ok(1, "x"));
    assert_eq!(sim.run(10), Ok(ExecutionState::Completed));
    assert_eq!(sim.starts()[0].1.prompt, "rust calm 3");
}

#[test]
fn illegal_control_is_an_error_not_a_panic() {
    let mut e = exec(FAN);
    assert!(e.handle(Event::Resume, 0).is_err());
    assert!(e.handle(Event::Pause { immediate: false }, 0).is_err());
    assert!(
        e.handle(
            Event::StepSucceeded {
                key: "nope".into(),
                attempt: 1,
                output: String::new()
            },
            0
        )
        .is_err()
    );
    e.handle(Event::Start, 0).expect("start");
    assert!(e.handle(Event::Start, 1).is_err());
    assert!(
        e.handle(
            Event::StepSucceeded {
                key: "b1".into(),
                attempt: 1,
                output: String::new()
            },
            1
        )
        .is_err()
    );
    assert!(
        e.handle(
            Event::StepSucceeded {
                key: "root".into(),
                attempt: 9,
                output: String::new()
            },
            1
        )
        .is_err()
    );
    // Time going backwards is clamped, not trusted.
    e.handle(Event::Tick, 0).expect("tick");
}

#[test]
fn checkpoint_interval_limits_checkpoints() {
    let yaml = "name: x\nconfig: {checkpointInterval: 1000, parallelism: 1}\nsteps:\n".to_owned()
        + &(0..10)
            .map(|i| format!("  - {{key: s{i}, agent: a, prompt: p}}\n"))
            .collect::<String>();
    let mut sim = Simulator::new(exec(&yaml), 0, |_| ok(100, "x"));
    assert_eq!(sim.run(1000), Ok(ExecutionState::Completed));
    let cps: Vec<u64> = sim
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::Checkpoint))
        .map(|(t, _)| *t)
        .collect();
    // Start, one at the interval, and the end.
    assert_eq!(cps, [0, 1000]);
    let mut sim = Simulator::new(
        exec(&yaml.replace("checkpointInterval: 1000, ", "")),
        0,
        |_| ok(100, "x"),
    );
    sim.run(1000).expect("runs");
    assert_eq!(
        sim.log
            .iter()
            .filter(|(_, a)| matches!(a, Action::Checkpoint))
            .count(),
        11
    );
}

/// A step's own model settings reach the driver with each attempt, and are part
/// of its hash: restoring after its model changed runs it (and what depends on
/// it) again; the other steps keep their results.
#[test]
fn step_model_settings_travel_with_attempts_and_change_the_hash() {
    let pinned = FAN.replace(
        "{key: b2, agent: a,",
        "{key: b2, agent: a, model: small-1, temperature: 0.2, maxTokens: 300, system: terse,",
    );
    let mut sim = Simulator::new(exec(&pinned), 0, |s| ok(1, &format!("<{}>", s.key)));
    assert_eq!(sim.run(1000), Ok(ExecutionState::Completed));
    let starts = sim.starts();
    let b2 = starts.iter().find(|(_, s)| s.key == "b2").expect("b2 ran");
    assert_eq!(b2.1.settings.model.as_deref(), Some("small-1"));
    assert_eq!(b2.1.settings.temperature, Some(0.2));
    assert_eq!(b2.1.settings.max_tokens, Some(300));
    assert_eq!(b2.1.settings.system.as_deref(), Some("terse"));
    assert!(
        starts
            .iter()
            .filter(|(_, s)| s.key != "b2")
            .all(|(_, s)| s.settings.is_empty())
    );
    let cp = sim.exec.snapshot();
    let outputs = sim.exec.outputs();
    for (edit, rerun) in [
        ("model: small-1", "model: large-2"),
        ("temperature: 0.2", "temperature: 0.3"),
        ("maxTokens: 300", "maxTokens: 301"),
        ("system: terse", "system: verbose"),
    ] {
        let edited = pinned.replace(edit, rerun);
        let (_, compat) =
            Execution::restore(plan(&edited), &cp, &|h| outputs.get(h).cloned()).expect("restores");
        assert_eq!(compat.rerun, ["b2", "join"], "{rerun}");
        assert_eq!(compat.kept, ["root", "b1", "b3"], "{rerun}");
    }
    // A workflow without them keeps the hash it had before they existed.
    assert_eq!(plan(FAN).step_hash(0), plan(&pinned).step_hash(0));
}

fn started(actions: &[Action]) -> Vec<(String, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartStep(s) => Some((s.key.clone(), s.attempt)),
            _ => None,
        })
        .collect()
}

fn rate(usd_in: f64, usd_out: f64) -> impl Fn(&ax_core::Step) -> Rate {
    move |s| Rate {
        usd_per_token: Some((usd_in, usd_out)),
        max_tokens: s.max_tokens.unwrap_or(100),
        fixed_tokens: 0,
    }
}

const BUDGETED: &str = r#"
name: budgeted
config: {budget: {tokens: 40}, parallelism: 2}
steps:
  - {key: a, agent: x, prompt: aa, maxTokens: 10}
  - {key: b, agent: x, prompt: bb, maxTokens: 10, dependencies: [a]}
  - {key: c, agent: x, prompt: cc, maxTokens: 10, dependencies: [b]}
"#;

/// Before each attempt: spent + its worst case (prompt estimate + maxTokens)
/// against the budget; over it, the run pauses with reason `budget` instead of
/// starting the attempt, and goes on once the budget is raised.
#[test]
fn budget_pauses_before_the_attempt_that_would_exceed_it() {
    let mut e = exec(BUDGETED);
    e.set_rates(&rate(0.0, 0.0));
    let spend = Spend {
        usd: 0.0,
        tokens: 18,
    };
    let a = e.handle(Event::Start, 0).expect("start");
    assert_eq!(started(&a), [("a".to_owned(), 1)]);
    e.charge("a", 1, spend);
    let ok = |k: &str| Event::StepSucceeded {
        key: k.into(),
        attempt: 1,
        output: "x".into(),
    };
    let a = e.handle(ok("a"), 1).expect("a done");
    assert_eq!(started(&a), [("b".to_owned(), 1)]);
    e.charge("b", 1, spend);
    // 36 spent + 1 + 10 > 40: c does not start.
    let a = e.handle(ok("b"), 2).expect("b done");
    assert!(started(&a).is_empty());
    assert_eq!(e.state(), ExecutionState::Paused);
    let reason = e.reason().unwrap_or("");
    assert!(
        reason.starts_with("budget: the next attempt of `c` may use up to 11 tokens"),
        "{reason}"
    );
    assert!(a.iter().any(|x| matches!(x, Action::Checkpoint)));
    assert_eq!(state_of(&e, "c"), StepState::Ready);
    assert_eq!(e.spent().tokens, 36);
    // Resuming as it is pauses again at once.
    let a = e.handle(Event::Resume, 3).expect("resume");
    assert!(started(&a).is_empty());
    assert_eq!(e.state(), ExecutionState::Paused);
    // Checkpoints keep what was spent and the raised budget; nothing is charged twice.
    e.set_budget(Budget {
        usd: None,
        tokens: Some(100),
    });
    let cp = e.snapshot();
    let (mut r, _) =
        Execution::restore(e.plan().clone(), &cp, &|_| Some(Arc::from("x"))).expect("restore");
    assert_eq!(r.spent(), e.spent());
    assert_eq!(r.budget().tokens, Some(100));
    r.set_rates(&rate(0.0, 0.0));
    let a = r.handle(Event::Resume, 4).expect("resume");
    assert_eq!(started(&a), [("c".to_owned(), 1)]);
    r.charge("c", 1, spend);
    r.handle(ok("c"), 5).expect("c done");
    assert_eq!(r.state(), ExecutionState::Completed);
    assert_eq!(r.spent().tokens, 54);
}

/// Attempts in flight hold their worst case: two parallel steps that together
/// could pass the budget do not start together.
#[test]
fn attempts_in_flight_hold_their_worst_case() {
    let yaml = r#"
name: par
config: {budget: {usd: 0.0005}, parallelism: 4}
steps:
  - {key: a, agent: x, prompt: aa, maxTokens: 100}
  - {key: b, agent: x, prompt: bb, maxTokens: 100}
"#;
    let mut e = exec(yaml);
    // $3 per million out: 100 tokens = $0.0003 each; two would be $0.0006.
    e.set_rates(&rate(0.0, 3e-6));
    let a = e.handle(Event::Start, 0).expect("start");
    assert_eq!(started(&a), [("a".to_owned(), 1)]);
    assert_eq!(e.state(), ExecutionState::Running, "b waits for a");
    // Its answer cost less than the worst case: b fits now.
    e.charge(
        "a",
        1,
        Spend {
            usd: 0.0001,
            tokens: 40,
        },
    );
    let a = e
        .handle(
            Event::StepSucceeded {
                key: "a".into(),
                attempt: 1,
                output: "x".into(),
            },
            1,
        )
        .expect("a done");
    assert_eq!(started(&a), [("b".to_owned(), 1)]);
    // b is in flight holding $0.0003; spent $0.0001: c (if there were one) could not start.
    assert!((e.spent().usd - 0.0001).abs() < 1e-12);
}

/// A dollar budget with a model that has no price cannot be kept: the run
/// pauses and says so, rather than guessing.
#[test]
fn usd_budget_without_a_price_pauses() {
    let mut e =
        exec("name: x\nconfig: {budget: {usd: 1}}\nsteps: [{key: a, agent: x, prompt: p}]\n");
    let a = e.handle(Event::Start, 0).expect("start");
    assert!(started(&a).is_empty());
    assert!(e.reason().unwrap_or("").contains("without a price"));
    // A token budget needs no price.
    let mut e =
        exec("name: x\nconfig: {budget: {tokens: 5000}}\nsteps: [{key: a, agent: x, prompt: p}]\n");
    let a = e.handle(Event::Start, 0).expect("start");
    assert_eq!(started(&a), [("a".to_owned(), 1)]);
}
