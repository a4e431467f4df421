//! Turning the executor's actions into one database commit.

use crate::providers::CallOutcome;
use crate::store::{
    AttemptEnd, AttemptStart, Batch, CheckpointWrite, ExecutionUpdate, Lease, NewEvent,
    StepStateRow,
};
use ax_core::exec::{Action, Execution};
use ax_core::plan::output_hash;
use ax_core::{ExecutionState, StepState};
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
                    // Results the executor made itself (a decision, a forEach
                    // list of results, a child's result) are stored here; a
                    // provider's answer was stored with it.
                    if *state == StepState::Completed
                        && let Some(o) = exec.step(key).and_then(|s| s.output.as_ref())
                    {
                        self.store_output(&o.hash, &o.text);
                    }
                    // A waiting approval's event carries its request.
                    let request = (*state == StepState::Waiting)
                        .then(|| exec.step(key).and_then(|s| s.request.clone()))
                        .flatten();
                    let message = error
                        .as_ref()
                        .map(|e| e.message.clone())
                        .or_else(|| reason.clone())
                        .or(request);
                    self.batch.events.push(NewEvent {
                        at: *at,
                        kind: "step",
                        step: Some(key.clone()),
                        state: Some(state.as_str().to_owned()),
                        attempt: Some(*attempt),
                        message,
                        // The class, and what was decided about it ("retry 1 of 2
                        // in 480 ms", "auth errors are not retried"); for an
                        // attempt that starts, the step's own model settings.
                        data: match error {
                            Some(e) => Some(match reason {
                                Some(r) => serde_json::json!({ "class": e.class, "reason": r }),
                                None => serde_json::json!({ "class": e.class }),
                            }),
                            None if from_cache(meta, key, *attempt) => {
                                Some(serde_json::json!({ "cached": true }))
                            }
                            None => start_settings(actions, key, *attempt),
                        },
                    });
                    self.attempt_changed(
                        actions,
                        meta,
                        running,
                        key,
                        None,
                        *state,
                        *attempt,
                        *at,
                        error.as_ref(),
                    );
                }
                Action::ExecutionChanged { state, at, reason } => {
                    self.batch.execution = Some(ExecutionUpdate {
                        state: *state,
                        reason: exec.reason().map(str::to_owned).or_else(|| reason.clone()),
                        started_at: exec.started_at(),
                        finished_at: exec.finished_at(),
                        // Nothing drives a waiting execution: when to wake it.
                        wake_at: (*state == ExecutionState::Waiting)
                            .then(|| exec.next_wakeup())
                            .flatten(),
                    });
                    // A pause at the budget says what was spent of what.
                    let budget = (*state == ExecutionState::Paused
                        && reason.as_deref().is_some_and(|r| r.starts_with("budget:")))
                    .then(|| {
                        serde_json::json!({
                            "reason": "budget",
                            "spent": exec.spent(),
                            "budget": exec.budget(),
                        })
                    });
                    self.batch.events.push(NewEvent {
                        at: *at,
                        kind: "execution",
                        step: None,
                        state: Some(state.as_str().to_owned()),
                        attempt: None,
                        message: reason.clone(),
                        data: budget,
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
                Action::ItemsListed { key, count, at } => {
                    self.refresh_step(exec, key);
                    if let Some(it) = exec.step(key).and_then(|s| s.items.as_ref()) {
                        self.store_output(&it.list.hash, &it.list.text);
                    }
                    self.batch.events.push(NewEvent {
                        at: *at,
                        kind: "item",
                        step: Some(key.clone()),
                        state: Some("listed".to_owned()),
                        attempt: None,
                        message: Some(format!(
                            "{count} item{}",
                            if *count == 1 { "" } else { "s" }
                        )),
                        data: Some(serde_json::json!({ "count": count })),
                    });
                }
                Action::ItemChanged {
                    key,
                    item,
                    state,
                    attempt,
                    at,
                    reason,
                    error,
                    ..
                } => {
                    self.refresh_step(exec, key);
                    if *state == StepState::Completed
                        && let Some(o) = exec
                            .step(key)
                            .and_then(|s| s.items.as_ref())
                            .and_then(|it| it.runs.get(*item as usize))
                            .and_then(|r| r.output.as_ref())
                    {
                        self.store_output(&o.hash, &o.text);
                    }
                    self.batch.events.push(NewEvent {
                        at: *at,
                        kind: "item",
                        step: Some(key.clone()),
                        state: Some(state.as_str().to_owned()),
                        attempt: Some(*attempt),
                        message: error
                            .as_ref()
                            .map(|e| e.message.clone())
                            .or_else(|| reason.clone()),
                        data: Some(match error {
                            Some(e) => serde_json::json!({ "item": item, "class": e.class }),
                            None => serde_json::json!({ "item": item }),
                        }),
                    });
                    self.attempt_changed(
                        actions,
                        meta,
                        running,
                        key,
                        Some(*item),
                        *state,
                        *attempt,
                        *at,
                        error.as_ref(),
                    );
                }
                // Effects: the engine carries them out after the commit.
                Action::AwaitDecision { .. }
                | Action::StartChild(_)
                | Action::ControlChild { .. }
                | Action::BudgetChild { .. } => {}
            }
        }
    }

    /// An output to store (once per batch; the store ignores one it has).
    fn store_output(&mut self, hash: &str, text: &Arc<str>) {
        if !self.batch.outputs.iter().any(|(h, _)| h == hash) {
            self.batch.outputs.push((hash.to_owned(), text.clone()));
        }
    }

    /// The step's row, as it is now (several changes in one batch: the last wins).
    fn refresh_step(&mut self, exec: &Execution, key: &str) {
        if let Some(row) = step_row(exec, key) {
            self.batch.steps.retain(|r| r.key != key);
            self.batch.steps.push(row);
        }
    }

    /// An attempt (of a step, or of one of its items) started or stopped: open
    /// or close its row. A step or item goes `running` for an attempt or a
    /// child run; a forEach step itself runs no attempt, nor does an approval.
    #[allow(clippy::too_many_arguments)]
    fn attempt_changed(
        &mut self,
        actions: &[Action],
        meta: Option<(&str, u32, &CallOutcome)>,
        running: &mut HashSet<(String, u32)>,
        key: &String,
        item: Option<u32>,
        state: StepState,
        attempt: u32,
        at: u64,
        error: Option<&ax_core::StepError>,
    ) {
        let now = self.batch.now;
        if state == StepState::Running {
            let prompt = actions.iter().find_map(|x| match x {
                Action::StartStep(s) if s.key == *key && s.attempt == attempt => {
                    Some(s.prompt.clone())
                }
                Action::StartChild(c) if c.key == *key && c.attempt == attempt => {
                    Some(format!("sub-workflow {}", c.workflow))
                }
                _ => None,
            });
            let Some(prompt) = prompt else {
                return;
            };
            self.batch.starts.push(AttemptStart {
                key: key.clone(),
                attempt,
                prompt,
                at,
                item,
            });
            running.insert((key.clone(), attempt));
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
            running.remove(&(key.clone(), attempt));
            let mut end = AttemptEnd {
                key: key.clone(),
                attempt,
                state: match state {
                    StepState::Ready => "aborted".to_owned(),
                    StepState::WaitingRetry => "failed".to_owned(),
                    s => s.as_str().to_owned(),
                },
                error_class: error.map(|e| e.class.as_str().to_owned()),
                error: error.map(|e| e.message.clone()),
                at: now,
                ..AttemptEnd::default()
            };
            if let Some((mk, ma, outcome)) = meta
                && mk == key
                && ma == attempt
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
                && *ha == attempt
            {
                end.output_hash = Some(hash.clone());
            }
            self.batch.ends.push(end);
        }
    }

    pub fn finish(mut self, checkpoint: Option<(CheckpointWrite, bool, u64)>) -> Batch {
        self.batch.checkpoint = checkpoint;
        self.batch
    }
}

/// The answer being recorded for `(key, attempt)` came from the response cache.
fn from_cache(meta: Option<(&str, u32, &CallOutcome)>, key: &str, attempt: u32) -> bool {
    meta.is_some_and(|(k, a, o)| {
        k == key && a == attempt && o.provider == super::cache::CACHE_PROVIDER
    })
}

/// `{"settings": …}` when the attempt `(key, attempt)` starts in these actions
/// with model settings of its step's own.
fn start_settings(actions: &[Action], key: &str, attempt: u32) -> Option<serde_json::Value> {
    actions.iter().find_map(|a| match a {
        Action::StartStep(s) if s.key == key && s.attempt == attempt && !s.settings.is_empty() => {
            Some(serde_json::json!({ "settings": s.settings }))
        }
        _ => None,
    })
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
        request: s.request.clone(),
        items: s.items.as_ref().map(|it| {
            (
                u32::try_from(it.completed()).unwrap_or(u32::MAX),
                u32::try_from(it.len()).unwrap_or(u32::MAX),
            )
        }),
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
