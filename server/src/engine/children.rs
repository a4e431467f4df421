//! Sub-workflows on the server: finding the workflows that `type: workflow`
//! steps run, and running them as child executions.
//!
//! The core validates a workflow with its children through a loader
//! (`ax_core::subworkflow::analyze_tree`); the loader here finds a reference
//! (the step's `workflow:`) among files the caller read (the CLI), else among
//! stored workflows: by file name relative to the parent's, else by name (the
//! newest one). The loader is synchronous and the store is not, so the tree is
//! analyzed, what it missed is looked up, and it is analyzed again.
//!
//! A child is an execution of its own, with its parent (execution, step,
//! attempt, item) in its row: created when the parent's executor asks
//! (`StartChild`), driven like any execution, and reported on through the
//! parent's inbox (`ChildWaiting`, `ChildCompleted`, `ChildFailed`). A parent
//! that starts driving again finds its children through their rows, so a crash
//! or a restart starts no second child.

use super::{Engine, EngineError, EngineResult, Msg, RunOptions, Runner};
use crate::store::{
    self, Claim, Control, ExecutionFilter, MessageKind, NewMessage, ParentLink, now_ms,
};
use anyhow::{Result, anyhow};
use ax_core::exec::{Action, ChildControl, Event, Spend};
use ax_core::model::ErrorClass;
use ax_core::subworkflow::{LoadedWorkflow, SubWorkflow, analyze_tree, join_path};
use ax_core::{Analysis, ExecutionState, Options, StepError};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Workflow files the caller read (the CLI), by path relative to the run
/// workflow's folder (the ids `join_path` gives).
pub type Files = BTreeMap<String, String>;

/// How many times the tree is analyzed at most while references are looked up
/// (each round reaches at least one level deeper; nesting is capped at 8).
const ROUNDS: usize = 12;

impl Engine {
    /// Validate a workflow text with its sub-workflows (from `files`, else
    /// stored workflows).
    pub async fn analyze(
        &self,
        source: &str,
        filename: Option<&str>,
        files: &Files,
    ) -> Result<Analysis> {
        let opts = Options {
            filename: filename.map(str::to_owned),
            ..Options::default()
        };
        let root = filename.unwrap_or_default();
        let mut known: HashMap<(String, String), Result<LoadedWorkflow, String>> = HashMap::new();
        for _ in 0..ROUNDS {
            let mut missed: Vec<(String, String)> = Vec::new();
            let mut loader = |from: &str, reference: &str| {
                let k = (from.to_owned(), reference.to_owned());
                match known.get(&k) {
                    Some(found) => found.clone(),
                    None => {
                        missed.push(k);
                        Err("not looked up yet".to_owned())
                    }
                }
            };
            let analysis = analyze_tree(source, &opts, root, &mut loader);
            if missed.is_empty() {
                return Ok(analysis);
            }
            for (from, reference) in missed {
                let found = self.find_child(&from, &reference, files).await?;
                known.insert((from, reference), found);
            }
        }
        Err(anyhow!(
            "the sub-workflows of {} could not all be looked up in {ROUNDS} rounds",
            filename.unwrap_or("the workflow")
        ))
    }

    /// The workflow `reference` names, seen from the workflow `from`.
    async fn find_child(
        &self,
        from: &str,
        reference: &str,
        files: &Files,
    ) -> Result<std::result::Result<LoadedWorkflow, String>> {
        let path = join_path(from, reference);
        if let Some(text) = files.get(&path) {
            return Ok(Ok(LoadedWorkflow {
                id: path.clone(),
                text: text.clone(),
                filename: Some(path),
            }));
        }
        let stored = match self.store.find_workflow(Some(&path), None).await? {
            Some(w) => Some(w),
            None => self.store.find_workflow(None, Some(reference)).await?,
        };
        Ok(match stored {
            Some(w) => Ok(LoadedWorkflow {
                id: w.filename.clone().unwrap_or_else(|| reference.to_owned()),
                text: w.source.unwrap_or_default(),
                filename: w.filename,
            }),
            None => Err(format!(
                "there is no file `{path}` and no stored workflow with that file name or named `{reference}`; store it first (POST /api/workflows) or run the parent from its file with `ax workflow run`"
            )),
        })
    }

    /// Validate and store a workflow with its sub-workflows: the children read
    /// from `files` are stored too (with their path as file name), so that the
    /// stored parent finds them again.
    pub async fn create_workflow_with(
        &self,
        source: String,
        filename: Option<String>,
        files: &Files,
    ) -> EngineResult<store::WorkflowRecord> {
        let analysis = self.analyze(&source, filename.as_deref(), files).await?;
        if analysis.plan.is_none() {
            return Err(EngineError::Invalid(Box::new(analysis.full_report())));
        }
        for (path, text) in files {
            self.store_text(text.clone(), Some(path.clone())).await?;
        }
        self.store_analyzed(source, filename, &analysis).await
    }

