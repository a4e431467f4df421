//! The executor's approvals, `forEach` items and child executions, driven in
//! virtual time; and what checkpoints keep of them.

use ax_core::checkpoint::CheckpointFile;
use ax_core::exec::{
    AbortReason, Action, ChildControl, Event, ExecError, Execution, Spend, StepError,
};
use ax_core::sim::{ChildReply, Reply, Simulator, TreeSimulator};
use ax_core::subworkflow::{DocumentLoader, analyze_tree};
use ax_core::{Budget, Checkpoint, ErrorClass, ExecutionState, Options, Plan, StepState};
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

fn state_of(e: &Execution, key: &str) -> StepState {
    e.step(key).map(|s| s.state).unwrap_or(StepState::Pending)
}

fn output_of(e: &Execution, key: &str) -> Value {
    let text = e
        .step(key)
        .and_then(|s| s.output.as_ref())
        .map(|o| o.text.to_string())
        .unwrap_or_else(|| panic!("`{key}` has no output"));
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// Restore `e` from its own snapshot and outputs, through JSON (as a driver
/// stores them).
fn round_trip(e: &mut Execution) -> Execution {
    let cp = Checkpoint::from_json(&e.snapshot().to_json()).expect("checkpoint json");
    let outputs = e.outputs();
    let (restored, compat) =
        Execution::restore(Arc::clone(e.plan()), &cp, &|h| outputs.get(h).cloned())
            .expect("restores");
    assert!(compat.same_definition);
    restored
}

// ---- Approvals ----

const SIGN_OFF: &str = r#"
name: release
inputs:
  version: {default: "2.4.0"}
steps:
  - {key: audit, agent: sec, prompt: "audit {{version}}"}
  - key: sign-off
    type: approval
    dependencies: [audit]
    prompt: "Ship release {{version}}? Security said: {{audit.result}}"
  - key: ship
    agent: ops
    dependencies: [sign-off]
    prompt: "Ship. Note: {{sign-off.result.comment}}; ticket {{sign-off.result.data.ticket ?? \"none\"}}"
"#;

#[test]
fn an_approval_waits_and_an_approval_completes_it() {
    let mut e = exec(SIGN_OFF);
    e.handle(Event::Start, 1_000).expect("start");
    let actions = e
        .handle(
            Event::StepSucceeded {
                key: "audit".into(),
                attempt: 1,
                output: "no findings".into(),
            },
            2_000,
        )
        .expect("audit");
    // The request is rendered and shown; nothing runs; the run waits.
    assert!(actions.contains(&Action::AwaitDecision {
        key: "sign-off".into(),
        prompt: "Ship release 2.4.0? Security said: no findings".into(),
        deadline: None,
        output_schema: None,
    }));
    assert!(!actions.iter().any(|a| matches!(a, Action::StartStep(_))));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::ExecutionChanged { state: ExecutionState::Waiting, reason: Some(r), .. }
            if r == "waiting for a decision on `sign-off`"
    )));
    assert!(actions.contains(&Action::Checkpoint));
    assert_eq!(e.state(), ExecutionState::Waiting);
    assert_eq!(state_of(&e, "sign-off"), StepState::Waiting);
    assert!(e.is_quiescent());
    assert_eq!(e.next_wakeup(), None, "no polling while waiting");
    assert_eq!(
        e.pending_decisions(),
        [("sign-off", "Ship release 2.4.0? Security said: no findings")]
    );
    // A day later, someone approves.
    let day = 86_400_000;
    let actions = e
        .handle(
            Event::Approve {
                key: "sign-off".into(),
                comment: Some("go".into()),
                data: Some(json!({"ticket": "REL-7"})),
                by: Some("ana".into()),
            },
            1_740_821_400_000,
        )
        .expect("approve");
    assert_eq!(e.state(), ExecutionState::Running);
    assert_eq!(
        output_of(&e, "sign-off"),
        json!({"approved": true, "comment": "go", "data": {"ticket": "REL-7"}, "decidedAt": "2025-03-01T09:30:00.000Z", "by": "ana"})
    );
    let start = actions
        .iter()
        .find_map(|a| match a {
            Action::StartStep(s) => Some(s),
            _ => None,
        })
        .expect("ship starts");
    assert_eq!(start.prompt, "Ship. Note: go; ticket REL-7");
    // Waiting time does not count as running time.
    let _ = day;
}

#[test]
fn a_rejection_fails_the_step_with_its_comment() {
    let mut sim = Simulator::new(exec(SIGN_OFF), 0, |_| ok(10, "fine")).with_decisions(|key, _| {
        Some((
            500,
            Event::Reject {
                key: key.into(),
                comment: Some("not before the freeze ends".into()),
                by: None,
            },
        ))
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Failed));
    let s = sim.exec.step("sign-off").expect("step");
    assert_eq!(s.state, StepState::Failed);
    let err = s.error.as_ref().expect("error");
    assert_eq!(err.class, ErrorClass::Rejected);
    assert_eq!(err.message, "rejected: not before the freeze ends");
    assert_eq!(
        sim.exec.reason(),
        Some("step `sign-off` failed: rejected: not before the freeze ends")
    );
    assert_eq!(state_of(&sim.exec, "ship"), StepState::Pending);
}

