//! A virtual-time driver for an [`Execution`]: attempts are answered by a function
//! you give, after a simulated latency, and time jumps straight to the next thing
//! that happens. For tests, benchmarks, property tests and instant dry runs; it
//! follows the same driver contract as the real drivers.

use crate::exec::{Action, Event, ExecError, Execution, StartStep, StepError};
use crate::state::ExecutionState;
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

/// An answer waiting to be delivered: (step key, attempt, outcome).
type PendingReply = (String, u32, Result<String, StepError>);

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
        Simulator {
            exec,
            now: start_at,
            reply,
            pending: BTreeMap::new(),
            controls: BinaryHeap::new(),
            control_events: BTreeMap::new(),
            wake: None,
            seq: 0,
            log: Vec::new(),
            journal: Vec::new(),
        }
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
                                (s.key.clone(), s.attempt, Ok(output)),
                            );
                        }
                        Reply::Fail { after_ms, error } => {
                            self.pending.insert(
                                (self.now + after_ms, self.seq),
                                (s.key.clone(), s.attempt, Err(error)),
                            );
                        }
                        Reply::Hang => {}
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
                        Ok(()) | Err(ExecError::InvalidControl { .. }) => {}
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
                    Ok(output) => Event::StepSucceeded {
                        key,
                        attempt,
                        output,
                    },
                    Err(error) => Event::StepFailed {
                        key,
                        attempt,
                        error,
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
