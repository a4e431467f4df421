//! The executor's event handling: a sequence of driver events (answers with
//! outputs, failures with an error class, time passing, pause/resume/cancel,
//! process crashes) fed to an `Execution` of one of three fixed workflows
//! (retries, timeouts, `when`, optional steps, outputSchema, parallelism,
//! a run timeout, continueOnError, checkpointInterval).
//!
//! After every event:
//! - records (StepChanged, ExecutionChanged, Checkpoint) come before effects, and
//!   `Finished` last; replaying the records gives the execution's step and run
//!   states; StartStep/AbortStep tell the driver exactly what is in flight;
//! - at most `parallelism` attempts run; attempts count up by one;
//! - completed and cancelled runs stay so; a failed one changes only on Resume;
//!   an ended run has nothing ready, waiting or running; a completed run has no
//!   failed required step; a running run with nothing in flight has a wake-up;
//! - a refused event changes nothing but the clock;
//! - snapshot → restore gives the same snapshot, and the restored execution
//!   answers the next event with the same actions as the original;
//! - folding each `take_delta` onto the first snapshot gives the current one;
//!   a crash (restore from that, then `interrupt`) continues consistently.
#![no_main]

use arbitrary::Arbitrary;
use ax_core::exec::{Action, Event, ExecError, Execution, StepError};
use ax_core::{Checkpoint, ErrorClass, ExecutionState, Plan, StepState};
use ax_fuzz::{CHAIN, DIAMOND, FAN, inputs, plan};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

#[derive(Arbitrary, Debug)]
struct Input {
    workflow: u8,
    seed: u64,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The attempt in flight number `slot` answers.
    Succeed {
        slot: u8,
        output: Out,
    },
    /// The attempt in flight number `slot` fails.
    Fail {
        slot: u8,
        class: u8,
        retry_after: Option<u16>,
    },
    /// An answer for any step and attempt (usually stale).
    Stray {
        step: u8,
        attempt: u8,
        fail: bool,
    },
    Advance(u16),
    /// Jump to the last WakeAt.
    ToWake,
    Start,
    Pause {
        immediate: bool,
    },
    Resume,
    Cancel,
    /// The process dies: in-flight attempts are lost (`interrupt`).
    Interrupt,
    /// The process dies and a new one restores the last checkpoint.
    Crash,
}

#[derive(Arbitrary, Debug)]
enum Out {
    Level { high: bool, score: u8 },
    Numbers(Vec<i8>),
    Fenced { high: bool },
    Stop,
    Text(String),
}

