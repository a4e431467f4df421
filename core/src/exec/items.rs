//! `forEach` steps: one attempt (or one child) per item of a list.
//!
//! When its turn comes the step computes its list (`ItemsListed`) and runs; its
//! items then start like attempts, lowest index first, sharing
//! `config.parallelism` with the rest of the run and capped by the step's
//! `maxConcurrency`. Each item is retried on its own by the step's retry policy.
//! An item that fails for good fails the step (its other items are stopped); an
//! empty list completes at once with `[]`; a list longer than `maxItems` fails
//! the step. When every item completed, the step's result is the JSON list of the
//! items' results in item order.
//!
//! Items are checkpointed one by one (a delta carries only the items that
//! changed). After a pause, a crash or a restore, only items that had not
//! completed run again; so does resuming a failed run, when the list comes out
//! the same.

use super::{
    AbortReason, Action, ChildControl, ChildLink, ExecError, Execution, Output, StartChild,
    StartStep, StepError, restore_output, with_feedback,
};
use crate::checkpoint::{ItemSnapshot, ItemsSnapshot, OutputRef, RestoreError};
use crate::model::{ErrorClass, ForEach, StepType};
use crate::retry::{self, Decision};
use crate::sort::VecSet;
use crate::state::StepState;
use crate::template::{
    Resolved, Template, WithItem, json_type_name, parse_output_json, render_value, resolve,
};
use serde_json::Value;
use std::sync::Arc;

/// A `forEach` step's items.
#[derive(Debug, Clone)]
pub struct Items {
    /// The list as JSON text (stored by hash, like an output).
    pub list: Output,
    pub runs: Vec<ItemRun>,
    // Derived, rebuilt on restore.
    /// Items in flight.
    running: u32,
    completed: u32,
    /// Items that can start (ready, never started or put back).
    startable: VecSet<u32>,
}

impl PartialEq for Items {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list && self.runs == other.runs
    }
}

impl Items {
    /// Items completed so far.
    pub fn completed(&self) -> usize {
        self.completed as usize
    }
    /// Items in flight.
    pub fn running(&self) -> usize {
        self.running as usize
    }
    pub fn len(&self) -> usize {
        self.runs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
    /// The item values.
    pub fn values(&self) -> &[Value] {
        match self.list.json() {
            Some(Value::Array(items)) => items,
            _ => &[],
        }
    }

    fn recount(&mut self) {
        self.running = 0;
        self.completed = 0;
        self.startable.clear();
        for (j, r) in self.runs.iter().enumerate() {
            match r.state {
                StepState::Running => self.running += 1,
                StepState::Completed => self.completed += 1,
                StepState::Ready => {
                    self.startable.insert(j as u32);
                }
                _ => {}
            }
        }
    }
}

/// One item's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRun {
    pub state: StepState,
    /// The step-wide number of its last attempt.
    pub attempt: u32,
    /// Failed attempts counted against the retry budget.
    pub failures: u32,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub deadline: Option<u64>,
    pub retry_at: Option<u64>,
    pub output: Option<Output>,
    pub error: Option<StepError>,
    pub reason: Option<String>,
    /// Its child in flight (`type: workflow`).
    pub child: Option<ChildLink>,
}

impl Default for ItemRun {
    fn default() -> Self {
        ItemRun {
            state: StepState::Ready,
            attempt: 0,
            failures: 0,
            started_at: None,
            finished_at: None,
            deadline: None,
            retry_at: None,
            output: None,
            error: None,
            reason: None,
            child: None,
        }
    }
}

impl Execution {
    fn items_mut(&mut self, i: usize) -> Option<&mut Items> {
        self.steps[i].items.as_deref_mut()
    }

