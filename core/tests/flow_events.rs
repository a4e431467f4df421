//! Random driver events against a workflow with a `forEach` step, an approval and
//! sub-workflow steps (native only: proptest): answers for attempts and children,
//! stray and stale reports, decisions at any time, pause/resume/cancel, time,
//! crashes. After every event the executor's promises hold (the fuzz target
//! `executor_events` checks the same on the fixtures without these steps).

#![cfg(not(target_arch = "wasm32"))]

use ax_core::exec::{Action, ChildControl, Event, ExecError, Execution, StepError};
use ax_core::{Checkpoint, ErrorClass, ExecutionState, Plan, StepState};
use proptest::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const FLOW: &str = r#"
name: flow
config: {parallelism: 3, maxRetries: 1}
inputs:
  xs: {default: [1, 2, 3, 4]}
steps:
  - {key: list, agent: w, prompt: p}
  - key: each
    agent: w
    forEach: "{{xs}}"
    maxConcurrency: 2
    timeoutMs: 300
    prompt: "{{item}} {{index}}"
    retryPolicy: {maxRetries: 2, retryDelayMs: 20}
  - key: sign-off
    type: approval
    dependencies: [each]
    prompt: "ok {{each.result}}?"
    timeoutMs: 2000
    onTimeout: approve
    outputSchema: {type: [object, "null"], properties: {n: {type: integer}}}
  - key: kids
    type: workflow
    workflow: c.yaml
    forEach: [a, b]
    dependencies: [list]
    inputs: {x: "{{item}}"}
    retryPolicy: {maxRetries: 1, retryDelayMs: 10}
  - {key: solo, type: workflow, workflow: c.yaml, timeoutMs: 500, optional: true}
  - key: end
    agent: w
    dependencies: [sign-off, kids]
    prompt: "{{sign-off.result.comment ?? \"-\"}} {{kids.result}}"
"#;

#[derive(Debug, Clone)]
enum Op {
    Succeed(u8),
    Fail(u8, bool),
    ChildOk(u8),
    ChildFail(u8),
    ChildWaiting(u8, bool),
    ChildStarted(u8),
    Approve(Option<i64>),
    Reject,
    Stray(u8, u8, u8),
    Advance(u16),
    ToWake,
    Pause(bool),
    Resume,
    Cancel,
    Interrupt,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u8>().prop_map(Op::Succeed),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(s, r)| Op::Fail(s, r)),
        3 => any::<u8>().prop_map(Op::ChildOk),
        1 => any::<u8>().prop_map(Op::ChildFail),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(s, w)| Op::ChildWaiting(s, w)),
        1 => any::<u8>().prop_map(Op::ChildStarted),
        2 => proptest::option::of(-2i64..3).prop_map(Op::Approve),
        1 => Just(Op::Reject),
        1 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, c)| Op::Stray(a, b, c)),
        2 => any::<u16>().prop_map(Op::Advance),
        2 => Just(Op::ToWake),
        1 => any::<bool>().prop_map(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::Cancel),
        1 => Just(Op::Interrupt),
        1 => Just(Op::Crash),
    ]
}

struct Driver {
    plan: Arc<Plan>,
    exec: Execution,
    now: u64,
    /// Provider attempts and children in flight, from StartStep/StartChild and
    /// AbortStep/ControlChild(Cancel) and the answers.
    attempts: BTreeSet<(String, u32)>,
    children: BTreeSet<(String, u32)>,
    wake: Option<u64>,
    persisted: Checkpoint,
    outputs: BTreeMap<String, Arc<str>>,
}

fn timeless(mut cp: Checkpoint) -> Checkpoint {
    cp.taken_at = 0;
    cp.header.clock = 0;
    cp
}

impl Driver {
    fn new() -> Driver {
        let plan = Plan::from_text(FLOW, Some("flow.yaml")).expect("valid");
        let mut exec = Execution::new(Arc::clone(&plan), BTreeMap::new(), 3).expect("exec");
        let persisted = exec.snapshot();
        Driver {
            plan,
            exec,
            now: 0,
            attempts: BTreeSet::new(),
            children: BTreeSet::new(),
            wake: None,
            persisted,
            outputs: BTreeMap::new(),
        }
    }

    fn pick(set: &BTreeSet<(String, u32)>, slot: u8) -> Option<(String, u32)> {
        if set.is_empty() {
            return None;
        }
        set.iter().nth(usize::from(slot) % set.len()).cloned()
    }

