//! A virtual-time driver for an [`Execution`]: attempts are answered by a function
//! you give, after a simulated latency, and time jumps straight to the next thing
//! that happens. For tests, benchmarks, property tests and instant dry runs; it
//! follows the same driver contract as the real drivers.
//!
//! [`Simulator`] drives one execution (children, if any, answered by a function
//! too); [`TreeSimulator`] drives an execution and the real child executions of
//! its sub-workflows, in one virtual clock.

use crate::exec::{
    Action, ChildControl, Event, ExecError, Execution, Spend, StartChild, StartStep, StepError,
};
use crate::plan::Plan;
use crate::state::ExecutionState;
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// How a simulated provider answers one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Succeed {
        after_ms: u64,
        output: String,
    },
    Fail {
        after_ms: u64,
        error: StepError,
    },
    /// Never answers (only a timeout, pause or cancel ends the attempt).
    Hang,
}

/// How a simulated child execution ends.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildReply {
    Complete {
        after_ms: u64,
        result: Value,
    },
    Fail {
        after_ms: u64,
        error: StepError,
    },
    /// Never ends (only a timeout or a cancel ends it).
    Hang,
}

/// How an answer ends an attempt or a child.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Step(Result<String, StepError>),
    Child(Result<Value, StepError>),
}

/// An answer waiting to be delivered: (step key, attempt, outcome).
type PendingReply = (String, u32, Outcome);

/// Answers a simulated child.
type ChildFn = Box<dyn FnMut(&StartChild) -> ChildReply>;
/// Decides a simulated approval: (key, request) → (after how long, the event).
type DecideFn = Box<dyn FnMut(&str, &str) -> Option<(u64, Event)>>;

/// A control event scheduled at a virtual time.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    pub at: u64,
    pub event: Event,
}

/// Runs an execution in virtual time.
pub struct Simulator<F: FnMut(&StartStep) -> Reply> {
    pub exec: Execution,
    pub now: u64,
    reply: F,
    child: Option<ChildFn>,
    decide: Option<DecideFn>,
    /// Children paused by their parent: their answers wait, with the time left.
    held: BTreeMap<(String, u32), (u64, Outcome)>,
    /// (due, seq) → (key, attempt, outcome)
    pending: BTreeMap<(u64, u64), PendingReply>,
    controls: BinaryHeap<Reverse<(u64, u64)>>,
    control_events: BTreeMap<u64, Event>,
    wake: Option<u64>,
    seq: u64,
    /// Every action, with the time it was produced.
    pub log: Vec<(u64, Action)>,
    /// Every event fed, with its time (a replayable journal).
    pub journal: Vec<(u64, Event)>,
}

impl<F: FnMut(&StartStep) -> Reply> Simulator<F> {
    pub fn new(exec: Execution, start_at: u64, reply: F) -> Simulator<F> {
        // A restored execution may have a timer announced before its checkpoint.
        let wake = exec.next_wakeup();
        Simulator {
            exec,
            now: start_at,
            reply,
            child: None,
            decide: None,
            held: BTreeMap::new(),
            pending: BTreeMap::new(),
            controls: BinaryHeap::new(),
            control_events: BTreeMap::new(),
            wake,
            seq: 0,
            log: Vec::new(),
            journal: Vec::new(),
        }
    }

    /// Answer `StartChild` with `f` (without it, children fail).
    pub fn with_children(mut self, f: impl FnMut(&StartChild) -> ChildReply + 'static) -> Self {
        self.child = Some(Box::new(f));
        self
    }

    /// Decide approvals with `f`: given the step key and the request, the delay
    /// and the decision (`Approve` or `Reject`), or `None` to leave it waiting.
    pub fn with_decisions(
        mut self,
        f: impl FnMut(&str, &str) -> Option<(u64, Event)> + 'static,
    ) -> Self {
        self.decide = Some(Box::new(f));
        self
    }