    /// The list of `forEach` step `i`.
    fn render_list(&self, i: usize) -> Result<Vec<Value>, String> {
        let step = &self.plan.workflow.steps[i];
        match &step.for_each {
            None => Err("the step has no `forEach`".into()),
            Some(ForEach::List(items)) => match render_value(&Value::Array(items.clone()), self) {
                Ok(Value::Array(items)) => Ok(items),
                Ok(other) => Err(format!("`forEach` gave {}", json_type_name(&other))),
                Err(errs) => Err(errs
                    .into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>()
                    .join("; ")),
            },
            Some(ForEach::Template(text)) => {
                let template = Template::parse(text).map_err(|errs| {
                    errs.into_iter()
                        .map(|e| e.message)
                        .collect::<Vec<_>>()
                        .join("; ")
                })?;
                let Some(ph) = template.as_single() else {
                    return Err(format!(
                        "`forEach` must be one placeholder that renders a list, not `{text}`"
                    ));
                };
                let resolved = resolve(ph, self).map_err(|e| e.message)?;
                let raw = &ph.raw;
                let not_a_list = |what: &str| {
                    format!("`forEach: {raw}` must render a JSON list, but it renders {what}")
                };
                match resolved {
                    Resolved::Json(v) => match v.into_owned() {
                        Value::Array(items) => Ok(items),
                        // A list written as JSON text (an input given as text).
                        Value::String(s) => match parse_output_json(&s) {
                            Some(Value::Array(items)) => Ok(items),
                            _ => Err(not_a_list("text that is not a JSON list")),
                        },
                        other => Err(not_a_list(json_type_name(&other))),
                    },
                    Resolved::Text(t) => match parse_output_json(t) {
                        Some(Value::Array(items)) => Ok(items),
                        Some(other) => Err(not_a_list(json_type_name(&other))),
                        None => Err(not_a_list(
                            "text that is not JSON (ask the step for a JSON list, or use a path into its JSON)",
                        )),
                    },
                }
            }
        }
    }

    /// `forEach` step `i` is ready: compute its list and run.
    pub(super) fn list_items(&mut self, i: usize, now: u64) -> Result<(), ExecError> {
        let mut work = Vec::new();
        let list = match self.render_list(i) {
            Ok(list) => list,
            Err(msg) => {
                self.fail_step(i, StepError::new(ErrorClass::Template, msg), now, &mut work)?;
                return self.drain(work, now);
            }
        };
        let max = self.plan.workflow.steps[i].max_items();
        if list.len() > max as usize {
            let msg = format!(
                "`forEach` gave {} items, more than `maxItems` ({max}); raise `maxItems` or narrow the list",
                list.len()
            );
            self.fail_step(i, StepError::new(ErrorClass::Other, msg), now, &mut work)?;
            return self.drain(work, now);
        }
        let count = list.len();
        let value = Value::Array(list);
        let text: Arc<str> = Arc::from(value.to_string());
        let list = Output::with_json(text, Some(value));
        // The same list as before (resuming a failed run): completed items stay.
        let kept = match self.steps[i].items.take() {
            Some(old) if old.list.hash == list.hash => old.runs,
            _ => vec![ItemRun::default(); count],
        };
        let mut items = Items {
            list,
            runs: kept,
            running: 0,
            completed: 0,
            startable: VecSet::new(),
        };
        items.recount();
        let s = &mut self.steps[i];
        s.items = Some(Box::new(items));
        s.started_at = Some(now);
        s.finished_at = None;
        self.set_step(i, StepState::Running, now, None, None, None)?;
        self.actions.push(Action::ItemsListed {
            key: self.plan.key(i).to_owned(),
            count: u32::try_from(count).unwrap_or(u32::MAX),
            at: now,
        });
        self.refresh_ready(i);
        self.check_items_done(i, now)
    }