impl Out {
    fn text(&self) -> String {
        let level = |h: bool| if h { "high" } else { "low" };
        match self {
            Out::Level { high, score } => {
                format!(r#"{{"level":"{}","score":{}}}"#, level(*high), score % 12)
            }
            Out::Numbers(v) => serde_json::to_string(v).unwrap_or_default(),
            Out::Fenced { high } => {
                format!("Here:\n```json\n{{\"level\": \"{}\"}}\n```\n", level(*high))
            }
            Out::Stop => "please stop".to_owned(),
            Out::Text(s) => s.clone(),
        }
    }
}

fn plans() -> &'static [(Arc<Plan>, &'static str); 3] {
    static PLANS: OnceLock<[(Arc<Plan>, &'static str); 3]> = OnceLock::new();
    PLANS.get_or_init(|| {
        [
            (plan(DIAMOND), DIAMOND),
            (plan(FAN), FAN),
            (plan(CHAIN), CHAIN),
        ]
    })
}

struct Driver {
    plan: Arc<Plan>,
    exec: Execution,
    now: u64,
    /// From StartStep/AbortStep: key → attempt.
    in_flight: BTreeMap<String, u32>,
    /// From StepChanged / ExecutionChanged records.
    steps: BTreeMap<String, StepState>,
    state: ExecutionState,
    attempts: BTreeMap<String, u32>,
    wake: Option<u64>,
    /// The first snapshot with every delta folded in: what a driver persisted.
    persisted: Checkpoint,
    outputs: BTreeMap<String, Arc<str>>,
}

/// A snapshot without the clock (which every event may move).
fn timeless(mut cp: Checkpoint) -> Checkpoint {
    cp.taken_at = 0;
    cp.header.clock = 0;
    cp
}

impl Driver {
    fn cap(&self) -> usize {
        self.plan.workflow.config.parallelism.max(1) as usize
    }

    fn lookup(&self) -> impl Fn(&str) -> Option<Arc<str>> + '_ {
        |h: &str| self.outputs.get(h).cloned()
    }

    fn feed(&mut self, event: Event) {
        let before = self.exec.peek_snapshot();
        let prev = self.exec.state();
        // The same event on an execution restored from a snapshot.
        let (mut twin, compat) = Execution::restore(self.plan.clone(), &before, &self.lookup())
            .expect("a snapshot restores");
        assert!(compat.same_definition);
        assert_eq!(twin.peek_snapshot(), before, "restore is not exact");
        assert_eq!(
            Checkpoint::from_json(&before.to_json()).expect("snapshot JSON reads back"),
            before
        );
        let twin_result = twin.handle(event.clone(), self.now);
        let result = self.exec.handle(event.clone(), self.now);
        assert_eq!(
            result, twin_result,
            "a restored execution answers {event:?} differently"
        );
        assert_eq!(
            self.exec.peek_snapshot(),
            twin.peek_snapshot(),
            "a restored execution ends up elsewhere after {event:?}"
        );
        let accepted = result.is_ok();
        match result {
            Ok(actions) => {
                // The answered attempt is no longer in flight (a retry may start
                // again below, in the same call).
                if let Event::StepSucceeded { key, .. } | Event::StepFailed { key, .. } = &event {
                    self.in_flight.remove(key);
                }
                self.apply(&actions);
                if self.exec.state() != prev && self.exec.state().is_terminal() {
                    assert!(
                        matches!(actions.last(), Some(Action::Finished { state, .. }) if *state == self.exec.state()),
                        "ended without Finished last: {actions:?}"
                    );
                }
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        ExecError::Stale { .. }
                            | ExecError::UnknownStep(_)
                            | ExecError::InvalidControl { .. }
                    ),
                    "unexpected refusal of {event:?}: {e}"
                );
                assert_eq!(
                    timeless(self.exec.peek_snapshot()),
                    timeless(before),
                    "a refused {event:?} changed the execution"
                );
            }
        }
        // Terminal states stay terminal.
        match prev {
            ExecutionState::Completed | ExecutionState::Cancelled => {
                assert_eq!(self.exec.state(), prev)
            }
            ExecutionState::Failed if !matches!(event, Event::Resume) => {
                assert_eq!(self.exec.state(), prev)
            }
            _ => {}
        }
        self.check(accepted);
    }

    fn apply(&mut self, actions: &[Action]) {
        let mut effects = false;
        for a in actions {
            if a.is_record() {
                assert!(!effects, "a record after an effect: {actions:?}");
            } else {
                effects = true;
            }
            match a {
                Action::StepChanged { key, state, .. } => {
                    self.steps.insert(key.clone(), *state);
                }
                Action::ExecutionChanged { state, .. } => self.state = *state,
                Action::Checkpoint => {
                    let delta = self.exec.take_delta();
                    self.persisted.apply(&delta);
                    assert_eq!(
                        self.persisted,
                        self.exec.peek_snapshot(),
                        "the folded deltas differ from a snapshot"
                    );
                }
                Action::AbortStep { key, attempt, .. } => {
                    assert_eq!(self.in_flight.remove(key), Some(*attempt), "abort of {key}");
                }
                Action::StartStep(s) => {
                    let prev = self.attempts.insert(s.key.clone(), s.attempt).unwrap_or(0);
                    assert_eq!(s.attempt, prev + 1, "attempts of {} count up by one", s.key);
                    assert!(self.in_flight.insert(s.key.clone(), s.attempt).is_none());
                    let step = self.plan.workflow.steps.iter().find(|x| x.key == s.key);
                    let limit = step.and_then(|x| x.timeout_ms);
                    assert_eq!(s.deadline, limit.map(|t| self.now.saturating_add(t)));
                }
                Action::WakeAt { at } => self.wake = Some(*at),
                Action::Finished { state, .. } => {
                    assert!(state.is_terminal());
                    assert!(matches!(actions.last(), Some(Action::Finished { .. })));
                }
                // The fixtures have no forEach, approval or sub-workflow steps.
                Action::ItemsListed { .. }
                | Action::ItemChanged { .. }
                | Action::AwaitDecision { .. }
                | Action::StartChild(_)
                | Action::ControlChild { .. } => {
                    panic!("the fixtures have no forEach, approval or sub-workflow steps: {a:?}")
                }
            }
        }
        for (h, t) in self.exec.outputs() {
            self.outputs.insert(h, t);
        }
    }

    fn check(&self, accepted: bool) {
        let e = &self.exec;
        assert_eq!(self.state, e.state(), "ExecutionChanged records");
        let running: BTreeMap<String, u32> = (0..self.plan.len())
            .filter(|&i| e.steps()[i].state == StepState::Running)
            .map(|i| (self.plan.key(i).to_owned(), e.steps()[i].attempt))
            .collect();
        assert_eq!(running, self.in_flight, "in flight per StartStep/AbortStep");
        assert_eq!(e.in_flight(), running.len());
        assert!(
            e.in_flight() <= self.cap(),
            "more than parallelism in flight"
        );
        for i in 0..self.plan.len() {
            let s = &e.steps()[i];
            let key = self.plan.key(i);
            let recorded = self.steps.get(key).copied().unwrap_or_default();
            assert_eq!(recorded, s.state, "StepChanged records of {key}");
            if s.state == StepState::Completed {
                assert!(s.output.is_some(), "{key} completed without output");
            }
        }
        let state = e.state();
        if state.is_terminal() {
            assert_eq!(e.in_flight(), 0);
            assert!(e.steps().iter().all(|s| !matches!(
                s.state,
                StepState::Ready | StepState::Running | StepState::WaitingRetry
            )));
        }
        if state == ExecutionState::Completed {
            for (i, s) in e.steps().iter().enumerate() {
                assert!(s.state.is_settled());
                assert!(s.state != StepState::Failed || self.plan.workflow.steps[i].optional);
            }
        }
        if state == ExecutionState::Running && e.in_flight() == 0 {
            assert!(
                e.next_wakeup().is_some(),
                "running, nothing in flight, no wake-up: hung"
            );
        }
        // The driver knows the next wake-up once an event was accepted (a
        // refused one returns no actions; after a crash the next accepted
        // event announces it again).
        if accepted
            && !state.is_terminal()
            && let Some(w) = e.next_wakeup()
        {
            assert_eq!(self.wake, Some(w), "the driver was not told to wake");
        }
    }

    /// The process died: in-flight attempts are lost.
    fn interrupt(&mut self) {
        let records = self.exec.interrupt(self.now).expect("interrupt");
        self.in_flight.clear();
        self.wake = None;
        self.apply(&records);
        assert!(records.iter().all(Action::is_record));
    }

    /// The process died; another one restores the last persisted checkpoint.
    fn crash(&mut self) {
        let (exec, compat) = Execution::restore(self.plan.clone(), &self.persisted, &self.lookup())
            .expect("the persisted checkpoint restores");
        assert!(compat.same_definition);
        assert_eq!(exec.peek_snapshot(), self.persisted);
        self.exec = exec;
        self.steps = (0..self.plan.len())
            .map(|i| (self.plan.key(i).to_owned(), self.exec.steps()[i].state))
            .collect();
        self.state = self.exec.state();
        self.attempts = (0..self.plan.len())
            .map(|i| (self.plan.key(i).to_owned(), self.exec.steps()[i].attempt))
            .collect();
        self.in_flight = (0..self.plan.len())
            .filter(|&i| self.exec.steps()[i].state == StepState::Running)
            .map(|i| (self.plan.key(i).to_owned(), self.exec.steps()[i].attempt))
            .collect();
        self.interrupt();
    }

    fn nth_in_flight(&self, slot: u8) -> Option<(String, u32)> {
        if self.in_flight.is_empty() {
            return None;
        }
        let n = slot as usize % self.in_flight.len();
        self.in_flight.iter().nth(n).map(|(k, a)| (k.clone(), *a))
    }
}