#[test]
fn an_optional_approval_lets_the_run_go_on_after_a_rejection() {
    let yaml = r#"
name: r
steps:
  - {key: sign-off, type: approval, prompt: "ok?", optional: true}
  - key: report
    agent: w
    dependencies: [sign-off]
    optional: true
    prompt: "Decision: {{sign-off.result.comment ?? \"rejected\"}}"
"#;
    let mut sim = Simulator::new(exec(yaml), 0, |s| ok(10, &s.prompt)).with_decisions(|key, _| {
        Some((
            5,
            Event::Reject {
                key: key.into(),
                comment: None,
                by: Some("bo".into()),
            },
        ))
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    assert_eq!(
        sim.exec
            .step("sign-off")
            .and_then(|s| s.error.clone())
            .map(|e| e.message),
        Some("rejected by bo (no comment given)".into())
    );
    assert_eq!(output_of(&sim.exec, "report"), json!("Decision: rejected"));
}

#[test]
fn decisions_are_checked() {
    let yaml = r#"
name: r
steps:
  - {key: draft, agent: w, prompt: p}
  - key: sign-off
    type: approval
    prompt: "ok?"
    outputSchema:
      type: object
      required: [risk]
      properties: {risk: {enum: [low, high]}}
"#;
    let mut e = exec(yaml);
    e.handle(Event::Start, 0).expect("start");
    // Not waiting yet? It is (no dependencies); the prompt step is not an approval.
    let err = e
        .handle(
            Event::Approve {
                key: "draft".into(),
                comment: None,
                data: None,
                by: None,
            },
            1,
        )
        .expect_err("not an approval");
    assert!(matches!(err, ExecError::WrongStep { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "step `draft` is a `prompt` step, not an approval: there is nothing to decide"
    );
    let approve = |data: Option<Value>| Event::Approve {
        key: "sign-off".into(),
        comment: None,
        data,
        by: None,
    };
    let err = e.handle(approve(None), 2).expect_err("data required");
    assert_eq!(
        err.to_string(),
        "the data does not satisfy the `outputSchema` of step `sign-off`: no data was given, and this approval asks for data; /: expected object, got null"
    );
    let err = e
        .handle(approve(Some(json!({"risk": "medium"}))), 3)
        .expect_err("bad data");
    match &err {
        ExecError::InvalidDecision { key, problems } => {
            assert_eq!(key, "sign-off");
            assert!(problems[0].contains("/risk"), "{problems:?}");
        }
        other => panic!("{other}"),
    }
    // Refused decisions change nothing.
    assert_eq!(state_of(&e, "sign-off"), StepState::Waiting);
    e.handle(approve(Some(json!({"risk": "low"}))), 4)
        .expect("approves");
    assert_eq!(state_of(&e, "sign-off"), StepState::Completed);
    let err = e
        .handle(approve(Some(json!({"risk": "low"}))), 5)
        .expect_err("twice");
    assert_eq!(
        err.to_string(),
        "step `sign-off` is not waiting for a decision: it is completed"
    );
    assert!(matches!(
        e.handle(
            Event::Reject {
                key: "nope".into(),
                comment: None,
                by: None
            },
            6
        ),
        Err(ExecError::UnknownStep(_))
    ));
}

#[test]
fn a_timeout_decides_by_on_timeout() {
    let yaml = |on: &str| {
        format!(
            "name: r\nsteps:\n  - {{key: sign-off, type: approval, prompt: ok?, timeoutMs: 3600000, onTimeout: {on}}}\n  - {{key: next, agent: w, prompt: \"{{{{sign-off.result.timedOut}}}}\", dependencies: [sign-off]}}\n"
        )
    };
    let mut e = exec(&yaml("reject"));
    let actions = e.handle(Event::Start, 1_000).expect("start");
    assert!(actions.contains(&Action::WakeAt { at: 3_601_000 }));
    assert_eq!(e.state(), ExecutionState::Waiting);
    e.handle(Event::Tick, 3_601_000).expect("tick");
    let s = e.step("sign-off").expect("step");
    assert_eq!(s.state, StepState::Failed);
    let err = s.error.as_ref().expect("error");
    assert_eq!(err.class, ErrorClass::Timeout);
    assert_eq!(
        err.message,
        "no decision within 3600000 ms; rejected (onTimeout: reject)"
    );
    assert_eq!(e.state(), ExecutionState::Failed);

    let mut sim = Simulator::new(exec(&yaml("approve")), 0, |s| ok(10, &s.prompt));
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    assert_eq!(output_of(&sim.exec, "next"), json!(true));
    assert_eq!(output_of(&sim.exec, "sign-off")["comment"], Value::Null);
}

#[test]
fn waiting_time_does_not_count_against_the_run_timeout() {
    let yaml = "name: r\nconfig: {timeout: 1000}\nsteps:\n  - {key: sign-off, type: approval, prompt: ok?}\n  - {key: next, agent: w, prompt: p, dependencies: [sign-off]}\n";
    let mut sim = Simulator::new(exec(yaml), 0, |_| ok(100, "done")).with_decisions(|key, _| {
        Some((
            86_400_000,
            Event::Approve {
                key: key.into(),
                comment: None,
                data: None,
                by: None,
            },
        ))
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
}

#[test]
fn a_decision_while_paused_is_kept_and_the_run_goes_on_when_resumed() {
    let mut e = exec(SIGN_OFF);
    e.handle(Event::Start, 0).expect("start");
    e.handle(
        Event::StepSucceeded {
            key: "audit".into(),
            attempt: 1,
            output: "ok".into(),
        },
        10,
    )
    .expect("audit");
    assert_eq!(e.state(), ExecutionState::Waiting);
    e.handle(Event::Pause { immediate: false }, 20)
        .expect("pause");
    assert_eq!(e.state(), ExecutionState::Paused);
    let actions = e
        .handle(
            Event::Approve {
                key: "sign-off".into(),
                comment: Some("ok".into()),
                data: None,
                by: None,
            },
            30,
        )
        .expect("decision while paused");
    assert!(!actions.iter().any(|a| matches!(a, Action::StartStep(_))));
    assert_eq!(state_of(&e, "sign-off"), StepState::Completed);
    assert_eq!(state_of(&e, "ship"), StepState::Ready);
    let actions = e.handle(Event::Resume, 40).expect("resume");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::StartStep(s) if s.key == "ship"))
    );
    // Resume is refused while waiting: the run leaves `waiting` by itself.
    let mut w = exec(SIGN_OFF);
    w.handle(Event::Start, 0).expect("start");
    w.handle(
        Event::StepSucceeded {
            key: "audit".into(),
            attempt: 1,
            output: "ok".into(),
        },
        10,
    )
    .expect("audit");
    assert!(matches!(
        w.handle(Event::Resume, 11),
        Err(ExecError::InvalidControl { .. })
    ));
    // Cancel works.
    w.handle(Event::Cancel { reason: None }, 12)
        .expect("cancel");
    assert_eq!(state_of(&w, "sign-off"), StepState::Cancelled);
}

#[test]
fn decisions_survive_checkpoint_and_restore() {
    let mut e = exec(SIGN_OFF);
    e.handle(Event::Start, 0).expect("start");
    e.handle(
        Event::StepSucceeded {
            key: "audit".into(),
            attempt: 1,
            output: "clean".into(),
        },
        10,
    )
    .expect("audit");
    // Restored while waiting: still waiting, with its request.
    let mut r = round_trip(&mut e);
    assert_eq!(r.state(), ExecutionState::Waiting);
    assert_eq!(
        r.step("sign-off")
            .and_then(|s| s.request.clone())
            .as_deref(),
        Some("Ship release 2.4.0? Security said: clean")
    );
    r.handle(
        Event::Approve {
            key: "sign-off".into(),
            comment: Some("ship it".into()),
            data: None,
            by: None,
        },
        20,
    )
    .expect("approve after restore");
    // Restored after the decision: the decision is the step's result.
    let mut again = round_trip(&mut r);
    assert_eq!(output_of(&again, "sign-off")["comment"], json!("ship it"));
    assert_eq!(state_of(&again, "ship"), StepState::Running);
    let actions = again
        .handle(
            Event::StepSucceeded {
                key: "ship".into(),
                attempt: 1,
                output: "shipped".into(),
            },
            30,
        )
        .expect("ship");
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Finished {
            state: ExecutionState::Completed,
            ..
        }
    )));
    // And through a checkpoint file (browser ↔ server), with a pending timeout.
    let mut t = exec(
        "name: r\nsteps:\n  - {key: a, type: approval, prompt: ok?, timeoutMs: 1000, onTimeout: approve}\n",
    );
    t.handle(Event::Start, 0).expect("start");
    let cp = t.snapshot();
    let outputs: BTreeMap<String, String> = t
        .outputs()
        .into_iter()
        .map(|(h, x)| (h, x.to_string()))
        .collect();
    let file = CheckpointFile::new(
        ax_core::checkpoint::WorkflowSource {
            name: "r".into(),
            source: String::new(),
            filename: None,
        },
        cp,
        outputs,
    );
    let file = CheckpointFile::from_json(&file.to_json()).expect("file");
    let (mut back, _) =
        Execution::restore(Arc::clone(t.plan()), &file.checkpoint, &|_| None).expect("restore");
    assert_eq!(back.next_wakeup(), Some(1000));
    back.handle(Event::Tick, 1000).expect("tick");
    assert_eq!(back.state(), ExecutionState::Completed);
}