    /// Deliver `event` at virtual time `at` (pause, resume, cancel…).
    pub fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.controls.push(Reverse((at, self.seq)));
        self.control_events.insert(self.seq, event);
    }

    /// Feed one event now and carry out the actions.
    pub fn feed(&mut self, event: Event) -> Result<(), ExecError> {
        self.journal.push((self.now, event.clone()));
        let actions = self.exec.handle(event, self.now)?;
        self.apply(actions);
        Ok(())
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match &a {
                Action::StartStep(s) => {
                    let reply = (self.reply)(s);
                    self.seq += 1;
                    match reply {
                        Reply::Succeed { after_ms, output } => {
                            self.pending.insert(
                                (self.now + after_ms, self.seq),
                                (s.key.clone(), s.attempt, Outcome::Step(Ok(output))),
                            );
                        }
                        Reply::Fail { after_ms, error } => {
                            self.pending.insert(
                                (self.now + after_ms, self.seq),
                                (s.key.clone(), s.attempt, Outcome::Step(Err(error))),
                            );
                        }
                        Reply::Hang => {}
                    }
                }
                Action::StartChild(c) => {
                    let reply = match &mut self.child {
                        Some(f) => f(c),
                        None => ChildReply::Fail {
                            after_ms: 0,
                            error: StepError::new(
                                crate::ErrorClass::Unavailable,
                                "this simulation runs no children",
                            ),
                        },
                    };
                    self.seq += 1;
                    let at = (self.now, self.seq);
                    match reply {
                        ChildReply::Complete { after_ms, result } => {
                            self.pending.insert(
                                (at.0 + after_ms, at.1),
                                (c.key.clone(), c.attempt, Outcome::Child(Ok(result))),
                            );
                        }
                        ChildReply::Fail { after_ms, error } => {
                            self.pending.insert(
                                (at.0 + after_ms, at.1),
                                (c.key.clone(), c.attempt, Outcome::Child(Err(error))),
                            );
                        }
                        ChildReply::Hang => {}
                    }
                }
                Action::ControlChild {
                    key,
                    attempt,
                    control,
                } => match control {
                    ChildControl::Cancel { .. } => {
                        self.pending
                            .retain(|_, (k, at, _)| !(k == key && at == attempt));
                        self.held.remove(&(key.clone(), *attempt));
                    }
                    ChildControl::Pause { .. } => {
                        let due = self
                            .pending
                            .iter()
                            .find(|(_, (k, at, _))| k == key && at == attempt)
                            .map(|(d, _)| *d);
                        if let Some(due) = due
                            && let Some((_, _, outcome)) = self.pending.remove(&due)
                        {
                            let left = due.0.saturating_sub(self.now);
                            self.held.insert((key.clone(), *attempt), (left, outcome));
                        }
                    }
                    ChildControl::Resume => {
                        if let Some((left, outcome)) = self.held.remove(&(key.clone(), *attempt)) {
                            self.seq += 1;
                            self.pending.insert(
                                (self.now + left, self.seq),
                                (key.clone(), *attempt, outcome),
                            );
                        }
                    }
                },
                Action::AwaitDecision { key, prompt, .. } => {
                    if let Some(f) = &mut self.decide
                        && let Some((after, event)) = f(key, prompt)
                    {
                        let at = self.now + after;
                        self.seq += 1;
                        self.controls.push(Reverse((at, self.seq)));
                        self.control_events.insert(self.seq, event);
                    }
                }
                Action::AbortStep { key, attempt, .. } => {
                    self.pending
                        .retain(|_, (k, at, _)| !(k == key && at == attempt));
                }
                Action::WakeAt { at } => self.wake = Some(*at),
                _ => {}
            }
            self.log.push((self.now, a));
        }
    }

    /// Run until the execution ends or nothing more can happen (e.g. paused with
    /// no control event left). Stale results are dropped, as a real driver does.
    /// `max_events` bounds the run.
    pub fn run(&mut self, max_events: usize) -> Result<ExecutionState, ExecError> {
        if self.exec.state() == ExecutionState::Idle {
            self.feed(Event::Start)?;
        }
        for _ in 0..max_events {
            if self.exec.state().is_terminal() && self.controls.is_empty() {
                break;
            }
            let next_reply = self.pending.keys().next().map(|(t, _)| *t);
            let next_control = self.controls.peek().map(|Reverse((t, _))| *t);
            let next_wake = self.wake.filter(|_| !self.exec.state().is_terminal());
            let candidates = [next_reply, next_control, next_wake];
            let Some(t) = candidates.iter().flatten().min().copied() else {
                break;
            };
            self.now = self.now.max(t);
            if next_control == Some(t) {
                if let Some(Reverse((_, id))) = self.controls.pop()
                    && let Some(ev) = self.control_events.remove(&id)
                {
                    match self.feed(ev) {
                        Ok(())
                        | Err(ExecError::InvalidControl { .. })
                        | Err(ExecError::NotWaiting { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            } else if next_reply == Some(t) {
                let Some((&k, _)) = self.pending.iter().next() else {
                    continue;
                };
                let Some((key, attempt, outcome)) = self.pending.remove(&k) else {
                    continue;
                };
                let ev = match outcome {
                    Outcome::Step(Ok(output)) => Event::StepSucceeded {
                        key,
                        attempt,
                        output,
                    },
                    Outcome::Step(Err(error)) => Event::StepFailed {
                        key,
                        attempt,
                        error,
                    },
                    Outcome::Child(Ok(result)) => Event::ChildCompleted {
                        key,
                        attempt,
                        result,
                        spent: Spend::default(),
                    },
                    Outcome::Child(Err(error)) => Event::ChildFailed {
                        key,
                        attempt,
                        error,
                        spent: Spend::default(),
                    },
                };
                match self.feed(ev) {
                    Ok(()) | Err(ExecError::Stale { .. }) => {}
                    Err(e) => return Err(e),
                }
            } else {
                self.wake = None;
                self.feed(Event::Tick)?;
            }
        }
        Ok(self.exec.state())
    }

    /// Actions of one kind, e.g. every started step.
    pub fn starts(&self) -> Vec<(u64, StartStep)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::StartStep(s) => Some((*t, s.clone())),
                _ => None,
            })
            .collect()
    }
}

