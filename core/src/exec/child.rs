//! `type: workflow` steps: each attempt (or each item's attempt) is a child
//! execution that the driver starts (`StartChild`), reports on
//! (`ChildStarted`, `ChildWaiting`, `ChildCompleted`, `ChildFailed`) and
//! controls (`ControlChild`: the parent's pause, resume and cancel reach its
//! children in flight; a timed-out or abandoned child is cancelled).
//!
//! A child takes a slot of the parent's `config.parallelism`, like an attempt; a
//! failed child is an attempt that failed (the step's retry policy applies, and
//! a retry is a new child). A child is an execution of its own: when the
//! parent's process stops, the child is not lost, and nothing runs it again.

use super::{
    AbortReason, Action, ChildLink, Event, ExecError, Execution, Output, Slot, Spend, StartChild,
};
use crate::model::{ErrorClass, StepType};
use crate::state::{ExecutionState, StepState};
use crate::template::{Context, WithItem, render_value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::StepError;

/// What the driver does to a child execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ChildControl {
    Pause {
        #[serde(default)]
        immediate: bool,
    },
    Resume,
    /// Cancel it; the parent no longer waits for it.
    Cancel {
        reason: AbortReason,
    },
}

impl Execution {
    /// Workflow step `i` (without `forEach`) starts a child.
    pub(super) fn start_child(&mut self, i: usize, now: u64) -> Result<(), ExecError> {
        let inputs = match self.child_inputs(i, None) {
            Ok(inputs) => inputs,
            Err(err) => {
                let mut work = Vec::new();
                self.fail_step(i, err, now, &mut work)?;
                return self.drain(work, now);
            }
        };
        let Some(allowance) = self.child_allowance(i, now)? else {
            // Paused, or waiting for what is in flight: it starts later.
            self.ready.insert(i);
            return Ok(());
        };
        let plan = Arc::clone(&self.plan);
        let step = &plan.workflow.steps[i];
        let deadline = step.timeout_ms.map(|t| now.saturating_add(t));
        let s = &mut self.steps[i];
        s.attempt = s.attempt.saturating_add(1);
        s.started_at = Some(now);
        s.finished_at = None;
        s.deadline = deadline;
        s.reason = None;
        s.child = Some(ChildLink {
            held: allowance.map(|(_, held)| held),
            ..ChildLink::default()
        });
        let attempt = s.attempt;
        if let Some(d) = deadline {
            self.timers.insert((d, i));
        }
        self.running += 1;
        self.children += 1;
        self.set_step(i, StepState::Running, now, None, None, None)?;
        self.actions.push(Action::StartChild(StartChild {
            key: step.key.clone(),
            attempt,
            workflow: step.workflow.clone().unwrap_or_default(),
            inputs,
            deadline,
            item: None,
            budget: allowance.map(|(budget, _)| budget),
        }));
        Ok(())
    }

    /// The inputs of a child of step `i` (for `item`, with `{{item}}` and
    /// `{{index}}` filled in).
    pub(super) fn child_inputs(
        &self,
        i: usize,
        item: Option<(&Value, usize)>,
    ) -> Result<BTreeMap<String, Value>, StepError> {
        let step = &self.plan.workflow.steps[i];
        let with_item;
        let ctx: &dyn Context = match item {
            Some((item, index)) => {
                with_item = WithItem {
                    base: self,
                    item,
                    index,
                };
                &with_item
            }
            None => self,
        };
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, v) in &step.inputs {
            match render_value(v, ctx) {
                Ok(v) => {
                    out.insert(name.clone(), v);
                }
                Err(errs) => problems.extend(
                    errs.into_iter()
                        .map(|e| format!("input `{name}`: {}", e.message)),
                ),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(StepError::new(ErrorClass::Template, problems.join("; ")))
        }
    }

    /// The child in flight for `(key, attempt)`.
    fn child_slot(&self, key: &str, attempt: u32) -> Result<Slot, ExecError> {
        self.attempt_slot(key, attempt, StepType::Workflow)
    }