fuzz_target!(|input: Input| {
    let (plan, text) = &plans()[input.workflow as usize % 3];
    let mut exec = Execution::new(plan.clone(), inputs(text), input.seed).expect("inputs");
    let persisted = exec.snapshot();
    let mut d = Driver {
        plan: plan.clone(),
        exec,
        now: 1_000,
        in_flight: BTreeMap::new(),
        steps: BTreeMap::new(),
        state: ExecutionState::Idle,
        attempts: BTreeMap::new(),
        wake: None,
        persisted,
        outputs: BTreeMap::new(),
    };
    d.feed(Event::Start);
    for op in input.ops.iter().take(256) {
        match op {
            Op::Succeed { slot, output } => {
                if let Some((key, attempt)) = d.nth_in_flight(*slot) {
                    d.feed(Event::StepSucceeded {
                        key,
                        attempt,
                        output: output.text(),
                    });
                }
            }
            Op::Fail {
                slot,
                class,
                retry_after,
            } => {
                if let Some((key, attempt)) = d.nth_in_flight(*slot) {
                    let class = ErrorClass::ALL[*class as usize % ErrorClass::ALL.len()];
                    let mut error = StepError::new(class, "fuzz");
                    error.retry_after_ms = retry_after.map(u64::from);
                    d.feed(Event::StepFailed {
                        key,
                        attempt,
                        error,
                    });
                }
            }
            Op::Stray {
                step,
                attempt,
                fail,
            } => {
                let n = plan.len() + 1;
                let i = *step as usize % n;
                let key = if i == plan.len() {
                    "nope".to_owned()
                } else {
                    plan.key(i).to_owned()
                };
                let attempt = u32::from(*attempt);
                d.feed(if *fail {
                    Event::StepFailed {
                        key,
                        attempt,
                        error: StepError::new(ErrorClass::Network, "stray"),
                    }
                } else {
                    Event::StepSucceeded {
                        key,
                        attempt,
                        output: "{\"level\":\"high\"}".to_owned(),
                    }
                });
            }
            Op::Advance(ms) => {
                d.now += u64::from(*ms);
                d.feed(Event::Tick);
            }
            Op::ToWake => {
                if let Some(w) = d.wake {
                    d.now = d.now.max(w);
                }
                d.feed(Event::Tick);
            }
            Op::Start => d.feed(Event::Start),
            Op::Pause { immediate } => d.feed(Event::Pause {
                immediate: *immediate,
            }),
            Op::Resume => d.feed(Event::Resume),
            Op::Cancel => d.feed(Event::Cancel { reason: None }),
            Op::Interrupt => {
                d.interrupt();
                d.check_after_interrupt();
            }
            Op::Crash => {
                d.crash();
                d.check_after_interrupt();
            }
        }
    }
});

impl Driver {
    /// After a crash, records alone: no effects were produced, so the wake-up
    /// the driver knows is gone (the next event re-announces it).
    fn check_after_interrupt(&self) {
        let e = &self.exec;
        assert_eq!(self.state, e.state());
        assert_eq!(e.in_flight(), 0);
        assert!(self.in_flight.is_empty());
        for i in 0..self.plan.len() {
            assert_eq!(
                self.steps
                    .get(self.plan.key(i))
                    .copied()
                    .unwrap_or_default(),
                e.steps()[i].state
            );
        }
    }
}