/// One execution of a [`TreeSimulator`]: the root, or a child of a step.
pub struct TreeRun {
    /// `root`, then `PARENT/STEP#ATTEMPT` for children.
    pub id: String,
    pub exec: Execution,
    /// The parent run (index), and the step key and attempt this child is for.
    pub parent: Option<(usize, String, u32)>,
    wake: Option<u64>,
}

/// Answers a prompt attempt of any run of a tree: (the run's plan, the attempt).
type TreeReplyFn<'f> = Box<dyn FnMut(&Plan, &StartStep) -> Reply + 'f>;
/// Decides an approval of any run: (the run's id, key, request).
type TreeDecideFn<'f> = Box<dyn FnMut(&str, &str, &str) -> Option<(u64, Event)> + 'f>;
/// What an answer cost: (run id, the attempt) → spend.
type TreeChargeFn<'f> = Box<dyn FnMut(&str, &StartStep) -> Spend + 'f>;

/// Runs an execution and the child executions of its sub-workflows (taken from
/// [`Plan::sub_workflow`]) in one virtual clock, as a driver would: children
/// start when asked, report back (`ChildStarted`, `ChildWaiting`,
/// `ChildCompleted`/`ChildFailed`), and are paused, resumed and cancelled by
/// `ControlChild`. Every prompt attempt, of any run, is answered by one function.
pub struct TreeSimulator<'f> {
    pub runs: Vec<TreeRun>,
    pub now: u64,
    reply: TreeReplyFn<'f>,
    decide: Option<TreeDecideFn<'f>>,
    charge: Option<TreeChargeFn<'f>>,
    /// What each answer in flight will cost, charged when it arrives:
    /// (run, key, attempt) → spend.
    charges: BTreeMap<(usize, String, u32), Spend>,
    /// Every charge made so far, over all runs.
    pub charged: Spend,
    /// (due, seq) → (run, event)
    pending: BTreeMap<(u64, u64), (usize, Event)>,
    seq: u64,
    /// Every action, with its time and run.
    pub log: Vec<(u64, usize, Action)>,
}