    /// The children in flight: where each is, its attempt and its link.
    pub(super) fn child_links(&self) -> impl Iterator<Item = (Slot, u32, &ChildLink)> + '_ {
        self.steps.iter().enumerate().flat_map(|(i, s)| {
            let own = s.child.as_ref().map(|l| (Slot::Step(i), s.attempt, l));
            let items = s
                .items
                .iter()
                .flat_map(|it| it.runs.iter().enumerate())
                .filter_map(move |(j, r)| {
                    r.child.as_ref().map(|l| (Slot::Item(i, j), r.attempt, l))
                });
            own.into_iter().chain(items)
        })
    }

    pub(super) fn link_mut(&mut self, slot: Slot) -> Option<&mut ChildLink> {
        match slot {
            Slot::Step(i) => self.steps[i].child.as_mut(),
            Slot::Item(i, j) => self.steps[i].items.as_mut()?.runs[j].child.as_mut(),
        }
    }

    pub(super) fn mark_dirty(&mut self, slot: Slot) {
        match slot {
            Slot::Step(i) => {
                self.dirty.insert(i);
            }
            Slot::Item(i, j) => {
                self.dirty_items.insert((i, j as u32));
            }
        }
        self.checkpoint_due = true;
    }

    pub(super) fn child_started(
        &mut self,
        key: &str,
        attempt: u32,
        id: String,
    ) -> Result<(), ExecError> {
        let slot = self.child_slot(key, attempt)?;
        if let Some(link) = self.link_mut(slot) {
            link.id = Some(id);
        }
        self.mark_dirty(slot);
        Ok(())
    }

    pub(super) fn child_waiting(
        &mut self,
        key: &str,
        attempt: u32,
        waiting: bool,
    ) -> Result<(), ExecError> {
        let slot = self.child_slot(key, attempt)?;
        let changed = match self.link_mut(slot) {
            Some(link) if link.waiting != waiting => {
                link.waiting = waiting;
                true
            }
            _ => false,
        };
        if changed {
            if waiting {
                self.waiting_children += 1;
            } else {
                self.waiting_children = self.waiting_children.saturating_sub(1);
            }
            self.mark_dirty(slot);
        }
        Ok(())
    }

    pub(super) fn child_completed(
        &mut self,
        key: &str,
        attempt: u32,
        result: Value,
        spent: Spend,
        now: u64,
    ) -> Result<(), ExecError> {
        let text: Arc<str> = Arc::from(result.to_string());
        let slot = self.child_slot(key, attempt)?;
        self.charge_child(spent);
        match slot {
            Slot::Item(i, j) => {
                self.finish_item(i, j);
                self.item_done(i, j, Output::with_json(text, Some(result)), now)
            }
            Slot::Step(i) => {
                self.finish_attempt(i);
                if let Some(link) = self.steps[i].child.take() {
                    self.release_child(&link);
                }
                let mut work = Vec::new();
                self.complete_step(i, Output::with_json(text, Some(result)), now, &mut work)?;
                self.drain(work, now)
            }
        }
    }

    pub(super) fn child_failed(
        &mut self,
        key: &str,
        attempt: u32,
        error: StepError,
        spent: Spend,
        now: u64,
    ) -> Result<(), ExecError> {
        let slot = self.child_slot(key, attempt)?;
        self.charge_child(spent);
        match slot {
            Slot::Item(i, j) => {
                self.finish_item(i, j);
                self.fail_item(i, j, error, now)
            }
            Slot::Step(i) => {
                self.finish_attempt(i);
                if let Some(link) = self.steps[i].child.take() {
                    self.release_child(&link);
                }
                let mut work = Vec::new();
                self.fail_attempt(i, error, now, &mut work)?;
                self.drain(work, now)
            }
        }
    }

    /// A child stopped being in flight: keep the counters.
    pub(super) fn release_child(&mut self, link: &ChildLink) {
        self.children = self.children.saturating_sub(1);
        if link.waiting {
            self.waiting_children = self.waiting_children.saturating_sub(1);
        }
    }

    /// A child paused at the budget this run gave it: it gets more when more
    /// is left (now, or when what is in flight settles); when nothing more can
    /// come, this run pauses for its budget
    /// ([`Execution::feed_starved_children`], after every event).
    pub(super) fn child_out_of_budget(
        &mut self,
        key: &str,
        attempt: u32,
        reason: &str,
    ) -> Result<(), ExecError> {
        let slot = self.child_slot(key, attempt)?;
        let why = reason.strip_prefix("budget: ").unwrap_or(reason);
        let why = why.strip_suffix("; raise it to continue").unwrap_or(why);
        match self.link_mut(slot) {
            // A child without an allowance from this run paused at its own
            // file's budget: `ax workflow resume CHILD --budget-…` is for it.
            Some(link) if link.held.is_some() => link.starved = Some(why.to_owned()),
            _ => return Ok(()),
        }
        self.mark_dirty(slot);
        Ok(())
    }

    /// Pass a pause or resume on to every child in flight (a resume skips
    /// children that used up their budget: they are resumed when they get
    /// more, by [`Execution::feed_starved_children`]).
    pub(super) fn control_children(&mut self, control: ChildControl) {
        if self.children == 0 {
            return;
        }
        let wanted = |link: &ChildLink| control != ChildControl::Resume || link.starved.is_none();
        for (i, s) in self.steps.iter().enumerate() {
            if s.state != StepState::Running {
                continue;
            }
            let key = self.plan.key(i);
            if s.child.as_ref().is_some_and(wanted) {
                self.actions.push(Action::ControlChild {
                    key: key.to_owned(),
                    attempt: s.attempt,
                    control,
                });
            }
            for r in s.items.iter().flat_map(|it| &it.runs) {
                if r.state == StepState::Running && r.child.as_ref().is_some_and(wanted) {
                    self.actions.push(Action::ControlChild {
                        key: key.to_owned(),
                        attempt: r.attempt,
                        control,
                    });
                }
            }
        }
    }

    /// What this execution, run as the child `(key, attempt)` of another,
    /// tells its parent now: how it ended (with what it spent, its own
    /// children's included), or that it paused at the budget it was given.
    /// `None` while neither.
    pub fn report_for_parent(&self, key: &str, attempt: u32) -> Option<Event> {
        let (key, spent) = (key.to_owned(), self.spent);
        Some(match self.outcome() {
            Some(Ok(result)) => Event::ChildCompleted {
                key,
                attempt,
                result,
                spent,
            },
            Some(Err(error)) => Event::ChildFailed {
                key,
                attempt,
                error,
                spent,
            },
            None => {
                let reason = self
                    .reason
                    .as_deref()
                    .filter(|r| r.starts_with("budget:"))?;
                if self.state != ExecutionState::Paused {
                    return None;
                }
                Event::ChildOutOfBudget {
                    key,
                    attempt,
                    reason: reason.to_owned(),
                }
            }
        })
    }

    /// How this execution ended, as its parent sees it: the result (its
    /// `outputs`, or else its final steps' results by key) or the error that
    /// fails the parent's step. `None` while it has not ended.
    pub fn outcome(&self) -> Option<Result<Value, StepError>> {
        let name = &self.plan.workflow.name;
        match self.state {
            ExecutionState::Completed => Some(self.result()),
            ExecutionState::Failed => {
                // The class of the failure that ended it, so that a rejection
                // stays a rejection one level up.
                let class = self
                    .steps
                    .iter()
                    .enumerate()
                    .find(|(i, s)| {
                        s.state == StepState::Failed && !self.plan.workflow.steps[*i].optional
                    })
                    .and_then(|(_, s)| s.error.as_ref())
                    .map_or(ErrorClass::Other, |e| e.class);
                let why = self.reason.as_deref().unwrap_or("it failed");
                Some(Err(StepError::new(
                    class,
                    format!("the sub-workflow `{name}` failed: {why}"),
                )))
            }
            ExecutionState::Cancelled => {
                let why = self.reason.as_deref().unwrap_or("cancelled");
                Some(Err(StepError::new(
                    ErrorClass::Other,
                    format!("the sub-workflow `{name}` was cancelled: {why}"),
                )))
            }
            _ => None,
        }
    }

    /// The run's result: its `outputs` rendered (a template that is one
    /// placeholder gives that value itself), or else an object of its final
    /// steps' results (parsed as JSON when they are JSON; `null` for a final step
    /// that did not complete).
    pub fn result(&self) -> Result<Value, StepError> {
        let wf = &self.plan.workflow;
        if !wf.outputs.is_empty() {
            let mut out = Map::new();
            let mut problems = Vec::new();
            for (name, template) in &wf.outputs {
                match render_value(&Value::String(template.clone()), self) {
                    Ok(v) => {
                        out.insert(name.clone(), v);
                    }
                    Err(errs) => {
                        let msgs: Vec<String> = errs.into_iter().map(|e| e.message).collect();
                        problems.push(format!("output `{name}`: {}", msgs.join("; ")));
                    }
                }
            }
            return if problems.is_empty() {
                Ok(Value::Object(out))
            } else {
                Err(StepError::new(
                    ErrorClass::Template,
                    format!(
                        "the workflow's outputs cannot be rendered: {}",
                        problems.join("; ")
                    ),
                ))
            };
        }
        let mut out = Map::new();
        for i in 0..self.steps.len() {
            if !self.plan.graph.dependents(i).is_empty() {
                continue;
            }
            let value = match (&self.steps[i].state, &self.steps[i].output) {
                // Strictly JSON, or else the text: prose around a JSON block is kept.
                (StepState::Completed, Some(o)) => serde_json::from_str(o.text.trim())
                    .unwrap_or_else(|_| Value::String(o.text.to_string())),
                _ => Value::Null,
            };
            out.insert(self.plan.key(i).to_owned(), value);
        }
        Ok(Value::Object(out))
    }
}