    fn feed(&mut self, event: Event) -> Result<(), TestCaseError> {
        let before = self.exec.peek_snapshot();
        let lookup = |h: &str| self.outputs.get(h).cloned();
        let (mut twin, compat) =
            Execution::restore(Arc::clone(&self.plan), &before, &lookup).expect("restores");
        prop_assert!(compat.same_definition);
        prop_assert_eq!(&twin.peek_snapshot(), &before);
        let twin_result = twin.handle(event.clone(), self.now);
        let result = self.exec.handle(event.clone(), self.now);
        prop_assert_eq!(
            &result,
            &twin_result,
            "a restored execution answers differently"
        );
        prop_assert_eq!(self.exec.peek_snapshot(), twin.peek_snapshot());
        match result {
            Ok(actions) => {
                match &event {
                    Event::StepSucceeded { key, attempt, .. }
                    | Event::StepFailed { key, attempt, .. } => {
                        self.attempts.remove(&(key.clone(), *attempt));
                    }
                    Event::ChildCompleted { key, attempt, .. }
                    | Event::ChildFailed { key, attempt, .. } => {
                        self.children.remove(&(key.clone(), *attempt));
                    }
                    _ => {}
                }
                self.apply(&actions)?;
            }
            Err(e) => {
                prop_assert!(
                    matches!(
                        e,
                        ExecError::Stale { .. }
                            | ExecError::UnknownStep(_)
                            | ExecError::InvalidControl { .. }
                            | ExecError::NotWaiting { .. }
                            | ExecError::WrongStep { .. }
                            | ExecError::InvalidDecision { .. }
                    ),
                    "unexpected refusal of {:?}: {}",
                    event,
                    e
                );
                prop_assert_eq!(timeless(self.exec.peek_snapshot()), timeless(before));
            }
        }
        self.check()
    }