    /// Start the child that `start` asks for (or find the one already started
    /// for this step and attempt), and tell the parent's runner.
    pub(super) fn launch_child(
        self: &Arc<Self>,
        parent: ParentLink,
        sub: Option<Arc<SubWorkflow>>,
        inputs: BTreeMap<String, Value>,
        budget: ax_core::Budget,
        tx: tokio::sync::mpsc::UnboundedSender<Msg>,
    ) {
        let engine = Arc::clone(self);
        let launch = (parent.id.clone(), parent.step.clone(), parent.attempt);
        if let Ok(mut l) = self.launching.lock() {
            l.insert(launch.clone());
        }
        let busy = Busy::new(&self.background);
        tokio::spawn(async move {
            let _busy = busy;
            let (key, attempt) = (parent.step.clone(), parent.attempt);
            let started = engine.start_child(parent, sub, inputs, budget).await;
            if let Ok(mut l) = engine.launching.lock() {
                l.remove(&launch);
            }
            let event = match started {
                Ok(id) => Event::ChildStarted { key, attempt, id },
                Err(e) => Event::ChildFailed {
                    key,
                    attempt,
                    error: StepError::new(
                        ErrorClass::Other,
                        format!("the sub-workflow could not be started: {e}"),
                    ),
                    spent: Spend::default(),
                },
            };
            let _ = tx.send(Msg::Event(event));
        });
    }

    async fn start_child(
        self: &Arc<Self>,
        parent: ParentLink,
        sub: Option<Arc<SubWorkflow>>,
        inputs: BTreeMap<String, Value>,
        budget: ax_core::Budget,
    ) -> EngineResult<String> {
        if let Some(existing) = self.child_of(&parent).await? {
            return Ok(existing.id);
        }
        // A parent cancelled meanwhile wants no child.
        let parent_rec = self.execution(&parent.id).await?;
        let state = parent_rec.state();
        if state.is_terminal() {
            return Err(EngineError::Conflict(format!(
                "its parent execution {} is {state}",
                parent.id
            )));
        }
        let sub = sub.ok_or_else(|| {
            EngineError::NotFound(format!(
                "the workflow of step `{}` was not loaded",
                parent.step
            ))
        })?;
        let wf = self
            .store_text(sub.text.clone(), sub.filename.clone())
            .await?;
        let (id, exec, lease) = self
            .new_execution_for(
                &wf.id,
                inputs,
                true,
                Some(parent.clone()),
                // The run's `--cache` reaches its children; under a budget, a
                // child runs on what its parent had left (its `budget`, over
                // the child's own file's limits that the parent's also sets).
                RunOptions {
                    cache: parent_rec.cache,
                    budget,
                },
            )
            .await?;
        let lease = lease.ok_or_else(|| EngineError::Internal(anyhow!("no lease was granted")))?;
        drop(self.spawn_runner(id.clone(), exec, lease, Some(Event::Start), Some(parent)));
        Ok(id)
    }

    /// The child execution started for this parent, step, attempt and item.
    async fn child_of(&self, parent: &ParentLink) -> Result<Option<store::ExecutionRecord>> {
        let children = self.children(&parent.id).await?;
        Ok(children
            .into_iter()
            .find(|c| c.parent.as_ref() == Some(parent)))
    }

    /// What an execution's sub-workflows spent (theirs, recursively): the
    /// sum of their steps' cost and tokens.
    pub async fn children_spent(&self, id: &str) -> Result<Spend> {
        let mut total = Spend::default();
        let mut queue = vec![id.to_owned()];
        while let Some(parent) = queue.pop() {
            for child in self.children(&parent).await? {
                for s in self.store.execution_steps(&child.id, false).await? {
                    total.usd += s.cost_usd.unwrap_or(0.0);
                    total.tokens = total.tokens.saturating_add(s.tokens_in + s.tokens_out);
                }
                queue.push(child.id);
            }
        }
        Ok(total)
    }

    /// An execution's children, newest first.
    pub async fn children(&self, id: &str) -> Result<Vec<store::ExecutionRecord>> {
        self.store
            .list_executions(ExecutionFilter {
                state: None,
                workflow_id: None,
                parent_id: Some(id.to_owned()),
                limit: 10_000,
            })
            .await
    }

