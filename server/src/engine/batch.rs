//! Turning the executor's actions into one database commit.

use crate::providers::CallOutcome;
use crate::store::{
    AttemptEnd, AttemptStart, Batch, CheckpointWrite, ExecutionUpdate, Lease, NewEvent,
    StepStateRow,
};
use ax_core::StepState;
use ax_core::exec::{Action, Execution};
use ax_core::plan::output_hash;
use std::collections::HashSet;
use std::sync::Arc;

pub struct BatchBuilder {
    batch: Batch,
    /// The output hash of the answer being recorded, by (key, attempt).
    answer_hash: Option<(String, u32, String)>,
}

impl BatchBuilder {
    pub fn new(execution_id: &str, now: u64, lease: Option<Lease>) -> BatchBuilder {
        BatchBuilder {
            batch: Batch::new(execution_id, now, lease),
            answer_hash: None,
        }
    }

    /// Store an answer's text (whether or not it passed its schema: it is what
    /// the model said).
    pub fn output(&mut self, key: &str, attempt: u32, text: Arc<str>) {
        let hash = output_hash(&text);
        self.answer_hash = Some((key.to_owned(), attempt, hash.clone()));
        self.batch.outputs.push((hash, text));
    }

    pub fn log(&mut self, message: &str) {
        self.batch.events.push(NewEvent {
            at: self.batch.now,
            kind: "log",
            step: None,
            state: None,
            attempt: None,
            message: Some(message.to_owned()),
            data: None,
        });
    }

    /// Translate actions. `meta` is the provider answer being recorded, if any;
    /// `running` tracks which attempts have an open attempt row.
    pub fn add_actions(
        &mut self,
        exec: &Execution,
        actions: &[Action],
        meta: Option<(&str, u32, &CallOutcome)>,
        running: &mut HashSet<(String, u32)>,
    ) {
        let now = self.batch.now;
        for a in actions {
            match a {
                Action::StepChanged {
                    key,
                    state,
                    attempt,
                    at,
                    reason,
                    error,
                    ..
                } => {
                    if let Some(row) = step_row(exec, key) {
                        // Several changes of one step in one batch: the last wins.
                        self.batch.steps.retain(|r| r.key != *key);
                        self.batch.steps.push(row);
                    }
                    let message = error
                        .as_ref()
                        .map(|e| e.message.clone())
                        .or_else(|| reason.clone());
                    self.batch.events.push(NewEvent {
                        at: *at,
                        kind: "step",
                        step: Some(key.clone()),
                        state: Some(state.as_str().to_owned()),
                        attempt: Some(*attempt),
                        message,
                        // The class, and what was decided about it ("retry 1 of 2
                        // in 480 ms", "auth errors are not retried").
                        data: error.as_ref().map(|e| match reason {
                            Some(r) => serde_json::json!({ "class": e.class, "reason": r }),
                            None => serde_json::json!({ "class": e.class }),
                        }),
                    });
                    if *state == StepState::Running {
                        let prompt = actions.iter().find_map(|x| match x {
                            Action::StartStep(s) if s.key == *key && s.attempt == *attempt => {
                                Some(s.prompt.clone())
                            }
                            _ => None,
                        });
                        self.batch.starts.push(AttemptStart {
                            key: key.clone(),
                            attempt: *attempt,
                            prompt: prompt.unwrap_or_default(),
                            at: *at,
                        });
                        running.insert((key.clone(), *attempt));
                    } else if matches!(
                        state,
                        StepState::Completed
                            | StepState::Failed
                            | StepState::WaitingRetry
                            | StepState::Cancelled
                            | StepState::Ready
                    ) {
                        // Close the attempt's row if it is still open (the update
                        // only touches a `running` row: after a crash the attempt
                        // that was in flight is closed as `aborted` here).
                        running.remove(&(key.clone(), *attempt));
                        let mut end = AttemptEnd {
                            key: key.clone(),
                            attempt: *attempt,
                            state: match state {
                                StepState::Ready => "aborted".to_owned(),
                                StepState::WaitingRetry => "failed".to_owned(),
                                s => s.as_str().to_owned(),
                            },
                            error_class: error.as_ref().map(|e| e.class.as_str().to_owned()),
                            error: error.as_ref().map(|e| e.message.clone()),
                            at: now,
                            ..AttemptEnd::default()
                        };
                        if let Some((mk, ma, outcome)) = meta
                            && mk == key
                            && ma == *attempt
                        {
                            end.provider = Some(outcome.provider.clone());
                            end.model = Some(outcome.model.clone());
                            end.cost_usd = outcome.cost_usd;
                            end.latency_ms = Some(outcome.latency_ms);
                            if let Ok(c) = &outcome.result {
                                end.tokens_in = c.tokens_in;
                                end.tokens_out = c.tokens_out;
                            }
                        }
                        if let Some((hk, ha, hash)) = &self.answer_hash
                            && hk == key
                            && ha == attempt
                        {
                            end.output_hash = Some(hash.clone());
                        }
                        self.batch.ends.push(end);
                    }
                }
                Action::ExecutionChanged { state, at, reason } => {
                    self.batch.execution = Some(ExecutionUpdate {
                        state: *state,
                        reason: exec.reason().map(str::to_owned).or_else(|| reason.clone()),
                        started_at: exec.started_at(),
                        finished_at: exec.finished_at(),
                    });
                    self.batch.events.push(NewEvent {
                        at: *at,
                        kind: "execution",
                        step: None,
                        state: Some(state.as_str().to_owned()),
                        attempt: None,
                        message: reason.clone(),
                        data: None,
                    });
                }
                Action::Checkpoint => {
                    self.batch.events.push(NewEvent {
                        at: now,
                        kind: "checkpoint",
                        step: None,
                        state: Some(exec.state().as_str().to_owned()),
                        attempt: None,
                        message: None,
                        data: None,
                    });
                }
                Action::AbortStep { .. }
                | Action::StartStep(_)
                | Action::WakeAt { .. }
                | Action::Finished { .. } => {}
                // Approvals, forEach items and children (issue 11): the core and
                // its checkpoints carry them; rows and events for them come with
                // the server's part of that issue.
                Action::ItemsListed { .. }
                | Action::ItemChanged { .. }
                | Action::AwaitDecision { .. }
                | Action::StartChild(_)
                | Action::ControlChild { .. } => {}
            }
        }
    }

    pub fn finish(mut self, checkpoint: Option<(CheckpointWrite, bool, u64)>) -> Batch {
        self.batch.checkpoint = checkpoint;
        self.batch
    }
}

fn step_row(exec: &Execution, key: &str) -> Option<StepStateRow> {
    let s = exec.step(key)?;
    Some(StepStateRow {
        key: key.to_owned(),
        state: s.state,
        attempts: s.attempt,
        reason: s.reason.clone(),
        error_class: s.error.as_ref().map(|e| e.class.as_str().to_owned()),
        error: s.error.as_ref().map(|e| e.message.clone()),
        output_hash: s.output.as_ref().map(|o| o.hash.clone()),
        started_at: s.started_at,
        finished_at: s.finished_at,
    })
}

/// The current row of every step (after a restore or an import).
pub fn step_rows(exec: &Execution) -> Vec<StepStateRow> {
    exec.plan()
        .workflow
        .steps
        .iter()
        .filter_map(|s| step_row(exec, &s.key))
        .collect()
}

pub fn completed_count(exec: &Execution) -> u64 {
    exec.steps()
        .iter()
        .filter(|s| s.state == StepState::Completed)
        .count() as u64
}