// ---- forEach ----

#[test]
fn items_run_per_item_and_the_result_is_their_list() {
    let yaml = r#"
name: m
inputs:
  files: {default: [{path: a.rs}, {path: b.rs}, {path: c.rs}]}
steps:
  - key: review
    agent: w
    forEach: "{{files}}"
    prompt: "Review {{item.path}} (file {{index}})"
  - {key: sum, agent: w, prompt: "{{review.result}} / {{review.result.1}}", dependencies: [review]}
"#;
    let mut sim = Simulator::new(exec(yaml), 0, |s| match s.item {
        Some(i) => ok(10 * (3 - u64::from(i)), &format!("{{\"i\": {i}}}")),
        None => ok(1, &s.prompt),
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    let starts = sim.starts();
    let prompts: Vec<&str> = starts.iter().map(|(_, s)| s.prompt.as_str()).collect();
    assert_eq!(
        prompts[..3],
        [
            "Review a.rs (file 0)",
            "Review b.rs (file 1)",
            "Review c.rs (file 2)"
        ]
    );
    // Items answered in reverse; the result keeps item order.
    assert_eq!(
        output_of(&sim.exec, "review"),
        json!([{"i": 0}, {"i": 1}, {"i": 2}])
    );
    assert_eq!(
        output_of(&sim.exec, "sum"),
        json!("[{\"i\":0},{\"i\":1},{\"i\":2}] / {\"i\":1}")
    );
    // Attempt numbers are unique per step, and each start names its item.
    let review: Vec<(u32, Option<u32>)> = starts
        .iter()
        .filter(|(_, s)| s.key == "review")
        .map(|(_, s)| (s.attempt, s.item))
        .collect();
    assert_eq!(review, [(1, Some(0)), (2, Some(1)), (3, Some(2))]);
    let listed = sim.log.iter().find_map(|(_, a)| match a {
        Action::ItemsListed { key, count, .. } => Some((key.clone(), *count)),
        _ => None,
    });
    assert_eq!(listed, Some(("review".into(), 3)));
}

#[test]
fn items_share_parallelism_and_respect_max_concurrency() {
    let yaml = r#"
name: m
config: {parallelism: 3}
steps:
  - {key: list, agent: w, prompt: p}
  - key: each
    agent: w
    dependencies: [list]
    forEach: "{{list.result}}"
    maxConcurrency: 2
    prompt: "{{item}}"
  - {key: side, agent: w, prompt: p, dependencies: [list]}
  - {key: side2, agent: w, prompt: p, dependencies: [list]}
"#;
    let mut sim = Simulator::new(exec(yaml), 0, |s| {
        if s.key == "list" {
            ok(1, "[1, 2, 3, 4, 5, 6]")
        } else {
            ok(10, "x")
        }
    });
    assert_eq!(sim.run(1000), Ok(ExecutionState::Completed));
    let (mut running, mut peak, mut items, mut peak_items) = (0i32, 0, 0i32, 0);
    for (_, a) in &sim.log {
        match a {
            Action::StartStep(s) => {
                running += 1;
                items += i32::from(s.item.is_some());
            }
            Action::StepChanged {
                state: StepState::Completed,
                key,
                ..
            } if key != "each" => running -= 1,
            Action::ItemChanged {
                state: StepState::Completed,
                ..
            } => {
                running -= 1;
                items -= 1;
            }
            _ => {}
        }
        peak = peak.max(running);
        peak_items = peak_items.max(items);
    }
    assert_eq!(peak, 3, "config.parallelism caps items and steps together");
    assert_eq!(peak_items, 2, "maxConcurrency caps the items");
    // Declaration order: the forEach step comes before `side`, so its first two
    // items start first, then `side` takes the third slot.
    let first: Vec<(String, Option<u32>)> = sim.starts()[1..4]
        .iter()
        .map(|(_, s)| (s.key.clone(), s.item))
        .collect();
    assert_eq!(
        first,
        [
            ("each".into(), Some(0)),
            ("each".into(), Some(1)),
            ("side".into(), None)
        ]
    );
    assert_eq!(
        output_of(&sim.exec, "each"),
        json!(["x", "x", "x", "x", "x", "x"])
    );
}

#[test]
fn an_empty_list_completes_and_too_many_items_fail() {
    let yaml = |items: &str| {
        format!(
            "name: m\ninputs:\n  xs: {{default: {items}}}\nsteps:\n  - {{key: each, agent: w, forEach: \"{{{{xs}}}}\", maxItems: 3, prompt: \"{{{{item}}}}\"}}\n"
        )
    };
    let mut sim = Simulator::new(exec(&yaml("[]")), 0, |_| ok(1, "x"));
    assert_eq!(sim.run(10), Ok(ExecutionState::Completed));
    assert_eq!(output_of(&sim.exec, "each"), json!([]));
    assert!(sim.starts().is_empty());

    let mut sim = Simulator::new(exec(&yaml("[1, 2, 3, 4]")), 0, |_| ok(1, "x"));
    assert_eq!(sim.run(10), Ok(ExecutionState::Failed));
    assert_eq!(
        sim.exec
            .step("each")
            .and_then(|s| s.error.clone())
            .map(|e| e.message),
        Some(
            "`forEach` gave 4 items, more than `maxItems` (3); raise `maxItems` or narrow the list"
                .into()
        )
    );
    // A list that is not a list.
    let mut sim = Simulator::new(exec(&yaml("{a: 1}")), 0, |_| ok(1, "x"));
    assert_eq!(sim.run(10), Ok(ExecutionState::Failed));
    let err = sim
        .exec
        .step("each")
        .and_then(|s| s.error.clone())
        .expect("error");
    assert_eq!(err.class, ErrorClass::Template);
    assert_eq!(
        err.message,
        "`forEach: {{xs}}` must render a JSON list, but it renders an object"
    );
    // The default is 1,000 items.
    let mut sim = Simulator::new(
        exec(&yaml(&format!("{:?}", (0..1001).collect::<Vec<_>>())).replace(", maxItems: 3", "")),
        0,
        |_| ok(1, "x"),
    );
    assert_eq!(sim.run(10), Ok(ExecutionState::Failed));
    assert!(
        sim.exec
            .reason()
            .is_some_and(|r| r.contains("gave 1001 items, more than `maxItems` (1000)"))
    );
}

#[test]
fn each_item_is_retried_on_its_own_and_a_failed_item_fails_the_step() {
    let yaml = r#"
name: m
steps:
  - key: each
    agent: w
    forEach: [a, b, c]
    prompt: "{{item}}"
    retryPolicy: {maxRetries: 2, retryDelayMs: 100}
"#;
    // b fails twice, then succeeds.
    let mut tries: BTreeMap<String, u32> = BTreeMap::new();
    let mut sim = Simulator::new(exec(yaml), 0, move |s| {
        let n = tries.entry(s.prompt.clone()).or_default();
        *n += 1;
        if s.prompt == "b" && *n <= 2 {
            Reply::Fail {
                after_ms: 5,
                error: StepError::new(ErrorClass::RateLimit, "429"),
            }
        } else {
            ok(5, &format!("<{}>", s.prompt))
        }
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    let items = sim
        .exec
        .step("each")
        .and_then(|s| s.items.clone())
        .expect("items");
    let per_item: Vec<(u32, u32)> = items.runs.iter().map(|r| (r.failures, r.attempt)).collect();
    assert_eq!(per_item[0].0, 0);
    assert_eq!(per_item[1].0, 2, "b failed twice");
    assert_eq!(per_item[2].0, 0);
    assert_eq!(sim.starts().len(), 5);
    assert_eq!(output_of(&sim.exec, "each"), json!(["<a>", "<b>", "<c>"]));
    assert!(sim.log.iter().any(|(_, a)| matches!(
        a,
        Action::ItemChanged {
            item: 1,
            state: StepState::WaitingRetry,
            ..
        }
    )));

    // c always fails: after its retries the step fails, and a and b stop.
    let mut sim = Simulator::new(exec(yaml), 0, |s| {
        if s.prompt == "c" {
            Reply::Fail {
                after_ms: 5,
                error: StepError::new(ErrorClass::ServerError, "502"),
            }
        } else {
            Reply::Hang
        }
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Failed));
    let s = sim.exec.step("each").expect("step");
    assert_eq!(s.state, StepState::Failed);
    let err = s.error.as_ref().expect("error");
    assert_eq!(
        (err.class, err.message.as_str()),
        (ErrorClass::ServerError, "item 2 (of 3) failed: 502")
    );
    let items = s.items.as_ref().expect("items");
    let states: Vec<StepState> = items.runs.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            StepState::Cancelled,
            StepState::Cancelled,
            StepState::Failed
        ]
    );
    let aborted: Vec<u32> = sim
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::AbortStep {
                attempt,
                reason: AbortReason::RunFailed,
                ..
            } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(aborted, [1, 2], "the items in flight are aborted");
}

#[test]
fn an_optional_for_each_step_fails_alone() {
    let yaml = r#"
name: m
steps:
  - {key: each, agent: w, forEach: [1, 2], prompt: "{{item}}", optional: true}
  - {key: after, agent: w, prompt: "{{each.result ?? \"none\"}}", dependencies: [each], optional: true}
"#;
    let mut sim = Simulator::new(exec(yaml), 0, |s| {
        if s.item == Some(1) {
            Reply::Fail {
                after_ms: 1,
                error: StepError::new(ErrorClass::Auth, "401"),
            }
        } else {
            ok(1, &s.prompt)
        }
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    assert_eq!(state_of(&sim.exec, "each"), StepState::Failed);
    assert_eq!(output_of(&sim.exec, "after"), json!("none"));
}

const MAP: &str = r#"
name: m
config: {parallelism: 2}
steps:
  - key: each
    agent: w
    forEach: [0, 1, 2, 3, 4, 5]
    prompt: "item {{item}}"
"#;

/// Items started, by item index.
fn started_items(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartStep(s) => s.item,
            _ => None,
        })
        .collect()
}

#[test]
fn a_crash_mid_map_reruns_only_unfinished_items() {
    let mut e = exec(MAP);
    let actions = e.handle(Event::Start, 0).expect("start");
    assert_eq!(started_items(&actions), [0, 1]);
    // Item 0 completes (and 2 starts); item 1 is in flight.
    let actions = e
        .handle(
            Event::StepSucceeded {
                key: "each".into(),
                attempt: 1,
                output: "zero".into(),
            },
            10,
        )
        .expect("item 0");
    assert_eq!(started_items(&actions), [2]);
    e.handle(
        Event::StepSucceeded {
            key: "each".into(),
            attempt: 3,
            output: "two".into(),
        },
        20,
    )
    .expect("item 2");
    let cp = Checkpoint::from_json(&e.snapshot().to_json()).expect("json");
    let outputs = e.outputs();
    drop(e); // the process dies
    let (mut r, _) =
        Execution::restore(plan(MAP), &cp, &|h| outputs.get(h).cloned()).expect("restore");
    let records = r.interrupt(30).expect("interrupt");
    assert!(records.iter().all(Action::is_record));
    assert_eq!(r.state(), ExecutionState::Interrupted);
    let mut sim = Simulator::new(r, 30, |s| ok(5, &format!("again {}", s.prompt)));
    sim.schedule(40, Event::Resume);
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    let rerun: Vec<u32> = sim.starts().iter().filter_map(|(_, s)| s.item).collect();
    // Item 1 was in flight (lost with the process), 3 to 5 had not started; 0 and
    // 2 had completed and keep their results.
    assert_eq!(rerun, [1, 3, 4, 5]);
    let result = output_of(&sim.exec, "each");
    assert_eq!(result[0], json!("zero"));
    assert_eq!(result[2], json!("two"));
    assert_eq!(result.as_array().map(Vec::len), Some(6));
}

#[test]
fn pausing_now_mid_map_reruns_only_the_aborted_items() {
    let mut sim = Simulator::new(exec(MAP), 0, |s| {
        ok(10 + u64::from(s.item.unwrap_or(0)), "ok")
    });
    sim.schedule(15, Event::Pause { immediate: true });
    sim.schedule(100, Event::Resume);
    assert_eq!(sim.run(200), Ok(ExecutionState::Completed));
    let started: Vec<u32> = sim.starts().iter().filter_map(|(_, s)| s.item).collect();
    // 0 and 1 finished at 10 and 11; 2 and 3 were aborted at 15 and ran again.
    assert_eq!(started, [0, 1, 2, 3, 2, 3, 4, 5]);
    let items = sim
        .exec
        .step("each")
        .and_then(|s| s.items.clone())
        .expect("items");
    assert!(
        items.runs.iter().all(|r| r.failures == 0),
        "a pause costs no retry"
    );
}

#[test]
fn resuming_a_failed_map_reruns_only_the_failed_items() {
    let yaml =
        "name: m\nsteps:\n  - {key: each, agent: w, forEach: [0, 1, 2, 3], prompt: \"{{item}}\"}\n";
    // Item 2 fails (not retried) after 0 and 1 completed, while 3 is in flight.
    let mut fail_once = true;
    let mut sim = Simulator::new(exec(yaml), 0, move |s| match s.item {
        Some(2) if fail_once => {
            fail_once = false;
            Reply::Fail {
                after_ms: 8,
                error: StepError::new(ErrorClass::Other, "bad luck"),
            }
        }
        Some(3) => ok(20, "slow"),
        _ => ok(5, "ok"),
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Failed));
    let before = sim.starts().len();
    let items = sim
        .exec
        .step("each")
        .and_then(|s| s.items.clone())
        .expect("items");
    let states: Vec<StepState> = items.runs.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            StepState::Completed,
            StepState::Completed,
            StepState::Failed,
            StepState::Cancelled
        ]
    );
    sim.schedule(sim.now + 10, Event::Resume);
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    let again: Vec<u32> = sim.starts()[before..]
        .iter()
        .filter_map(|(_, s)| s.item)
        .collect();
    assert_eq!(again, [2, 3], "completed items keep their results");
}