    /// Tell a parent about its child (through its inbox) and make sure a
    /// process takes the message.
    pub(super) async fn report_to_parent(self: &Arc<Self>, parent: &ParentLink, event: Event) {
        let message = NewMessage {
            kind: MessageKind::Child,
            step: parent.step.clone(),
            attempt: Some(parent.attempt),
            payload: serde_json::to_value(&event).unwrap_or(Value::Null),
        };
        if let Err(e) = self.store.deliver(&parent.id, message, now_ms()).await {
            tracing::warn!(execution = %parent.id, "could not tell the parent about its child: {e:#}");
            return;
        }
        if let Err(e) = self.nudge(&parent.id).await {
            tracing::warn!(execution = %parent.id, "could not wake the parent: {e}");
        }
    }

    /// A message waits in `id`'s inbox: the runner here takes it, a live owner
    /// elsewhere polls for it, and else this process drives the execution.
    pub(super) async fn nudge(self: &Arc<Self>, id: &str) -> EngineResult<()> {
        if let Some(tx) = self.live_here(id)
            && tx.send(Msg::Inbox).is_ok()
        {
            return Ok(());
        }
        let rec = self.execution(id).await?;
        let elsewhere =
            rec.owner.as_deref().is_some_and(|o| o != self.me.id) && self.owner_alive(&rec);
        if rec.state().is_terminal() || elsewhere {
            return Ok(());
        }
        let (_, mut exec) = self.load(id).await?;
        let now = now_ms();
        let Claim::Granted { lease, .. } = self
            .store
            .claim(id, &self.me, now, self.lease_ms(), true)
            .await?
        else {
            return Ok(());
        };
        if exec.in_flight() > exec.children_in_flight() || exec.state() == ExecutionState::Running {
            let mut records = exec
                .interrupt(now)
                .map_err(|e| EngineError::Internal(anyhow!(e)))?;
            if rec.state() == ExecutionState::Interrupted {
                records.retain(|a| !matches!(a, Action::ExecutionChanged { .. }));
            }
            if !records.is_empty() {
                self.commit_records(id, &mut exec, records, now, &lease)
                    .await?;
            }
        }
        drop(self.spawn_runner(id.to_owned(), exec, lease, None, rec.parent));
        Ok(())
    }

    /// Carry out `ControlChild` actions (the parent was paused, resumed or
    /// cancelled, or a child's attempt timed out) in the background.
    pub(super) fn control_children(self: &Arc<Self>, parent: &str, actions: &[Action]) {
        if !actions.iter().any(is_child_control) {
            return;
        }
        let engine = Arc::clone(self);
        let (parent, actions) = (parent.to_owned(), actions.to_vec());
        let busy = Busy::new(&self.background);
        tokio::spawn(async move {
            engine.control_children_now(&parent, &actions).await;
            drop(busy);
        });
    }

    /// Carry out `ControlChild` actions and wait until each child took its
    /// control (a process that exits next must not drop them).
    pub(super) async fn control_children_now(self: &Arc<Self>, parent: &str, actions: &[Action]) {
        let mut children: Option<Vec<store::ExecutionRecord>> = None;
        for a in actions {
            let (key, attempt, control) = match a {
                Action::ControlChild {
                    key,
                    attempt,
                    control,
                } => (key, attempt, Some(control)),
                Action::BudgetChild { key, attempt, .. } => (key, attempt, None),
                _ => continue,
            };
            if children.is_none() {
                match self.children(parent).await {
                    Ok(c) => children = Some(c),
                    Err(e) => {
                        tracing::warn!(execution = %parent, "could not list children: {e:#}");
                        return;
                    }
                }
            }
            let found = children.iter().flatten().find(|c| {
                c.parent
                    .as_ref()
                    .is_some_and(|p| p.step == *key && p.attempt == *attempt)
            });
            let Some(child) = found else { continue };
            if child.state().is_terminal() {
                continue;
            }
            let Some(control) = control else {
                if let Action::BudgetChild { budget, .. } = a
                    && let Err(e) = self.store.set_budget(&child.id, *budget, now_ms()).await
                {
                    tracing::warn!(execution = %child.id, "could not give the child its budget: {e:#}");
                }
                continue;
            };
            let control = match control {
                ChildControl::Pause { immediate: false } => Control::Pause,
                ChildControl::Pause { immediate: true } => Control::PauseNow,
                ChildControl::Resume => Control::Resume,
                ChildControl::Cancel { .. } => Control::Cancel,
            };
            // Boxed: controlling a child may control its own children.
            if let Err(e) = Box::pin(self.control(&child.id, control)).await {
                tracing::warn!(execution = %child.id, "could not {} the child: {e}", control.as_str());
            }
        }
    }
}

/// Counts a background task while it lives.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(count))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An action the engine carries out on a child: `ControlChild`, or
/// `BudgetChild` (which comes before the `ControlChild` that resumes it).
pub(super) fn is_child_control(a: &Action) -> bool {
    matches!(a, Action::ControlChild { .. } | Action::BudgetChild { .. })
}