    /// `maxConcurrency` of step `i` (unbounded without it).
    fn item_cap(&self, i: usize) -> u32 {
        self.plan.workflow.steps[i]
            .max_concurrency
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// Keep `forEach` step `i` in the ready set exactly when it can start an item.
    pub(super) fn refresh_ready(&mut self, i: usize) {
        let cap = self.item_cap(i);
        let can = self.steps[i].state == StepState::Running
            && self.steps[i]
                .items
                .as_ref()
                .is_some_and(|it| !it.startable.is_empty() && it.running < cap);
        if can {
            self.ready.insert(i);
        } else {
            self.ready.remove(&i);
        }
    }

    /// Start the next item of `forEach` step `i`.
    pub(super) fn start_item(&mut self, i: usize, now: u64) -> Result<(), ExecError> {
        let Some(j) = self.items_mut(i).and_then(|it| it.startable.pop_first()) else {
            self.refresh_ready(i);
            return Ok(());
        };
        let j = j as usize;
        let plan = Arc::clone(&self.plan);
        let step = &plan.workflow.steps[i];
        let Some(items) = self.steps[i].items.as_ref() else {
            return Ok(());
        };
        let item = items.values().get(j).cloned().unwrap_or(Value::Null);
        let last_error = items.runs[j].error.clone();
        let deadline = step.timeout_ms.map(|t| now.saturating_add(t));
        let start = match step.kind {
            StepType::Workflow => self
                .child_inputs(i, Some((&item, j)))
                .map(|inputs| (None, Some(inputs))),
            _ => {
                let ctx = WithItem {
                    base: self,
                    item: &item,
                    index: j,
                };
                plan.prompt(i)
                    .and_then(|t| {
                        t.render(&ctx).map_err(|errors| {
                            errors
                                .iter()
                                .map(|e| e.message.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                    })
                    .map(|p| (Some(with_feedback(p, last_error.as_ref())), None))
                    .map_err(|msg| StepError::new(ErrorClass::Template, msg))
            }
        };
        let (prompt, inputs) = match start {
            Ok(x) => x,
            Err(err) => {
                // Not retried: the same item renders the same way.
                return self.item_failed_for_good(i, j, err, now);
            }
        };
        let allowance = match &prompt {
            Some(p) => self.within_budget(i, p, now)?.then_some(None),
            None => self.child_allowance(i, now)?,
        };
        let Some(allowance) = allowance else {
            // Paused, or waiting for answers: it starts later.
            if let Some(it) = self.items_mut(i) {
                it.startable.insert(j as u32);
            }
            self.refresh_ready(i);
            return Ok(());
        };
        let s = &mut self.steps[i];
        s.attempt = s.attempt.saturating_add(1);
        let attempt = s.attempt;
        let Some(items) = s.items.as_deref_mut() else {
            return Ok(());
        };
        let r = &mut items.runs[j];
        r.attempt = attempt;
        r.started_at = Some(now);
        r.finished_at = None;
        r.deadline = deadline;
        r.reason = None;
        items.running += 1;
        if inputs.is_some() {
            r.child = Some(ChildLink {
                held: allowance.map(|(_, held)| held),
                ..ChildLink::default()
            });
            self.children += 1;
        }
        self.running += 1;
        if let Some(d) = deadline {
            self.item_timers.insert((d, i, j as u32));
        }
        self.set_item(i, j, StepState::Running, now, None, None, None)?;
        let item_no = Some(j as u32);
        self.actions.push(match inputs {
            Some(inputs) => Action::StartChild(StartChild {
                key: step.key.clone(),
                attempt,
                workflow: step.workflow.clone().unwrap_or_default(),
                inputs,
                deadline,
                item: item_no,
                budget: allowance.map(|(budget, _)| budget),
            }),
            None => Action::StartStep(StartStep {
                key: step.key.clone(),
                attempt,
                agent: step.agent.clone(),
                prompt: prompt.unwrap_or_default(),
                deadline,
                output_schema: plan.output_schemas[i].clone(),
                item: item_no,
                settings: step.settings(),
                cache: step.cache_use(&plan.workflow.config),
            }),
        });
        self.refresh_ready(i);
        Ok(())
    }

    /// Bookkeeping when item `j`'s attempt or child stops (for any reason).
    pub(super) fn finish_item(&mut self, i: usize, j: usize) {
        let Some(items) = self.steps[i].items.as_deref_mut() else {
            return;
        };
        let r = &mut items.runs[j];
        if let Some(d) = r.deadline.take() {
            self.item_timers.remove(&(d, i, j as u32));
        }
        items.running = items.running.saturating_sub(1);
        self.running = self.running.saturating_sub(1);
        if let Some(link) = r.child.take() {
            self.release_child(&link);
        }
    }

    /// An item's attempt answered.
    pub(super) fn item_succeeded(
        &mut self,
        i: usize,
        j: usize,
        output: String,
        now: u64,
    ) -> Result<(), ExecError> {
        self.finish_item(i, j);
        match self.check_output(i, output) {
            Ok(out) => self.item_done(i, j, out, now),
            Err(err) => self.fail_item(i, j, err, now),
        }
    }

    pub(super) fn item_failed(
        &mut self,
        i: usize,
        j: usize,
        error: StepError,
        now: u64,
    ) -> Result<(), ExecError> {
        self.finish_item(i, j);
        self.fail_item(i, j, error, now)
    }

    /// Item `j` completed with `out`.
    pub(super) fn item_done(
        &mut self,
        i: usize,
        j: usize,
        out: Output,
        now: u64,
    ) -> Result<(), ExecError> {
        let hash = out.hash.clone();
        if let Some(items) = self.items_mut(i) {
            let r = &mut items.runs[j];
            r.output = Some(out);
            r.error = None;
            r.finished_at = Some(now);
            items.completed += 1;
        }
        self.set_item(i, j, StepState::Completed, now, None, None, Some(hash))?;
        self.refresh_ready(i);
        self.check_items_done(i, now)
    }

    /// An item's attempt failed: retry it or fail the step, decided as for any
    /// attempt (`crate::retry`: the step's policy, `config.maxRetries`, the
    /// provider's settings), with a jitter of the item's own so that items
    /// failing together (a rate limit) do not all retry at the same time.
    pub(super) fn fail_item(
        &mut self,
        i: usize,
        j: usize,
        mut err: StepError,
        now: u64,
    ) -> Result<(), ExecError> {
        let provider = self.provider_retry(i, &mut err);
        let Some(items) = self.items_mut(i) else {
            return Ok(());
        };
        let r = &mut items.runs[j];
        r.failures = r.failures.saturating_add(1);
        r.finished_at = Some(now);
        let failures = r.failures;
        let key = format!("{}#{j}", self.plan.key(i));
        let decision = retry::decide(
            self.plan.workflow.steps[i].retry_policy.as_ref(),
            self.plan.workflow.config.max_retries,
            &provider,
            retry::Failure {
                class: err.class,
                retry_after_ms: err.retry_after_ms,
                failures,
            },
            super::jitter(self.seed, &key, failures),
        );
        let (delay, reason) = match decision {
            Decision::Retry { delay_ms, reason } => (delay_ms, reason),
            Decision::Fail { reason } => {
                if let Some(items) = self.items_mut(i) {
                    items.runs[j].reason = reason;
                }
                return self.item_failed_for_good(i, j, err, now);
            }
        };
        let at = now.saturating_add(delay);
        if let Some(items) = self.items_mut(i) {
            let r = &mut items.runs[j];
            r.retry_at = Some(at);
            r.error = Some(err.clone());
        }
        self.item_timers.insert((at, i, j as u32));
        self.set_item(
            i,
            j,
            StepState::WaitingRetry,
            now,
            Some(reason),
            Some(err),
            None,
        )?;
        self.refresh_ready(i);
        Ok(())
    }

    /// Item `j` failed without a retry left: the step fails, its other items stop.
    fn item_failed_for_good(
        &mut self,
        i: usize,
        j: usize,
        err: StepError,
        now: u64,
    ) -> Result<(), ExecError> {
        if let Some(items) = self.items_mut(i) {
            items.runs[j].error = Some(err.clone());
            items.runs[j].finished_at = Some(now);
            items.startable.remove(&(j as u32));
        }
        let reason = self.items_mut(i).and_then(|it| it.runs[j].reason.take());
        self.set_item(
            i,
            j,
            StepState::Failed,
            now,
            reason,
            Some(err.clone()),
            None,
        )?;
        let why = format!("item {j} failed");
        self.cancel_items(i, now, AbortReason::RunFailed, &why)?;
        let count = self.steps[i].items.as_ref().map_or(0, |it| it.runs.len());
        let step_err = StepError::new(
            err.class,
            format!("item {j} (of {count}) failed: {}", err.message),
        );
        self.ready.remove(&i);
        let mut work = Vec::new();
        self.fail_step(i, step_err, now, &mut work)?;
        self.drain(work, now)
    }

    /// When every item of step `i` completed, the step completes with their
    /// results as a JSON list.
    fn check_items_done(&mut self, i: usize, now: u64) -> Result<(), ExecError> {
        let Some(items) = self.steps[i].items.as_ref() else {
            return Ok(());
        };
        if self.steps[i].state != StepState::Running || items.completed() < items.runs.len() {
            return Ok(());
        }
        let results: Vec<Value> = items
            .runs
            .iter()
            .map(|r| match &r.output {
                Some(o) => o
                    .json()
                    .cloned()
                    .unwrap_or_else(|| Value::String(o.text.to_string())),
                None => Value::Null,
            })
            .collect();
        let value = Value::Array(results);
        let text: Arc<str> = Arc::from(value.to_string());
        self.ready.remove(&i);
        let mut work = Vec::new();
        self.complete_step(i, Output::with_json(text, Some(value)), now, &mut work)?;
        self.drain(work, now)
    }

    /// Stop step `i`'s items: abort those in flight (cancel children), cancel
    /// those that wait. Completed and failed items stay as they are.
    pub(super) fn cancel_items(
        &mut self,
        i: usize,
        now: u64,
        why: AbortReason,
        reason: &str,
    ) -> Result<(), ExecError> {
        let n = self.steps[i].items.as_ref().map_or(0, |it| it.runs.len());
        for j in 0..n {
            let Some(r) = self.steps[i].items.as_ref().map(|it| &it.runs[j]) else {
                return Ok(());
            };
            match r.state {
                StepState::Running => {
                    let attempt = r.attempt;
                    let child = r.child.is_some();
                    self.finish_item(i, j);
                    self.actions.push(if child {
                        Action::ControlChild {
                            key: self.plan.key(i).to_owned(),
                            attempt,
                            control: ChildControl::Cancel { reason: why },
                        }
                    } else {
                        Action::AbortStep {
                            key: self.plan.key(i).to_owned(),
                            attempt,
                            reason: why,
                        }
                    });
                }
                StepState::Ready | StepState::WaitingRetry => {
                    if let Some(t) = r.retry_at {
                        self.item_timers.remove(&(t, i, j as u32));
                    }
                }
                _ => continue,
            }
            if let Some(items) = self.items_mut(i) {
                items.runs[j].retry_at = None;
                items.startable.remove(&(j as u32));
            }
            self.set_item(
                i,
                j,
                StepState::Cancelled,
                now,
                Some(reason.to_owned()),
                None,
                None,
            )?;
        }
        self.ready.remove(&i);
        Ok(())
    }

    /// Put step `i`'s items in flight back to ready (a pause now, or the process
    /// stopped): they run again without using a retry. Children run on.
    pub(super) fn requeue_items(
        &mut self,
        i: usize,
        now: u64,
        reason: AbortReason,
        why: &str,
    ) -> Result<(), ExecError> {
        let n = self.steps[i].items.as_ref().map_or(0, |it| it.runs.len());
        for j in 0..n {
            let Some(r) = self.steps[i].items.as_ref().map(|it| &it.runs[j]) else {
                return Ok(());
            };
            if r.state != StepState::Running || r.child.is_some() {
                continue;
            }
            let attempt = r.attempt;
            self.finish_item(i, j);
            self.actions.push(Action::AbortStep {
                key: self.plan.key(i).to_owned(),
                attempt,
                reason,
            });
            self.set_item(
                i,
                j,
                StepState::Ready,
                now,
                Some(format!("{why}; runs again on resume")),
                None,
                None,
            )?;
            if let Some(items) = self.items_mut(i) {
                items.startable.insert(j as u32);
            }
        }
        self.refresh_ready(i);
        Ok(())
    }

    /// Resuming a failed run: failed and cancelled items run again with a fresh
    /// retry budget (if the list comes out the same); completed ones are kept.
    pub(super) fn reset_items(&mut self, i: usize, now: u64) -> Result<(), ExecError> {
        let n = self.steps[i].items.as_ref().map_or(0, |it| it.runs.len());
        for j in 0..n {
            let Some(items) = self.items_mut(i) else {
                return Ok(());
            };
            let r = &mut items.runs[j];
            if !matches!(r.state, StepState::Failed | StepState::Cancelled) {
                continue;
            }
            r.state = StepState::Ready;
            r.failures = 0;
            r.error = None;
            r.retry_at = None;
            r.finished_at = None;
            let attempt = r.attempt;
            self.dirty_items.insert((i, j as u32));
            self.actions.push(Action::ItemChanged {
                key: self.plan.key(i).to_owned(),
                item: j as u32,
                state: StepState::Ready,
                attempt,
                at: now,
                reason: Some("reset on resume".into()),
                error: None,
                output_hash: None,
            });
        }
        if let Some(items) = self.items_mut(i) {
            items.recount();
        }
        Ok(())
    }

    /// Item timers that are due: attempt deadlines and retries.
    pub(super) fn fire_item_timers(&mut self, now: u64) -> Result<(), ExecError> {
        while let Some(&(t, i, j)) = self.item_timers.first() {
            if t > now {
                break;
            }
            self.item_timers.pop_first();
            let j = j as usize;
            let Some(r) = self.steps[i].items.as_ref().and_then(|it| it.runs.get(j)) else {
                continue;
            };
            if r.state == StepState::Running && r.deadline == Some(t) {
                let attempt = r.attempt;
                let child = r.child.is_some();
                self.finish_item(i, j);
                let key = self.plan.key(i).to_owned();
                self.actions.push(if child {
                    Action::ControlChild {
                        key,
                        attempt,
                        control: ChildControl::Cancel {
                            reason: AbortReason::Timeout,
                        },
                    }
                } else {
                    Action::AbortStep {
                        key,
                        attempt,
                        reason: AbortReason::Timeout,
                    }
                });
                let limit = self.plan.workflow.steps[i].timeout_ms.unwrap_or(0);
                let what = if child { "child run" } else { "attempt" };
                self.fail_item(
                    i,
                    j,
                    StepError::new(
                        ErrorClass::Timeout,
                        format!("the {what} ran past its limit of {limit} ms"),
                    ),
                    now,
                )?;
            } else if r.state == StepState::WaitingRetry && r.retry_at == Some(t) {
                if let Some(items) = self.items_mut(i) {
                    items.runs[j].retry_at = None;
                    items.startable.insert(j as u32);
                }
                self.set_item(i, j, StepState::Ready, now, None, None, None)?;
                self.refresh_ready(i);
            }
        }
        Ok(())
    }

    /// Move item `j` of step `i` to `to`, and record it.
    #[allow(clippy::too_many_arguments)]
    fn set_item(
        &mut self,
        i: usize,
        j: usize,
        to: StepState,
        now: u64,
        reason: Option<String>,
        error: Option<StepError>,
        output_hash: Option<String>,
    ) -> Result<(), ExecError> {
        let Some(items) = self.steps[i].items.as_deref_mut() else {
            return Ok(());
        };
        let r = &mut items.runs[j];
        let from = r.state;
        r.state = from.transition(to)?;
        if reason.is_some()
            || matches!(
                to,
                StepState::Ready | StepState::WaitingRetry | StepState::Running
            )
        {
            r.reason = reason.clone();
        }
        let attempt = r.attempt;
        self.count_transition(from, to);
        self.dirty_items.insert((i, j as u32));
        self.checkpoint_due |= to.is_settled();
        self.actions.push(Action::ItemChanged {
            key: self.plan.key(i).to_owned(),
            item: j as u32,
            state: to,
            attempt,
            at: now,
            reason,
            error,
            output_hash,
        });
        Ok(())
    }

    /// Recompute the item counters and timers (after a restore or a reset).
    pub(super) fn rebuild_items(&mut self) {
        for i in 0..self.steps.len() {
            let state = self.steps[i].state;
            let Some(items) = self.steps[i].items.as_deref_mut() else {
                continue;
            };
            items.recount();
            if state != StepState::Running {
                continue;
            }
            for (j, r) in items.runs.iter().enumerate() {
                match r.state {
                    StepState::Running => {
                        self.running += 1;
                        if let Some(link) = &r.child {
                            self.children += 1;
                            self.waiting_children += usize::from(link.waiting);
                        }
                        if let Some(d) = r.deadline {
                            self.item_timers.insert((d, i, j as u32));
                        }
                    }
                    StepState::WaitingRetry => {
                        self.retrying += 1;
                        if let Some(t) = r.retry_at {
                            self.item_timers.insert((t, i, j as u32));
                        }
                    }
                    _ => {}
                }
            }
            self.refresh_ready(i);
        }
    }

    /// Step `i`'s items for a checkpoint: every item that left its initial
    /// state, or only those in `only` (a delta's changed items).
    pub(super) fn items_snapshot(&self, i: usize, only: Option<&[u32]>) -> Option<ItemsSnapshot> {
        let items = self.steps[i].items.as_ref()?;
        let snap = |j: usize| {
            let r = &items.runs[j];
            ItemSnapshot {
                state: r.state,
                attempt: r.attempt,
                failures: r.failures,
                started_at: r.started_at,
                finished_at: r.finished_at,
                deadline: r.deadline,
                retry_at: r.retry_at,
                output: r.output.as_ref().map(output_ref),
                error: r.error.clone(),
                reason: r.reason.clone(),
                child: r.child.clone(),
            }
        };
        let chosen: Box<dyn Iterator<Item = usize>> = match only {
            Some(list) => Box::new(list.iter().map(|&j| j as usize)),
            None => Box::new(0..items.runs.len()),
        };
        let entries = chosen
            .filter(|&j| j < items.runs.len())
            .map(|j| (j as u32, snap(j)))
            // In a delta an item back in its initial state must be said; in a
            // full snapshot it is simply absent.
            .filter(|(_, s)| only.is_some() || !s.is_initial());
        Some(ItemsSnapshot {
            list: output_ref(&items.list),
            count: u32::try_from(items.runs.len()).unwrap_or(u32::MAX),
            items: crate::sort::btree_map(entries),
        })
    }
}

fn output_ref(o: &Output) -> OutputRef {
    OutputRef {
        hash: o.hash.clone(),
        bytes: o.text.len() as u64,
    }
}

/// A `forEach` step's items from a checkpoint. With an edited definition,
/// attempts that were in flight are lost (children run on).
pub(super) fn restore_items(
    key: &str,
    snap: &ItemsSnapshot,
    same: bool,
    output: &dyn Fn(&str) -> Option<Arc<str>>,
) -> Result<Items, RestoreError> {
    let list = restore_output(key, &snap.list, output)?;
    let count = match list.json() {
        Some(Value::Array(items)) => items.len(),
        _ => {
            return Err(RestoreError::Invalid(format!(
                "the checkpoint's list of step `{key}` is not a JSON list; it is corrupt"
            )));
        }
    };
    if count != snap.count as usize {
        return Err(RestoreError::Invalid(format!(
            "the checkpoint's list of step `{key}` has {count} items, but the checkpoint says {}; it is corrupt",
            snap.count
        )));
    }
    let mut runs = vec![ItemRun::default(); count];
    for (&j, s) in &snap.items {
        let Some(slot) = runs.get_mut(j as usize) else {
            return Err(RestoreError::Invalid(format!(
                "the checkpoint has item {j} of step `{key}`, whose list has {count} items; it is corrupt"
            )));
        };
        let out = match &s.output {
            Some(r) => Some(restore_output(key, r, output)?),
            None => None,
        };
        if s.state == StepState::Completed && out.is_none() {
            return Err(RestoreError::MissingOutput {
                step: format!("{key}[{j}]"),
                hash: String::new(),
            });
        }
        let state = match s.state {
            StepState::Running if !same && s.child.is_none() => StepState::Ready,
            st => st,
        };
        *slot = ItemRun {
            state,
            attempt: s.attempt,
            failures: s.failures,
            started_at: s.started_at,
            finished_at: s.finished_at,
            deadline: (state == StepState::Running)
                .then_some(s.deadline)
                .flatten(),
            retry_at: s.retry_at,
            output: out,
            error: s.error.clone(),
            reason: s.reason.clone(),
            child: (state == StepState::Running)
                .then(|| s.child.clone())
                .flatten(),
        };
    }
    let mut items = Items {
        list,
        runs,
        running: 0,
        completed: 0,
        startable: VecSet::new(),
    };
    items.recount();
    Ok(items)
}