#[test]
fn deltas_carry_only_the_items_that_changed() {
    let yaml = "name: m\nconfig: {parallelism: 1}\nsteps:\n  - {key: each, agent: w, forEach: \"{{xs}}\", prompt: \"{{item}}\"}\n";
    let xs: Vec<u32> = (0..200).collect();
    let mut e = Execution::new(
        plan(yaml),
        BTreeMap::from([("xs".to_owned(), json!(xs))]),
        1,
    )
    .expect("exec");
    e.handle(Event::Start, 0).expect("start");
    let mut folded = e.snapshot();
    let mut largest = 0;
    for attempt in 1..=200u32 {
        e.handle(
            Event::StepSucceeded {
                key: "each".into(),
                attempt,
                output: format!("{attempt}"),
            },
            u64::from(attempt),
        )
        .expect("item");
        let delta = e.take_delta();
        let items = delta
            .steps
            .get("each")
            .and_then(|s| s.items.as_ref())
            .map_or(0, |it| it.items.len());
        largest = largest.max(items);
        folded.apply(&delta);
    }
    assert!(
        largest <= 2,
        "a delta holds the item that finished and the one that started, not {largest}"
    );
    let full = e.peek_snapshot();
    assert_eq!(folded.steps, full.steps);
    assert_eq!(e.state(), ExecutionState::Completed);
}