/// The event that tells a parent how its child ended (with what it spent),
/// or that it paused at the budget its parent gave it.
pub(super) fn outcome_event(parent: &ParentLink, exec: &ax_core::exec::Execution) -> Option<Event> {
    exec.report_for_parent(&parent.step, parent.attempt)
}

impl Runner {
    /// Start the child a `StartChild` asks for.
    pub(super) fn start_child(&self, s: ax_core::exec::StartChild) {
        let plan = Arc::clone(self.exec.plan());
        let sub = plan
            .index_of(&s.key)
            .and_then(|i| plan.sub_workflow(i).cloned());
        let parent = ParentLink {
            id: self.id.clone(),
            step: s.key,
            attempt: s.attempt,
            item: s.item,
        };
        let budget = s.budget.unwrap_or_default();
        self.engine
            .launch_child(parent, sub, s.inputs, budget, self.tx.clone());
    }

    /// A child's report that this runner got directly (not through the inbox):
    /// applied when the executor takes it, else dropped (it is late).
    pub(super) async fn child_event(&mut self, event: Event) -> Result<()> {
        if let Err(e) = self.exec.clone().handle(event.clone(), now_ms()) {
            tracing::debug!(execution = %self.id, "dropped a child report: {e}");
            // A child started for an attempt that ended meanwhile (the run was
            // cancelled, the attempt timed out) is not wanted.
            if let Event::ChildStarted { id, .. } = event {
                let engine = Arc::clone(&self.engine);
                tokio::spawn(async move {
                    if let Err(e) = engine.control(&id, Control::Cancel).await {
                        tracing::debug!(execution = %id, "could not cancel an unwanted child: {e}");
                    }
                });
            }
            return Ok(());
        }
        self.step(event, None).await
    }

    /// Children in flight, as this execution knows them: (key, attempt, id).
    fn links(&self) -> Vec<(String, u32, Option<String>)> {
        let plan = Arc::clone(self.exec.plan());
        let mut out = Vec::new();
        for (i, s) in self.exec.steps().iter().enumerate() {
            if let Some(link) = &s.child {
                out.push((plan.key(i).to_owned(), s.attempt, link.id.clone()));
            }
            for r in s.items.iter().flat_map(|it| &it.runs) {
                if let Some(link) = &r.child {
                    out.push((plan.key(i).to_owned(), r.attempt, link.id.clone()));
                }
            }
        }
        out
    }

    /// When this runner starts with children in flight: find each child's row
    /// (a crash may have lost `ChildStarted`), and take the outcome of those
    /// that ended while nobody drove this one.
    pub(super) async fn find_children(&mut self) -> Result<()> {
        if self.exec.children_in_flight() == 0 {
            return Ok(());
        }
        let rows = self.engine.children(&self.id).await?;
        for (key, attempt, id) in self.links() {
            let row = rows.iter().find(|c| {
                c.parent
                    .as_ref()
                    .is_some_and(|p| p.step == key && p.attempt == attempt)
            });
            let Some(row) = row else {
                let here = (self.id.clone(), key.clone(), attempt);
                if self
                    .engine
                    .launching
                    .lock()
                    .is_ok_and(|l| l.contains(&here))
                {
                    // Being created by this process: it reports when it ends.
                    continue;
                }
                // Asked for, but the process stopped before the row was made.
                let error = StepError::new(
                    ErrorClass::Other,
                    "the child execution was never created (its parent's process stopped); the step's retry policy decides",
                );
                self.child_event(Event::ChildFailed {
                    key,
                    attempt,
                    error,
                    spent: Spend::default(),
                })
                .await?;
                continue;
            };
            if id.is_none() {
                let ev = Event::ChildStarted {
                    key: key.clone(),
                    attempt,
                    id: row.id.clone(),
                };
                self.child_event(ev).await?;
            }
            if row.state().is_terminal()
                && let Ok((_, child)) = self.engine.load(&row.id).await
                && let Some(parent) = &row.parent
                && let Some(ev) = outcome_event(parent, &child)
            {
                self.child_event(ev).await?;
            }
        }
        Ok(())
    }

    /// Tell the parent when this child begins or stops waiting for a decision.
    pub(super) async fn report_waiting(&mut self) {
        let Some(parent) = self.parent.clone() else {
            return;
        };
        let waiting = self.exec.state() == ExecutionState::Waiting;
        if waiting == self.waiting {
            return;
        }
        self.waiting = waiting;
        let ev = Event::ChildWaiting {
            key: parent.step.clone(),
            attempt: parent.attempt,
            waiting,
        };
        self.engine.report_to_parent(&parent, ev).await;
    }
}