impl<'f> TreeSimulator<'f> {
    pub fn new(
        root: Execution,
        start_at: u64,
        reply: impl FnMut(&Plan, &StartStep) -> Reply + 'f,
    ) -> TreeSimulator<'f> {
        let wake = root.next_wakeup();
        TreeSimulator {
            runs: vec![TreeRun {
                id: "root".into(),
                exec: root,
                parent: None,
                wake,
            }],
            now: start_at,
            reply: Box::new(reply),
            decide: None,
            charge: None,
            charges: BTreeMap::new(),
            charged: Spend::default(),
            pending: BTreeMap::new(),
            seq: 0,
            log: Vec::new(),
        }
    }

    /// Decide approvals of any run: (run id, key, request) → (delay, decision).
    pub fn with_decisions(
        mut self,
        f: impl FnMut(&str, &str, &str) -> Option<(u64, Event)> + 'f,
    ) -> Self {
        self.decide = Some(Box::new(f));
        self
    }

    /// Charge every answer (of any run) what `f` says it cost, as a driver
    /// reports an answer's usage: children run on the budget their parent
    /// gives them, report what they spent, and pause their parent when they
    /// use it up.
    pub fn with_charges(mut self, f: impl FnMut(&str, &StartStep) -> Spend + 'f) -> Self {
        self.charge = Some(Box::new(f));
        self
    }

    /// Deliver `event` to run `run` at virtual time `at`.
    pub fn schedule(&mut self, at: u64, run: usize, event: Event) {
        self.seq += 1;
        self.pending.insert((at, self.seq), (run, event));
    }

    /// The run with this id.
    pub fn run_by_id(&self, id: &str) -> Option<&TreeRun> {
        self.runs.iter().find(|r| r.id == id)
    }

    /// Feed `event` to run `r` now and carry out what it asks.
    pub fn feed(&mut self, r: usize, event: Event) -> Result<(), ExecError> {
        if let Event::StepSucceeded { key, attempt, .. } | Event::StepFailed { key, attempt, .. } =
            &event
            && let Some(spend) = self.charges.remove(&(r, key.clone(), *attempt))
        {
            self.runs[r].exec.charge(key, *attempt, spend);
            self.charged.usd += spend.usd;
            self.charged.tokens += spend.tokens;
        }
        let before = self.runs[r].exec.state();
        let actions = self.runs[r].exec.handle(event, self.now)?;
        // Resumed and paused again in one event is a change too.
        let changed = actions
            .iter()
            .any(|a| matches!(a, Action::ExecutionChanged { .. }));
        self.apply(r, actions);
        let after = self.runs[r].exec.state();
        if before != after || changed {
            self.report_to_parent(r, after)?;
        }
        Ok(())
    }

    /// Tell run `r`'s parent what became of it.
    fn report_to_parent(&mut self, r: usize, state: ExecutionState) -> Result<(), ExecError> {
        let Some((p, key, attempt)) = self.runs[r].parent.clone() else {
            return Ok(());
        };
        let event = self.runs[r]
            .exec
            .report_for_parent(&key, attempt)
            .unwrap_or(Event::ChildWaiting {
                key,
                attempt,
                waiting: state == ExecutionState::Waiting,
            });
        // The parent may have let go of the child already (it cancelled it).
        match self.feed(p, event) {
            Ok(()) | Err(ExecError::Stale { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The run that is the child `(key, attempt)` of run `r`.
    fn child_of(&self, r: usize, key: &str, attempt: u32) -> Option<usize> {
        self.runs.iter().position(|x| {
            x.parent
                .as_ref()
                .is_some_and(|(p, k, n)| *p == r && k == key && *n == attempt)
        })
    }

    fn apply(&mut self, r: usize, actions: Vec<Action>) {
        for a in actions {
            match &a {
                Action::StartStep(s) => {
                    let reply = (self.reply)(self.runs[r].exec.plan(), s);
                    let (key, attempt) = (s.key.clone(), s.attempt);
                    if let Some(f) = &mut self.charge {
                        let spend = f(&self.runs[r].id, s);
                        self.charges.insert((r, key.clone(), attempt), spend);
                    }
                    match reply {
                        Reply::Succeed { after_ms, output } => self.schedule(
                            self.now + after_ms,
                            r,
                            Event::StepSucceeded {
                                key,
                                attempt,
                                output,
                            },
                        ),
                        Reply::Fail { after_ms, error } => self.schedule(
                            self.now + after_ms,
                            r,
                            Event::StepFailed {
                                key,
                                attempt,
                                error,
                            },
                        ),
                        Reply::Hang => {}
                    }
                }
                Action::AbortStep { key, attempt, .. } => {
                    self.pending.retain(|_, (run, ev)| {
                        !(*run == r
                            && matches!(ev, Event::StepSucceeded { key: k, attempt: n, .. }
                                | Event::StepFailed { key: k, attempt: n, .. } if k == key && n == attempt))
                    });
                }
                Action::StartChild(c) => self.start_child(r, c),
                Action::ControlChild {
                    key,
                    attempt,
                    control,
                } => {
                    if let Some(c) = self.child_of(r, key, *attempt) {
                        let event = match control {
                            ChildControl::Pause { immediate } => Event::Pause {
                                immediate: *immediate,
                            },
                            ChildControl::Resume => Event::Resume,
                            ChildControl::Cancel { reason } => Event::Cancel {
                                reason: Some(format!("the parent step was stopped ({reason:?})")),
                            },
                        };
                        self.schedule(self.now, c, event);
                    }
                }
                Action::BudgetChild {
                    key,
                    attempt,
                    budget,
                } => {
                    if let Some(c) = self.child_of(r, key, *attempt) {
                        self.runs[c].exec.set_budget(*budget);
                    }
                }
                Action::AwaitDecision { key, prompt, .. } => {
                    let id = self.runs[r].id.clone();
                    if let Some(f) = &mut self.decide
                        && let Some((after, event)) = f(&id, key, prompt)
                    {
                        self.schedule(self.now + after, r, event);
                    }
                }
                Action::WakeAt { at } => self.runs[r].wake = Some(*at),
                _ => {}
            }
            self.log.push((self.now, r, a));
        }
    }

    fn start_child(&mut self, r: usize, c: &StartChild) {
        let parent = &self.runs[r];
        let id = format!("{}/{}#{}", parent.id, c.key, c.attempt);
        let sub = parent
            .exec
            .plan()
            .index_of(&c.key)
            .and_then(|i| parent.exec.plan().sub_workflow(i))
            .cloned();
        let fail = |message: String| Event::ChildFailed {
            key: c.key.clone(),
            attempt: c.attempt,
            error: StepError::new(crate::ErrorClass::Unavailable, message),
            spent: Spend::default(),
        };
        let Some(sub) = sub else {
            let e = fail(format!(
                "the sub-workflow `{}` was not loaded with the plan",
                c.workflow
            ));
            self.schedule(self.now, r, e);
            return;
        };
        let seed = parent.exec.seed() ^ u64::from(c.attempt);
        let mut exec = match Execution::new(sub.plan.clone(), c.inputs.clone(), seed) {
            Ok(e) => e,
            Err(e) => {
                self.schedule(self.now, r, fail(e.to_string()));
                return;
            }
        };
        if let Some(budget) = c.budget {
            exec.set_budget(budget);
        }
        self.runs.push(TreeRun {
            id: id.clone(),
            exec,
            parent: Some((r, c.key.clone(), c.attempt)),
            wake: None,
        });
        let child = self.runs.len() - 1;
        self.schedule(
            self.now,
            r,
            Event::ChildStarted {
                key: c.key.clone(),
                attempt: c.attempt,
                id,
            },
        );
        self.schedule(self.now, child, Event::Start);
    }

    /// Run until the root ends or nothing more can happen (a run waits for a
    /// decision nobody gives). `max_events` bounds the run.
    pub fn run(&mut self, max_events: usize) -> Result<ExecutionState, ExecError> {
        if self.runs[0].exec.state() == ExecutionState::Idle {
            self.feed(0, Event::Start)?;
        }
        for _ in 0..max_events {
            let next_event = self.pending.keys().next().copied();
            let next_wake = self
                .runs
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.exec.state().is_terminal())
                .filter_map(|(i, x)| x.wake.map(|w| (w, i)))
                .min();
            let event_first = match (next_event, next_wake) {
                (None, None) => break,
                (Some((t, _)), Some((w, _))) => t <= w,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if event_first {
                let Some(((t, _), (r, event))) = self.pending.pop_first() else {
                    break;
                };
                self.now = self.now.max(t);
                match self.feed(r, event) {
                    Ok(())
                    | Err(ExecError::Stale { .. })
                    | Err(ExecError::InvalidControl { .. })
                    | Err(ExecError::NotWaiting { .. }) => {}
                    Err(e) => return Err(e),
                }
            } else if let Some((w, r)) = next_wake {
                self.now = self.now.max(w);
                self.runs[r].wake = None;
                self.feed(r, Event::Tick)?;
            }
        }
        Ok(self.runs[0].exec.state())
    }
}