// ---- Children ----

#[test]
fn a_child_is_started_reported_and_its_result_is_the_steps() {
    let yaml = r#"
name: parent
steps:
  - {key: draft, agent: w, prompt: p}
  - key: localize
    type: workflow
    workflow: ./localize.yaml
    dependencies: [draft]
    inputs:
      text: "{{draft.result}}"
      locales: [de-DE, "{{lang}}"]
"#;
    let mut e = Execution::new(
        plan(yaml),
        BTreeMap::from([("lang".into(), json!("ja-JP"))]),
        1,
    )
    .expect("exec");
    e.handle(Event::Start, 0).expect("start");
    let actions = e
        .handle(
            Event::StepSucceeded {
                key: "draft".into(),
                attempt: 1,
                output: "Hello".into(),
            },
            10,
        )
        .expect("draft");
    let start = actions
        .iter()
        .find_map(|a| match a {
            Action::StartChild(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a child starts");
    assert_eq!(start.workflow, "./localize.yaml");
    assert_eq!(
        serde_json::to_value(&start.inputs).expect("json"),
        json!({"text": "Hello", "locales": ["de-DE", "ja-JP"]})
    );
    assert_eq!(e.children_in_flight(), 1);
    e.handle(
        Event::ChildStarted {
            key: "localize".into(),
            attempt: 1,
            id: "exec-42".into(),
        },
        11,
    )
    .expect("started");
    let cp = e.peek_snapshot();
    assert_eq!(
        cp.steps["localize"]
            .child
            .as_ref()
            .and_then(|c| c.id.as_deref()),
        Some("exec-42")
    );
    // A prompt answer for a workflow step is refused.
    assert!(matches!(
        e.handle(
            Event::StepSucceeded {
                key: "localize".into(),
                attempt: 1,
                output: "x".into()
            },
            12
        ),
        Err(ExecError::WrongStep { .. })
    ));
    e.handle(
        Event::ChildCompleted {
            key: "localize".into(),
            attempt: 1,
            result: json!({"de-DE": "Hallo", "ja-JP": "こんにちは"}),
            spent: Default::default(),
        },
        20,
    )
    .expect("completed");
    assert_eq!(e.state(), ExecutionState::Completed);
    assert_eq!(
        output_of(&e, "localize"),
        json!({"de-DE": "Hallo", "ja-JP": "こんにちは"})
    );
    assert_eq!(e.children_in_flight(), 0);
}

#[test]
fn a_failed_child_is_retried_as_a_new_child() {
    let yaml = "name: p\nsteps:\n  - {key: sub, type: workflow, workflow: c.yaml, retryPolicy: {maxRetries: 1, retryDelayMs: 10, retryableErrors: [server-error]}}\n";
    let mut n = 0;
    let mut sim = Simulator::new(exec(yaml), 0, |_| ok(1, "x")).with_children(move |c| {
        n += 1;
        assert_eq!(c.attempt, n);
        if n == 1 {
            ChildReply::Fail {
                after_ms: 5,
                error: StepError::new(ErrorClass::ServerError, "the sub-workflow `c` failed: 502"),
            }
        } else {
            ChildReply::Complete {
                after_ms: 5,
                result: json!({"ok": true}),
            }
        }
    });
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    let s = sim.exec.step("sub").expect("step");
    assert_eq!((s.attempt, s.failures), (2, 1));
    // A rejection inside the child is not retried.
    let mut sim =
        Simulator::new(exec(yaml), 0, |_| ok(1, "x")).with_children(|_| ChildReply::Fail {
            after_ms: 5,
            error: StepError::new(
                ErrorClass::Rejected,
                "the sub-workflow `c` failed: rejected",
            ),
        });
    assert_eq!(sim.run(100), Ok(ExecutionState::Failed));
    assert_eq!(sim.exec.step("sub").map(|s| s.attempt), Some(1));
}

#[test]
fn pause_resume_cancel_and_timeouts_reach_the_children() {
    let yaml = "name: p\nsteps:\n  - {key: a, type: workflow, workflow: c.yaml}\n  - {key: b, type: workflow, workflow: c.yaml, forEach: [1, 2], timeoutMs: 1000}\n";
    let mut e = exec(yaml);
    let actions = e.handle(Event::Start, 0).expect("start");
    let children: Vec<(String, u32, Option<u32>)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::StartChild(c) => Some((c.key.clone(), c.attempt, c.item)),
            _ => None,
        })
        .collect();
    assert_eq!(
        children,
        [
            ("a".into(), 1, None),
            ("b".into(), 1, Some(0)),
            ("b".into(), 2, Some(1))
        ]
    );
    let controls = |actions: &[Action]| -> Vec<(String, u32, ChildControl)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ControlChild {
                    key,
                    attempt,
                    control,
                } => Some((key.clone(), *attempt, *control)),
                _ => None,
            })
            .collect()
    };
    let paused = e
        .handle(Event::Pause { immediate: true }, 10)
        .expect("pause");
    assert_eq!(
        controls(&paused),
        [
            ("a".into(), 1, ChildControl::Pause { immediate: true }),
            ("b".into(), 1, ChildControl::Pause { immediate: true }),
            ("b".into(), 2, ChildControl::Pause { immediate: true }),
        ]
    );
    assert!(
        !paused.iter().any(|a| matches!(a, Action::AbortStep { .. })),
        "children are paused, not aborted"
    );
    assert_eq!(e.in_flight(), 3);
    assert!(e.is_quiescent(), "children report through their own runs");
    let resumed = e.handle(Event::Resume, 20).expect("resume");
    assert_eq!(
        controls(&resumed)
            .iter()
            .filter(|c| c.2 == ChildControl::Resume)
            .count(),
        3
    );
    // The items' children time out (they have `timeoutMs`): cancelled, and the
    // step fails (timeouts are retried by default only with retries configured).
    let timed = e.handle(Event::Tick, 1000).expect("tick");
    assert!(controls(&timed).contains(&(
        "b".into(),
        1,
        ChildControl::Cancel {
            reason: AbortReason::Timeout
        }
    )));
    assert_eq!(state_of(&e, "b"), StepState::Failed);
    assert_eq!(e.state(), ExecutionState::Failed);
    // The run failed: `a`'s child is cancelled too.
    assert!(controls(&timed).contains(&(
        "a".into(),
        1,
        ChildControl::Cancel {
            reason: AbortReason::RunFailed
        }
    )));
    assert_eq!(e.children_in_flight(), 0);
    // Cancelling a run cancels its children.
    let mut c = exec(yaml);
    c.handle(Event::Start, 0).expect("start");
    let cancelled = c.handle(Event::Cancel { reason: None }, 5).expect("cancel");
    assert_eq!(
        controls(&cancelled)
            .iter()
            .filter(|x| x.2
                == ChildControl::Cancel {
                    reason: AbortReason::Cancelled
                })
            .count(),
        3
    );
}