    fn apply(&mut self, actions: &[Action]) -> Result<(), TestCaseError> {
        let mut effects = false;
        for a in actions {
            if a.is_record() {
                prop_assert!(!effects, "a record after an effect: {:?}", actions);
            } else {
                effects = true;
            }
            match a {
                Action::Checkpoint => {
                    let delta = self.exec.take_delta();
                    self.persisted.apply(&delta);
                    prop_assert_eq!(&self.persisted, &self.exec.peek_snapshot());
                }
                Action::StartStep(s) => {
                    prop_assert!(self.attempts.insert((s.key.clone(), s.attempt)));
                }
                Action::AbortStep { key, attempt, .. } => {
                    prop_assert!(
                        self.attempts.remove(&(key.clone(), *attempt)),
                        "abort of {}",
                        key
                    );
                }
                Action::StartChild(c) => {
                    prop_assert!(self.children.insert((c.key.clone(), c.attempt)));
                    prop_assert!(
                        self.attempts
                            .iter()
                            .all(|(k, n)| !(k == &c.key && *n == c.attempt))
                    );
                }
                Action::ControlChild {
                    key,
                    attempt,
                    control,
                } => {
                    prop_assert!(
                        self.children.contains(&(key.clone(), *attempt)),
                        "control of a child not in flight"
                    );
                    if matches!(control, ChildControl::Cancel { .. }) {
                        self.children.remove(&(key.clone(), *attempt));
                    }
                }
                Action::WakeAt { at } => self.wake = Some(*at),
                Action::Finished { state, .. } => {
                    prop_assert!(state.is_terminal());
                    let last_is_finished = matches!(actions.last(), Some(Action::Finished { .. }));
                    prop_assert!(last_is_finished, "Finished comes last");
                }
                _ => {}
            }
        }
        for (h, t) in self.exec.outputs() {
            self.outputs.insert(h, t);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let e = &self.exec;
        prop_assert_eq!(e.in_flight(), self.attempts.len() + self.children.len());
        prop_assert_eq!(e.children_in_flight(), self.children.len());
        prop_assert!(e.in_flight() <= 3, "more than parallelism in flight");
        let each = e.step("each").and_then(|s| s.items.as_ref());
        if let Some(items) = each {
            prop_assert!(items.running() <= 2, "more than maxConcurrency");
        }
        let state = e.state();
        if state.is_terminal() {
            prop_assert_eq!(e.in_flight(), 0);
            prop_assert!(e.steps().iter().all(|s| !matches!(
                s.state,
                StepState::Ready
                    | StepState::Running
                    | StepState::WaitingRetry
                    | StepState::Waiting
            )));
        }
        if state == ExecutionState::Waiting {
            prop_assert!(self.attempts.is_empty(), "waiting with attempts in flight");
        }
        if state == ExecutionState::Running && e.in_flight() == 0 {
            prop_assert!(
                e.next_wakeup().is_some(),
                "running, nothing in flight, no wake-up"
            );
        }
        for s in e.steps() {
            if s.state == StepState::Completed {
                prop_assert!(s.output.is_some());
            }
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let event = match op {
            Op::Succeed(slot) => {
                let Some((key, attempt)) = Self::pick(&self.attempts, *slot) else {
                    return Ok(());
                };
                let output = if key == "each" {
                    json!({"n": attempt}).to_string()
                } else {
                    format!("out {attempt}")
                };
                Event::StepSucceeded {
                    key,
                    attempt,
                    output,
                }
            }
            Op::Fail(slot, retryable) => {
                let Some((key, attempt)) = Self::pick(&self.attempts, *slot) else {
                    return Ok(());
                };
                let class = if *retryable {
                    ErrorClass::ServerError
                } else {
                    ErrorClass::Auth
                };
                Event::StepFailed {
                    key,
                    attempt,
                    error: StepError::new(class, "simulated"),
                }
            }
            Op::ChildOk(slot) => {
                let Some((key, attempt)) = Self::pick(&self.children, *slot) else {
                    return Ok(());
                };
                Event::ChildCompleted {
                    key,
                    attempt,
                    result: json!({"r": attempt}),
                    spent: Default::default(),
                }
            }
            Op::ChildFail(slot) => {
                let Some((key, attempt)) = Self::pick(&self.children, *slot) else {
                    return Ok(());
                };
                Event::ChildFailed {
                    key,
                    attempt,
                    error: StepError::new(ErrorClass::ServerError, "child failed"),
                    spent: Default::default(),
                }
            }
            Op::ChildWaiting(slot, waiting) => {
                let Some((key, attempt)) = Self::pick(&self.children, *slot) else {
                    return Ok(());
                };
                Event::ChildWaiting {
                    key,
                    attempt,
                    waiting: *waiting,
                }
            }
            Op::ChildStarted(slot) => {
                let Some((key, attempt)) = Self::pick(&self.children, *slot) else {
                    return Ok(());
                };
                Event::ChildStarted {
                    key,
                    attempt,
                    id: format!("child-{attempt}"),
                }
            }
            Op::Approve(n) => Event::Approve {
                key: "sign-off".into(),
                comment: Some("ok".into()),
                data: n.map(|n| {
                    if n < 0 {
                        json!({"n": "x"})
                    } else {
                        json!({"n": n})
                    }
                }),
                by: None,
            },
            Op::Reject => Event::Reject {
                key: "sign-off".into(),
                comment: None,
                by: None,
            },
            Op::Stray(step, attempt, kind) => {
                let key = self
                    .plan
                    .key(usize::from(*step) % self.plan.len())
                    .to_owned();
                let attempt = u32::from(*attempt % 8);
                match kind % 3 {
                    0 => Event::StepSucceeded {
                        key,
                        attempt,
                        output: "stray".into(),
                    },
                    1 => Event::ChildCompleted {
                        key,
                        attempt,
                        result: json!(null),
                        spent: Default::default(),
                    },
                    _ => Event::Approve {
                        key,
                        comment: None,
                        data: None,
                        by: None,
                    },
                }
            }
            Op::Advance(ms) => {
                self.now += u64::from(*ms % 700);
                Event::Tick
            }
            Op::ToWake => {
                if let Some(w) = self.wake {
                    self.now = self.now.max(w);
                }
                Event::Tick
            }
            Op::Pause(now) => Event::Pause { immediate: *now },
            Op::Resume => {
                if self.exec.state() == ExecutionState::Idle {
                    Event::Start
                } else {
                    Event::Resume
                }
            }
            Op::Cancel => Event::Cancel { reason: None },
            Op::Interrupt => {
                let records = self.exec.interrupt(self.now).expect("interrupt");
                prop_assert!(records.iter().all(Action::is_record));
                // Attempts in flight are lost; children are executions of their own.
                self.attempts.clear();
                self.wake = None;
                self.apply(&records)?;
                return self.check();
            }
            Op::Crash => {
                let lookup = |h: &str| self.outputs.get(h).cloned();
                let (exec, _) =
                    Execution::restore(Arc::clone(&self.plan), &self.persisted, &lookup)
                        .expect("the persisted checkpoint restores");
                self.exec = exec;
                let records = self.exec.interrupt(self.now).expect("interrupt");
                self.attempts.clear();
                // Children in flight by the checkpoint (the driver finds them by link).
                self.children = running_children(&self.exec);
                self.wake = self.exec.next_wakeup();
                self.apply(&records)?;
                return self.check();
            }
        };
        self.feed(event)
    }
}

/// The children in flight, as the execution knows them.
fn running_children(e: &Execution) -> BTreeSet<(String, u32)> {
    let plan = e.plan();
    let mut out = BTreeSet::new();
    for (i, s) in e.steps().iter().enumerate() {
        if s.state != StepState::Running {
            continue;
        }
        if s.child.is_some() {
            out.insert((plan.key(i).to_owned(), s.attempt));
        }
        for r in s.items.iter().flat_map(|it| &it.runs) {
            if r.state == StepState::Running && r.child.is_some() {
                out.insert((plan.key(i).to_owned(), r.attempt));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_events_keep_the_executors_promises(ops in proptest::collection::vec(op(), 1..120)) {
        let mut d = Driver::new();
        d.feed(Event::Start)?;
        for op in &ops {
            d.step(op)?;
        }
    }
}