#[test]
fn a_waiting_child_makes_its_parent_wait() {
    let yaml = "name: p\nsteps:\n  - {key: sub, type: workflow, workflow: c.yaml}\n";
    let mut e = exec(yaml);
    e.handle(Event::Start, 0).expect("start");
    assert_eq!(e.state(), ExecutionState::Running);
    let actions = e
        .handle(
            Event::ChildWaiting {
                key: "sub".into(),
                attempt: 1,
                waiting: true,
            },
            10,
        )
        .expect("waiting");
    assert_eq!(e.state(), ExecutionState::Waiting);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::ExecutionChanged { state: ExecutionState::Waiting, reason: Some(r), .. }
            if r == "waiting for a decision in the sub-workflow of `sub`"
    )));
    // Survives a checkpoint.
    let mut r = round_trip(&mut e);
    assert_eq!(r.state(), ExecutionState::Waiting);
    r.handle(
        Event::ChildWaiting {
            key: "sub".into(),
            attempt: 1,
            waiting: false,
        },
        20,
    )
    .expect("decided");
    assert_eq!(r.state(), ExecutionState::Running);
}

#[test]
fn real_children_run_in_a_tree() {
    let parent = r#"
name: parent
steps:
  - {key: topics, agent: w, prompt: p}
  - key: research
    type: workflow
    workflow: child.yaml
    dependencies: [topics]
    forEach: "{{topics.result}}"
    maxConcurrency: 2
    inputs: {topic: "{{item}}", n: "{{index}}"}
  - {key: report, agent: w, prompt: "{{research.result}}", dependencies: [research]}
"#;
    let child = r#"
name: child
inputs:
  topic:
  n:
outputs:
  topic: "{{topic}}"
  brief: "{{brief.result}}"
  n: "{{n}}"
steps:
  - {key: brief, agent: w, prompt: "brief on {{topic}}"}
  - {key: check, type: approval, prompt: "ok {{brief.result}}?", dependencies: [brief]}
"#;
    let mut loader = DocumentLoader::new([("child.yaml".to_owned(), child.to_owned())]);
    let a = analyze_tree(
        parent,
        &Options::for_file("parent.yaml"),
        "parent.yaml",
        &mut loader,
    );
    assert!(a.report.valid, "{:?}", a.report.errors);
    let root = Execution::new(a.plan.expect("plan"), BTreeMap::new(), 3).expect("exec");
    let mut sim = TreeSimulator::new(root, 0, |plan, s| {
        match (plan.workflow.name.as_str(), s.key.as_str()) {
            ("parent", "topics") => ok(5, "[\"cats\", \"dogs\", \"owls\"]"),
            (_, _) => ok(5, &format!("<{}>", s.prompt)),
        }
    })
    .with_decisions(|run, key, _| {
        // Approve every child's check after an hour.
        Some((
            3_600_000,
            Event::Approve {
                key: key.into(),
                comment: Some(format!("{run} ok")),
                data: None,
                by: None,
            },
        ))
    });
    assert_eq!(sim.run(10_000), Ok(ExecutionState::Completed));
    let root = &sim.runs[0].exec;
    assert_eq!(
        output_of(root, "research"),
        json!([
            {"topic": "cats", "brief": "<brief on cats>", "n": 0},
            {"topic": "dogs", "brief": "<brief on dogs>", "n": 1},
            {"topic": "owls", "brief": "<brief on owls>", "n": 2}
        ])
    );
    assert_eq!(sim.runs.len(), 4);
    assert!(
        sim.runs[1..]
            .iter()
            .all(|r| r.exec.state() == ExecutionState::Completed)
    );
    assert_eq!(sim.runs[1].id, "root/research#1");
    // While every child waited, the parent waited too.
    assert!(sim.log.iter().any(|(_, r, a)| *r == 0
        && matches!(
            a,
            Action::ExecutionChanged {
                state: ExecutionState::Waiting,
                ..
            }
        )));
    // The child's id is in the parent's checkpoint.
    let ids: Vec<String> = root
        .step("research")
        .and_then(|s| s.items.as_ref())
        .map(|it| {
            it.runs
                .iter()
                .filter_map(|r| r.child.as_ref().and_then(|c| c.id.clone()))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        ids.is_empty(),
        "links are dropped once children end: {ids:?}"
    );
}

#[test]
fn cancelling_a_parent_cancels_its_real_children() {
    let parent = "name: p\nsteps:\n  - {key: sub, type: workflow, workflow: c.yaml}\n";
    let child = "name: c\nsteps:\n  - {key: slow, agent: w, prompt: p}\n";
    let mut loader = DocumentLoader::new([("c.yaml".to_owned(), child.to_owned())]);
    let a = analyze_tree(parent, &Options::for_file("p.yaml"), "p.yaml", &mut loader);
    let root = Execution::new(a.plan.expect("plan"), BTreeMap::new(), 3).expect("exec");
    let mut sim = TreeSimulator::new(root, 0, |_, _| Reply::Hang);
    sim.schedule(
        100,
        0,
        Event::Cancel {
            reason: Some("stop".into()),
        },
    );
    assert_eq!(sim.run(100), Ok(ExecutionState::Cancelled));
    assert_eq!(sim.runs[1].exec.state(), ExecutionState::Cancelled);
    assert_eq!(state_of(&sim.runs[1].exec, "slow"), StepState::Cancelled);
}

#[test]
fn outcomes_are_outputs_or_final_steps() {
    let mut sim = Simulator::new(
        exec(
            "name: c\nsteps:\n  - {key: a, agent: w, prompt: p}\n  - {key: b, agent: w, prompt: p, dependencies: [a]}\n  - {key: c, agent: w, prompt: p}\n",
        ),
        0,
        |s| {
            ok(
                1,
                if s.key == "b" {
                    "{\"n\": 1}"
                } else {
                    "text ```json\n{}\n```"
                },
            )
        },
    );
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    assert_eq!(
        sim.exec.outcome(),
        Some(Ok(json!({"b": {"n": 1}, "c": "text ```json\n{}\n```"})))
    );
    let mut failed = Simulator::new(
        exec("name: c\nsteps:\n  - {key: s, type: approval, prompt: ok?}\n"),
        0,
        |_| ok(1, "x"),
    )
    .with_decisions(|k, _| {
        Some((
            1,
            Event::Reject {
                key: k.into(),
                comment: Some("no".into()),
                by: None,
            },
        ))
    });
    assert_eq!(failed.run(100), Ok(ExecutionState::Failed));
    let err = failed.exec.outcome().expect("ended").expect_err("failed");
    assert_eq!(err.class, ErrorClass::Rejected);
    assert_eq!(
        err.message,
        "the sub-workflow `c` failed: step `s` failed: rejected: no"
    );
}

// ---- Checkpoints from before ----

#[test]
fn a_version_1_checkpoint_restores_and_finishes() {
    let file =
        CheckpointFile::from_json(include_str!("fixtures/checkpoint-v1.json")).expect("reads v1");
    assert_eq!(file.version, 1);
    let plan = Plan::from_text(&file.workflow.source, Some("v1.yaml")).expect("plan");
    let outputs: BTreeMap<String, Arc<str>> = file
        .outputs
        .iter()
        .map(|(h, t)| (h.clone(), Arc::from(t.as_str())))
        .collect();
    let (e, compat) =
        Execution::restore(plan, &file.checkpoint, &|h| outputs.get(h).cloned()).expect("restores");
    // The same definition: exact.
    assert!(
        compat.same_definition,
        "a workflow without new fields keeps its hash"
    );
    assert_eq!(e.state(), ExecutionState::Paused);
    assert_eq!(state_of(&e, "draft"), StepState::Running);
    assert_eq!(state_of(&e, "review"), StepState::WaitingRetry);
    // Written again, it is version 2 and reads back the same.
    let again = e.peek_snapshot();
    assert_eq!(again.version, 2);
    assert_eq!(again.steps, file.checkpoint.steps);
    let mut sim = Simulator::new(e, 1_350, |s| ok(10, &format!("<{}>", s.key)));
    sim.feed(Event::StepSucceeded {
        key: "draft".into(),
        attempt: 1,
        output: "the draft".into(),
    })
    .expect("the attempt in flight answers");
    sim.schedule(1_400, Event::Resume);
    assert_eq!(sim.run(100), Ok(ExecutionState::Completed));
    assert_eq!(output_of(&sim.exec, "publish"), json!("<publish>"));
}

/// Found by `flow_events`: a child's report (or a decision) can arrive while no
/// process runs the parent; a failure then fails the run (it went from
/// `interrupted` to an illegal transition before).
#[test]
fn a_child_failing_while_its_parent_is_interrupted_fails_the_run() {
    let mut e = exec("name: p\nsteps:\n  - {key: sub, type: workflow, workflow: c.yaml}\n");
    e.handle(Event::Start, 0).expect("start");
    e.interrupt(10).expect("interrupt");
    assert_eq!(e.state(), ExecutionState::Interrupted);
    assert_eq!(e.children_in_flight(), 1, "the child runs on");
    let actions = e
        .handle(
            Event::ChildFailed {
                key: "sub".into(),
                attempt: 1,
                error: StepError::new(ErrorClass::Auth, "the sub-workflow `c` failed: 401"),
                spent: Default::default(),
            },
            20,
        )
        .expect("accepted");
    assert_eq!(e.state(), ExecutionState::Failed);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Finished {
            state: ExecutionState::Failed,
            ..
        }
    )));
}

// ---- Budgets over children ----

const BUDGETED_PARENT: &str = r#"
name: budgeted-parent
config: {budget: {tokens: 100}, parallelism: 4}
steps:
  - {key: sub, type: workflow, workflow: ./kid.yaml}
  - {key: a, agent: x, prompt: aa, maxTokens: 10}
"#;

fn started_steps(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartStep(s) => Some(s.key.clone()),
            _ => None,
        })
        .collect()
}

/// A child of a run with a budget runs on what the run has left, held for it
/// while it runs (a checkpoint keeps the hold); a child that used it up
/// pauses the run for its budget; raising the budget gives the child what is
/// left now; what the child spent is charged to the run when it ends.
#[test]
fn a_child_runs_on_what_its_parent_has_left() {
    let mut e = exec(BUDGETED_PARENT);
    let actions = e.handle(Event::Start, 0).expect("start");
    let start = actions
        .iter()
        .find_map(|a| match a {
            Action::StartChild(c) => Some(c.clone()),
            _ => None,
        })
        .expect("the child starts");
    assert_eq!(
        start.budget,
        Some(Budget {
            usd: None,
            tokens: Some(100)
        })
    );
    // The child holds all that is left: `a` (up to 11 tokens) waits for it.
    assert!(started_steps(&actions).is_empty(), "{actions:?}");
    assert_eq!(e.state(), ExecutionState::Running);
    let mut e = round_trip(&mut e);
    let held = e.peek_snapshot().steps["sub"]
        .child
        .as_ref()
        .and_then(|c| c.held);
    assert_eq!(
        held.map(|h| h.tokens),
        Some(100),
        "the hold is checkpointed"
    );
    // The child paused at that budget: so does the run.
    e.handle(
        Event::ChildOutOfBudget {
            key: "sub".into(),
            attempt: 1,
            reason: "budget: the next attempt of `k` may use up to 120 tokens".into(),
        },
        5,
    )
    .expect("out of budget");
    assert_eq!(e.state(), ExecutionState::Paused);
    let reason = e.reason().unwrap_or("");
    assert!(
        reason.starts_with("budget: the sub-workflow of `sub` used what this run had left for it (the next attempt of `k`"),
        "{reason}"
    );
    // Raised: the child gets what is left now, then is resumed.
    e.set_budget(Budget {
        usd: None,
        tokens: Some(300),
    });
    let actions = e.handle(Event::Resume, 6).expect("resume");
    let budget_at = actions.iter().position(|a| {
        matches!(a, Action::BudgetChild { key, attempt: 1, budget }
            if key == "sub" && budget.tokens == Some(300) && budget.usd.is_none())
    });
    let resume_at = actions.iter().position(|a| {
        matches!(a, Action::ControlChild { key, control: ChildControl::Resume, .. } if key == "sub")
    });
    assert!(
        matches!((budget_at, resume_at), (Some(b), Some(r)) if b < r),
        "{actions:?}"
    );
    assert!(started_steps(&actions).is_empty(), "`a` still waits");
    // The child ends having spent 150: charged to the run; `a` fits now.
    let actions = e
        .handle(
            Event::ChildCompleted {
                key: "sub".into(),
                attempt: 1,
                result: json!({"k": "done"}),
                spent: Spend {
                    usd: 0.0,
                    tokens: 150,
                },
            },
            7,
        )
        .expect("child done");
    assert_eq!(started_steps(&actions), ["a"]);
    assert_eq!(e.spent().tokens, 150);
}

/// With nothing left and nothing in flight, a child does not start: the run
/// pauses for its budget, saying so.
#[test]
fn a_child_with_nothing_left_pauses_the_run() {
    let yaml = r#"
name: spent
config: {budget: {tokens: 20}}
steps:
  - {key: a, agent: x, prompt: aa, maxTokens: 10}
  - {key: sub, type: workflow, workflow: ./kid.yaml, dependencies: [a]}
"#;
    let mut e = exec(yaml);
    e.handle(Event::Start, 0).expect("start");
    e.charge(
        "a",
        1,
        Spend {
            usd: 0.0,
            tokens: 20,
        },
    );
    let actions = e
        .handle(
            Event::StepSucceeded {
                key: "a".into(),
                attempt: 1,
                output: "x".into(),
            },
            1,
        )
        .expect("a done");
    assert!(
        !actions.iter().any(|a| matches!(a, Action::StartChild(_))),
        "{actions:?}"
    );
    assert_eq!(e.state(), ExecutionState::Paused);
    let reason = e.reason().unwrap_or("");
    assert_eq!(
        reason,
        "budget: nothing is left for the sub-workflow of `sub` (20 of 20 tokens used); raise it to continue"
    );
}
