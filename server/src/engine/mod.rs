//! The durable engine: drives `ax_core::Execution` with tokio, SQLite and the
//! providers. Core makes every scheduling decision; this module records them and
//! carries them out, in that order:
//!
//! 1. feed an event to the execution (a provider answered, a timer fired, a
//!    control request arrived),
//! 2. commit what it decided in one transaction — step transitions, attempt rows,
//!    the output, events, and a checkpoint delta (so a crash loses nothing that
//!    was acted on),
//! 3. then start or abort provider calls and set the wake-up timer.
//!
//! One runner task per execution owns its `Execution`. Ownership is recorded in
//! the database with a heartbeat, so a `pause`/`cancel` from any process reaches
//! the owner at once when the database announces it (PostgreSQL's NOTIFY), else
//! within a poll interval, and a crashed owner is detected.

mod batch;
mod cache;
mod children;
mod metrics;
mod relay;

pub use children::Files;

pub use relay::{StepDelta, Wait};
mod decisions;

pub use decisions::Decision;
pub use metrics::Metrics;

use crate::providers::{CallOutcome, Router};
use crate::store::{
    self, CheckpointWrite, Claim, Claimed, Control, ExecutionRecord, Lease, Maintenance, Owner,
    Store, Wake, WorkflowRecord, now_ms,
};
use anyhow::{Context as _, Result, anyhow};
use ax_core::checkpoint::CheckpointFile;
use ax_core::exec::{Action, Event, ExecError, Execution};
use ax_core::{ExecutionState, Options, Plan, Report, analyze};
use batch::BatchBuilder;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// Why the engine refused a request: the API and CLI map these to status codes
/// and exit codes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the workflow is not valid ({} error{})", .0.errors.len(), if .0.errors.len() == 1 { "" } else { "s" })]
    Invalid(Box<Report>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    /// A request that is well formed but that the execution refuses as it
    /// stands (approval data that does not satisfy the step's schema).
    #[error("{0}")]
    Unprocessable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type EngineResult<T> = std::result::Result<T, EngineError>;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Restore points kept per execution (older ones are compacted away).
    pub keep_checkpoints: usize,
    /// How often this process looks for control requests from other processes.
    pub poll_interval: Duration,
    /// How long a lease lasts without renewal; renewed every third of it.
    pub lease: Duration,
    /// How often a worker looks for executions to claim.
    pub claim_interval: Duration,
    /// The most executions this process drives at once (None: no cap). A
    /// worker claims no more; started executions beyond it wait in the queue.
    pub max_runs: Option<usize>,
    /// A worker also takes over runs whose driver died or lost its lease.
    pub recover: bool,
    /// Keep a runner while its execution waits for a decision (the foreground
    /// `ax workflow run` shows the approval and continues when it is given);
    /// otherwise a waiting execution has no runner, and a decision or its
    /// deadline wakes it.
    pub keep_waiting: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keep_checkpoints: 20,
            poll_interval: Duration::from_millis(200),
            lease: Duration::from_millis(store::DEFAULT_LEASE_MS),
            claim_interval: Duration::from_millis(1000),
            max_runs: None,
            recover: true,
            keep_waiting: false,
        }
    }
}

/// What a run is given besides its inputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// The run's own budget, over the file's `config.budget` (each limit set).
    pub budget: ax_core::Budget,
    /// `--cache`: steps without their own `cache` use the response cache.
    pub cache: bool,
}

/// How a runner ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    pub state: ExecutionState,
    pub reason: Option<String>,
}

enum Msg {
    Control(Control),
    /// This process no longer holds the lease: stop driving.
    Fenced,
    Answer {
        key: String,
        attempt: u32,
        outcome: Box<CallOutcome>,
    },
    /// A message waits in the execution's inbox (a decision, a child's report).
    Inbox,
    /// A child was started (or could not be).
    Event(Event),
}

pub struct Engine {
    store: Store,
    router: Arc<Router>,
    me: Owner,
    settings: Settings,
    runs: Mutex<HashMap<String, Slot>>,
    keeper: std::sync::atomic::AtomicBool,
    /// The task that reads the database's wake-ups has started.
    listening: std::sync::atomic::AtomicBool,
    /// Wakes the worker loop (work queued by this process).
    work: tokio::sync::Notify,
    /// What this process did, for `GET /metrics`.
    metrics: Metrics,
    plans: Mutex<HashMap<String, Arc<Plan>>>,
    /// Background work on children (starting, controlling them) in flight.
    background: Arc<std::sync::atomic::AtomicUsize>,
    /// Children being created by this process: (parent, step, attempt).
    launching: Mutex<std::collections::HashSet<(String, String, u32)>>,
    /// Announces "new events for execution X".
    notify: broadcast::Sender<String>,
    /// Running steps' text, as it streams in.
    deltas: relay::DeltaRelay,
    /// Set when the process shuts down: live streams end.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Engine {
    pub fn new(store: Store, router: Router, settings: Settings) -> Arc<Engine> {
        Engine::with_owner(store, router, settings, Owner::this_process())
    }

    /// An engine that records `me` as the process driving its runs (tests
    /// stand in for other processes this way).
    pub fn with_owner(store: Store, router: Router, settings: Settings, me: Owner) -> Arc<Engine> {
        let (notify, _) = broadcast::channel(4096);
        Arc::new(Engine {
            store,
            router: Arc::new(router),
            me,
            settings,
            runs: Mutex::new(HashMap::new()),
            keeper: std::sync::atomic::AtomicBool::new(false),
            listening: std::sync::atomic::AtomicBool::new(false),
            work: tokio::sync::Notify::new(),
            metrics: Metrics::default(),
            plans: Mutex::new(HashMap::new()),
            launching: Mutex::new(Default::default()),
            background: Default::default(),
            notify,
            deltas: relay::DeltaRelay::new(),
            closing: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The process is shutting down: live event streams send what is stored
    /// and end (a server's graceful shutdown waits for its connections).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Becomes `true` when the process shuts down.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn owner(&self) -> &Owner {
        &self.me
    }

    /// This process's counters (`GET /metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Notifications carrying the id of an execution with new events.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.notify.subscribe()
    }

    /// The text of running steps as providers stream it (not stored).
    pub fn subscribe_deltas(&self) -> broadcast::Receiver<Arc<StepDelta>> {
        self.deltas.subscribe()
    }

    /// Paused, failed and interrupted executions resume, and so does one left
    /// running by a process that is gone.
    pub fn can_resume(&self, rec: &ExecutionRecord) -> bool {
        let state = rec.state();
        let orphan = !self.owner_alive(rec);
        // Running with a dead owner: it crashed. Idle with no live owner: it was
        // created but its driver never started (or died before its first step).
        state.is_resumable()
            || (orphan && matches!(state, ExecutionState::Running | ExecutionState::Idle))
    }

    /// Does a runner in this process drive the execution?
    pub fn is_running_here(&self, id: &str) -> bool {
        self.live_here(id).is_some()
    }

    fn live_here(&self, id: &str) -> Option<mpsc::UnboundedSender<Msg>> {
        self.runs
            .lock()
            .ok()
            .and_then(|m| m.get(id).map(|s| s.tx.clone()))
            .filter(|tx| !tx.is_closed())
    }

    fn lease_ms(&self) -> u64 {
        self.settings.lease.as_millis().max(1) as u64
    }

    /// Is the recorded owner of `rec` a live process (this one included)?
    pub fn owner_alive(&self, rec: &ExecutionRecord) -> bool {
        store::owner_alive(rec, &self.me, now_ms(), self.store.checks_pids())
    }

    /// How many executions this process drives now.
    pub fn running_here(&self) -> usize {
        self.runs.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Runs driven here plus background work on children (starting or
    /// controlling them): a process that exits at 0 drops nothing.
    pub fn busy_here(&self) -> usize {
        self.running_here() + self.background.load(std::sync::atomic::Ordering::Acquire)
    }

    fn has_capacity(&self) -> bool {
        self.settings
            .max_runs
            .is_none_or(|max| self.running_here() < max)
    }

    fn conflict_claim(id: &str, c: Claim) -> EngineResult<Lease> {
        match c {
            Claim::Granted { lease, .. } => Ok(lease),
            Claim::Held { owner } => Err(EngineError::Conflict(format!(
                "execution {id} is driven by another process ({owner})"
            ))),
        }
    }

    // ------------------------------------------------------------ workflows

    /// Validate and store a workflow text (an identical text is reused); its
    /// sub-workflows must be stored already (by file name or name).
    pub async fn create_workflow(
        &self,
        source: String,
        filename: Option<String>,
    ) -> EngineResult<WorkflowRecord> {
        self.create_workflow_with(source, filename, &Files::new())
            .await
    }

    /// Store a workflow text valid on its own (its sub-workflows checked by
    /// the caller).
    async fn store_text(
        &self,
        source: String,
        filename: Option<String>,
    ) -> EngineResult<WorkflowRecord> {
        let opts = Options {
            filename: filename.clone(),
            ..Options::default()
        };
        let analysis = analyze(&source, &opts);
        self.store_analyzed(source, filename, &analysis).await
    }

    /// Store a workflow text as `analysis` found it (valid).
    async fn store_analyzed(
        &self,
        source: String,
        filename: Option<String>,
        analysis: &ax_core::Analysis,
    ) -> EngineResult<WorkflowRecord> {
        let Some(plan) = analysis.plan.clone() else {
            return Err(EngineError::Invalid(Box::new(analysis.full_report())));
        };
        let format = analysis
            .source_map
            .as_ref()
            .and_then(|m| m.format)
            .unwrap_or(ax_core::parse::Format::Yaml);
        let rec = self
            .store
            .insert_workflow(store::NewWorkflow {
                id: crate::ids::new_id(),
                source,
                filename,
                plan,
                format,
                now: now_ms(),
            })
            .await?;
        Ok(rec)
    }

    /// The compiled plan of a stored workflow (workflows never change once
    /// stored, so plans are cached by id).
    async fn plan_of(&self, workflow_id: &str) -> EngineResult<(WorkflowRecord, Arc<Plan>)> {
        let cached = self
            .plans
            .lock()
            .ok()
            .and_then(|m| m.get(workflow_id).cloned());
        let wf = self
            .store
            .get_workflow(workflow_id, cached.is_none())
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no workflow {workflow_id}")))?;
        if let Some(p) = self
            .plans
            .lock()
            .ok()
            .and_then(|m| m.get(workflow_id).cloned())
        {
            return Ok((wf, p));
        }
        let source = wf.source.clone().unwrap_or_default();
        let analysis = self
            .analyze(&source, wf.filename.as_deref(), &Files::new())
            .await?;
        match analysis.plan {
            Some(p) => {
                if let Ok(mut m) = self.plans.lock() {
                    m.insert(workflow_id.to_owned(), p.clone());
                }
                Ok((wf, p))
            }
            None => Err(EngineError::Invalid(Box::new(analysis.full_report()))),
        }
    }

    // ------------------------------------------------------------ executions

    /// Create an execution of a stored workflow (idle; nothing runs yet).
    pub async fn create_execution(
        &self,
        workflow_id: &str,
        inputs: BTreeMap<String, Value>,
    ) -> EngineResult<String> {
        self.create_execution_with(workflow_id, inputs, RunOptions::default())
            .await
    }

    /// [`Engine::create_execution`] with the run's own options.
    pub async fn create_execution_with(
        &self,
        workflow_id: &str,
        inputs: BTreeMap<String, Value>,
        options: RunOptions,
    ) -> EngineResult<String> {
        self.new_execution(workflow_id, inputs, false, options)
            .await
            .map(|(id, _, _)| id)
    }

    async fn new_execution(
        &self,
        workflow_id: &str,
        inputs: BTreeMap<String, Value>,
        claim: bool,
        options: RunOptions,
    ) -> EngineResult<(String, Execution, Option<Lease>)> {
        self.new_execution_for(workflow_id, inputs, claim, None, options)
            .await
    }

    /// Create an execution (it wants a driver); with `claim`, leased to this
    /// process in the same commit; with `parent`, a child execution.
    async fn new_execution_for(
        &self,
        workflow_id: &str,
        inputs: BTreeMap<String, Value>,
        claim: bool,
        parent: Option<store::ParentLink>,
        options: RunOptions,
    ) -> EngineResult<(String, Execution, Option<Lease>)> {
        let (_, plan) = self.plan_of(workflow_id).await?;
        let seed = crate::ids::new_seed();
        let mut exec = Execution::new(plan.clone(), inputs, seed)
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        exec.set_budget(options.budget);
        let id = crate::ids::new_id();
        let initial = exec.snapshot();
        let keys: Vec<String> = plan.workflow.steps.iter().map(|s| s.key.clone()).collect();
        let (lease, _) = self
            .store
            .insert_execution(
                store::NewExecution {
                    id: id.clone(),
                    workflow_id: workflow_id.to_owned(),
                    inputs: serde_json::to_string(exec.inputs()).map_err(anyhow::Error::from)?,
                    seed,
                    keys,
                    initial,
                    now: now_ms(),
                    queued: true,
                    parent,
                    budget: options.budget,
                    cache: options.cache,
                },
                claim.then(|| (self.me.clone(), self.lease_ms())),
                None,
            )
            .await?;
        if !claim {
            self.work.notify_one();
        }
        Ok((id, exec, lease))
    }

    /// Create an execution of a stored workflow and start running it in this process.
    pub async fn start(
        self: &Arc<Self>,
        workflow_id: &str,
        inputs: BTreeMap<String, Value>,
    ) -> EngineResult<(ExecutionRecord, JoinHandle<RunEnd>)> {
        self.start_with(workflow_id, inputs, RunOptions::default())
            .await
    }

    /// [`Engine::start`] with the run's own options.
    pub async fn start_with(
        self: &Arc<Self>,
        workflow_id: &str,
        inputs: BTreeMap<String, Value>,
        options: RunOptions,
    ) -> EngineResult<(ExecutionRecord, JoinHandle<RunEnd>)> {
        let (id, exec, lease) = self
            .new_execution(workflow_id, inputs, true, options)
            .await?;
        let lease = lease.ok_or_else(|| EngineError::Internal(anyhow!("no lease was granted")))?;
        let handle = self.spawn_runner(id.clone(), exec, lease, Some(Event::Start), None);
        Ok((self.execution(&id).await?, handle))
    }

    /// Create an execution and drive it here if this process has room for it
    /// (`max_runs`); else it waits in the queue for a worker.
    pub async fn submit(
        self: &Arc<Self>,
        workflow_id: &str,
        inputs: BTreeMap<String, Value>,
    ) -> EngineResult<(ExecutionRecord, Option<JoinHandle<RunEnd>>)> {
        self.submit_with(workflow_id, inputs, RunOptions::default())
            .await
    }

    /// [`Engine::submit`] with the run's own options.
    pub async fn submit_with(
        self: &Arc<Self>,
        workflow_id: &str,
        inputs: BTreeMap<String, Value>,
        options: RunOptions,
    ) -> EngineResult<(ExecutionRecord, Option<JoinHandle<RunEnd>>)> {
        if self.has_capacity() {
            let (rec, handle) = self.start_with(workflow_id, inputs, options).await?;
            return Ok((rec, Some(handle)));
        }
        let (id, _, _) = self
            .new_execution(workflow_id, inputs, false, options)
            .await?;
        Ok((self.execution(&id).await?, None))
    }

    /// Drive an execution in this process: start it if it is new, else resume it.
    pub async fn drive(self: &Arc<Self>, id: &str) -> EngineResult<JoinHandle<RunEnd>> {
        let (rec, exec) = self.load(id).await?;
        if exec.state() != ExecutionState::Idle {
            return match self.control(id, Control::Resume).await? {
                (_, Some(handle)) => Ok(handle),
                (rec, None) => Err(EngineError::Conflict(format!(
                    "execution {id} is driven by another process ({})",
                    rec.owner.as_deref().unwrap_or("unknown")
                ))),
            };
        }
        let claim = self
            .store
            .claim(id, &self.me, now_ms(), self.lease_ms(), true)
            .await?;
        let lease = Engine::conflict_claim(id, claim).map_err(|e| match e {
            EngineError::Conflict(_) => EngineError::Conflict(format!(
                "execution {id} is driven by another process ({})",
                rec.owner.as_deref().unwrap_or("unknown")
            )),
            other => other,
        })?;
        Ok(self.spawn_runner(id.to_owned(), exec, lease, Some(Event::Start), rec.parent))
    }

    /// Pause every run driven by this process, aborting in-flight calls, and wait
    /// for the runners to stop (server shutdown).
    pub async fn pause_all(&self) {
        let live: Vec<(String, mpsc::UnboundedSender<Msg>)> = match self.runs.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.tx.clone())).collect(),
            Err(_) => return,
        };
        for (_, tx) in &live {
            let _ = tx.send(Msg::Control(Control::PauseNow));
        }
        for (id, _) in live {
            if let Err(e) = self.wait_released(&id, Duration::from_secs(10)).await {
                tracing::warn!("{e}");
            }
        }
    }

    pub async fn execution(&self, id: &str) -> EngineResult<ExecutionRecord> {
        self.store
            .get_execution(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no execution {id}")))
    }

    /// An execution and its steps (with outputs when asked).
    pub async fn execution_with_steps(
        &self,
        id: &str,
        with_output: bool,
    ) -> EngineResult<(ExecutionRecord, Vec<store::StepRecord>)> {
        let rec = self.execution(id).await?;
        let steps = self.store.execution_steps(id, with_output).await?;
        Ok((rec, steps))
    }

    /// A restore point as a checkpoint file: the workflow text, the state at
    /// that point and the outputs it refers to.
    pub async fn export_checkpoint(&self, checkpoint_id: &str) -> EngineResult<CheckpointFile> {
        let not_found = || EngineError::NotFound(format!("no checkpoint {checkpoint_id}"));
        let row: i64 = checkpoint_id.parse().map_err(|_| not_found())?;
        let exec_id = self
            .store
            .checkpoint_execution(row)
            .await?
            .ok_or_else(not_found)?;
        let exec = self.execution(&exec_id).await?;
        let wf = self
            .store
            .get_workflow(&exec.workflow_id, true)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no workflow {}", exec.workflow_id)))?;
        let state = self.store.checkpoint_state(&exec_id, Some(row)).await?;
        let mut file = CheckpointFile::new(
            ax_core::checkpoint::WorkflowSource {
                name: wf.name,
                source: wf.source.unwrap_or_default(),
                filename: wf.filename,
            },
            state.checkpoint,
            state
                .outputs
                .into_iter()
                .map(|(h, t)| (h, t.to_string()))
                .collect(),
        );
        file.origin = Some("server".to_owned());
        file.execution_id = Some(exec_id);
        Ok(file)
    }

    /// Rebuild an execution from its durable state.
    async fn load(&self, id: &str) -> EngineResult<(ExecutionRecord, Execution)> {
        let rec = self.execution(id).await?;
        let (_, plan) = self.plan_of(&rec.workflow_id).await?;
        let state = self.store.checkpoint_state(id, None).await?;
        let (exec, _) =
            Execution::restore(plan, &state.checkpoint, &|h| state.outputs.get(h).cloned())
                .map_err(|e| {
                    EngineError::Internal(anyhow!("execution {id} cannot be restored: {e}"))
                })?;
        Ok((rec, exec))
    }

    /// Mark executions whose driving process is gone as interrupted.
    pub async fn recover_orphans(&self) -> Result<Vec<String>> {
        let ids = self.store.interrupt_orphans(&self.me, now_ms()).await?;
        for id in &ids {
            let _ = self.notify.send(id.clone());
        }
        Ok(ids)
    }

    /// Give an execution its own budget (each limit set replaces the one it
    /// had); its driver takes it when it resumes.
    pub async fn set_budget(&self, id: &str, budget: ax_core::Budget) -> EngineResult<()> {
        if let Some(u) = budget.usd
            && !(u.is_finite() && u >= 0.0)
        {
            return Err(EngineError::BadRequest(format!(
                "the budget in USD must be zero or more, not {u}"
            )));
        }
        self.parent_budget_covers(id, budget).await?;
        if self.store.set_budget(id, budget, now_ms()).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!("no execution {id}")))
        }
    }

    /// A sub-workflow runs on what its parent's budget had left for it: its
    /// own budget cannot be raised past that, only its parent's.
    async fn parent_budget_covers(&self, id: &str, budget: ax_core::Budget) -> EngineResult<()> {
        let Some(parent) = self.store.get_execution(id).await?.and_then(|r| r.parent) else {
            return Ok(());
        };
        let Ok((_, p)) = self.load(&parent.id).await else {
            return Ok(());
        };
        let limits = p.budget();
        let mut clash = Vec::new();
        if budget.usd.is_some() && limits.usd.is_some() {
            clash.push("--budget-usd");
        }
        if budget.tokens.is_some() && limits.tokens.is_some() {
            clash.push("--budget-tokens");
        }
        if clash.is_empty() {
            return Ok(());
        }
        let pid = &parent.id;
        Err(EngineError::Conflict(format!(
            "execution {id} is a sub-workflow of {pid} (step `{}`), whose budget covers it: it runs on what {pid} has left; raise that one instead: `ax workflow resume {pid} {} N`",
            parent.step,
            clash.join(" N ")
        )))
    }

    /// Pause, resume or cancel, from any process. Returns the execution after the
    /// request was delivered (for a runner in another process, after it was taken).
    pub async fn control(
        self: &Arc<Self>,
        id: &str,
        control: Control,
    ) -> EngineResult<(ExecutionRecord, Option<JoinHandle<RunEnd>>)> {
        // A request goes to the lease that holds the run when it is made; if
        // that owner stops (or loses its lease) first, the request lapses with
        // it, and this asks again or acts here.
        let deadline = tokio::time::Instant::now() + self.settings.lease + Duration::from_secs(5);
        let mut asked: Option<(i64, u64)> = None;
        loop {
            let rec = self.execution(id).await?;
            if let Some((token, _)) = asked
                && token == rec.lease_token
                && rec.control.is_none()
            {
                // The owner took it.
                return Ok((rec, None));
            }
            check_control(self, &rec, control)?;
            if let Some(tx) = self.live_here(id)
                && tx.send(Msg::Control(control)).is_ok()
            {
                return Ok((self.execution(id).await?, None));
            }
            let alive =
                rec.owner.as_deref().is_some_and(|o| o != self.me.id) && self.owner_alive(&rec);
            if !alive {
                if let Some((_, at)) = asked {
                    self.store.withdraw_control(id, at).await?;
                }
                return self.control_here(id, control, &rec).await;
            }
            if asked.is_none_or(|(token, _)| token != rec.lease_token) {
                let at = now_ms();
                if let Some(token) = self.store.request_control(id, control, at).await? {
                    asked = Some((token, at));
                }
            }
            if tokio::time::Instant::now() > deadline {
                if let Some((_, at)) = asked {
                    self.store.withdraw_control(id, at).await?;
                }
                return Err(EngineError::Conflict(format!(
                    "execution {id} is driven by {} which did not take the {} request; it may be stuck",
                    rec.owner.as_deref().unwrap_or("another process"),
                    control.as_str()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Nobody drives it: carry out the request in this process.
    async fn control_here(
        self: &Arc<Self>,
        id: &str,
        control: Control,
        rec: &ExecutionRecord,
    ) -> EngineResult<(ExecutionRecord, Option<JoinHandle<RunEnd>>)> {
        let (_, mut exec) = self.load(id).await?;
        let now = now_ms();
        let drive = control == Control::Resume;
        let claim = self
            .store
            .claim(id, &self.me, now, self.lease_ms(), drive)
            .await?;
        let lease = match claim {
            Claim::Granted { lease, .. } => lease,
            Claim::Held { owner } => {
                return Err(EngineError::Conflict(format!(
                    "execution {id} was just taken over by another process ({owner})"
                )));
            }
        };
        let mut records = Vec::new();
        if !exec.state().is_terminal()
            && (exec.in_flight() > 0 || exec.state() == ExecutionState::Running)
        {
            // Whatever was in flight died with its process.
            records = exec
                .interrupt(now)
                .map_err(|e| EngineError::Internal(anyhow!(e)))?;
            if rec.state() == ExecutionState::Interrupted {
                // Recovery already recorded the interruption; keep only the step records.
                records.retain(|a| !matches!(a, Action::ExecutionChanged { .. }));
            }
        }
        let event = match control {
            // Never started: start it.
            Control::Resume if exec.state() == ExecutionState::Idle => Event::Start,
            Control::Resume => Event::Resume,
            Control::Cancel => Event::Cancel {
                reason: Some("cancelled by request".into()),
            },
            Control::Pause | Control::PauseNow => Event::Pause {
                immediate: control == Control::PauseNow,
            },
        };
        if control == Control::Resume {
            if !records.is_empty() {
                self.commit_records(id, &mut exec, records, now, &lease)
                    .await?;
            }
            let handle =
                self.spawn_runner(id.to_owned(), exec, lease, Some(event), rec.parent.clone());
            return Ok((self.execution(id).await?, Some(handle)));
        }
        let mut actions = records;
        match exec.handle(event, now) {
            Ok(more) => actions.extend(more),
            Err(ExecError::InvalidControl { .. })
                if exec.state() == ExecutionState::Interrupted =>
            {
                // Pausing an interrupted execution: it does nothing already;
                // from now on no worker resumes it either.
                self.store.set_queued(id, false, now).await?;
            }
            Err(e) => {
                let _ = self.store.release(&lease).await;
                return Err(EngineError::Conflict(e.to_string()));
            }
        }
        let controls: Vec<Action> = actions
            .iter()
            .filter(|a| children::is_child_control(a))
            .cloned()
            .collect();
        let r = self
            .commit_records(id, &mut exec, actions, now, &lease)
            .await;
        self.store.release(&lease).await?;
        r?;
        self.control_children_now(id, &controls).await;
        if let Some(parent) = &rec.parent {
            let waiting = exec.state() == ExecutionState::Waiting;
            let event = match children::outcome_event(parent, &exec) {
                Some(ev) => Some(ev),
                // A waiting child that was paused: the parent must not wait for it.
                None if waiting != (rec.state() == ExecutionState::Waiting) => {
                    Some(Event::ChildWaiting {
                        key: parent.step.clone(),
                        attempt: parent.attempt,
                        waiting,
                    })
                }
                None => None,
            };
            if let Some(ev) = event {
                self.report_to_parent(parent, ev).await;
            }
        }
        Ok((self.execution(id).await?, None))
    }

    /// Commit actions produced outside a runner (no provider calls involved).
    async fn commit_records(
        &self,
        id: &str,
        exec: &mut Execution,
        actions: Vec<Action>,
        now: u64,
        lease: &Lease,
    ) -> EngineResult<()> {
        let mut b = BatchBuilder::new(id, now, Some(lease.clone()));
        b.add_actions(exec, &actions, None, &mut Default::default());
        let delta = exec.take_delta();
        let completed = batch::completed_count(exec);
        let visible = actions.iter().any(|a| matches!(a, Action::Checkpoint));
        let batch = b.finish(Some((CheckpointWrite::Delta(delta), visible, completed)));
        self.store.commit(batch, None).await?;
        let _ = self.notify.send(id.to_owned());
        Ok(())
    }

    /// Rewind an execution to a restore point and continue it. The attempts after
    /// that point stay in the history, marked superseded.
    pub async fn restore(
        self: &Arc<Self>,
        checkpoint_id: &str,
        run_here: bool,
    ) -> EngineResult<(ExecutionRecord, Option<JoinHandle<RunEnd>>)> {
        let row: i64 = checkpoint_id
            .parse()
            .map_err(|_| EngineError::NotFound(format!("no checkpoint {checkpoint_id}")))?;
        let id = self
            .store
            .checkpoint_execution(row)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no checkpoint {checkpoint_id}")))?;
        // Stop it first if it runs here; refuse if another process drives it.
        if let Some(tx) = self.live_here(&id) {
            let _ = tx.send(Msg::Control(Control::PauseNow));
            self.wait_released(&id, Duration::from_secs(10)).await?;
        }
        let rec = self.execution(&id).await?;
        if self.owner_alive(&rec) && rec.owner.as_deref() != Some(self.me.id.as_str()) {
            return Err(EngineError::Conflict(format!(
                "execution {id} is running in another process ({}); pause it first",
                rec.owner.as_deref().unwrap_or("unknown")
            )));
        }
        let (_, plan) = self.plan_of(&rec.workflow_id).await?;
        let store::CheckpointState {
            checkpoint: cp,
            outputs,
        } = self.store.checkpoint_state(&id, Some(row)).await?;
        let rewind = store::kept_attempts(&cp, plan.workflow.steps.iter().map(|s| s.key.as_str()));
        let (mut exec, _) =
            Execution::restore(plan, &cp, &|h| outputs.get(h).cloned()).map_err(|e| {
                EngineError::Internal(anyhow!(
                    "checkpoint {checkpoint_id} cannot be restored: {e}"
                ))
            })?;
        let now = now_ms();
        // Attempts in flight at the checkpoint are lost: they run again.
        exec.interrupt(now)
            .map_err(|e| EngineError::Internal(anyhow!(e)))?;
        let state = exec.state();
        let full = exec.snapshot();
        let message = format!("restored to checkpoint {checkpoint_id}");
        let (finished_at, reason) = (exec.finished_at(), exec.reason().map(str::to_owned));
        let claim = self
            .store
            .claim(&id, &self.me, now, self.lease_ms(), run_here)
            .await?;
        let lease = Engine::conflict_claim(&id, claim)?;
        // One transaction: attempts after the checkpoint (the ones rewound)
        // become history, and the rewound state is recorded.
        let mut b = BatchBuilder::new(&id, now, Some(lease.clone()));
        b.log(&message);
        let completed = full.completed_steps().len() as u64;
        let mut batch = b.finish(Some((CheckpointWrite::Full(full), false, completed)));
        batch.rewind = rewind;
        batch.steps = batch::step_rows(&exec);
        batch.execution = Some(store::ExecutionUpdate {
            state,
            reason: if state.is_terminal() {
                reason
            } else {
                Some(message.clone())
            },
            started_at: None,
            finished_at,
            wake_at: (state == ExecutionState::Waiting)
                .then(|| exec.next_wakeup())
                .flatten(),
        });
        if let Err(e) = self.store.commit(batch, None).await {
            let _ = self.store.release(&lease).await;
            return Err(e.into());
        }
        if !run_here || !state.is_resumable() {
            self.store.release(&lease).await?;
            return Ok((self.execution(&id).await?, None));
        }
        let handle = self.spawn_runner(
            id.clone(),
            exec,
            lease,
            Some(Event::Resume),
            rec.parent.clone(),
        );
        Ok((self.execution(&id).await?, Some(handle)))
    }

    async fn wait_released(&self, id: &str, limit: Duration) -> EngineResult<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.live_here(id).is_some() {
            if tokio::time::Instant::now() > deadline {
                return Err(EngineError::Conflict(format!(
                    "execution {id} did not stop within {limit:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Import a checkpoint file (from the browser or another server) as a new
    /// execution; with `resume`, continue it here with real providers.
    pub async fn import(
        self: &Arc<Self>,
        file: CheckpointFile,
        resume: bool,
    ) -> EngineResult<(ExecutionRecord, Option<JoinHandle<RunEnd>>)> {
        let wf = self
            .create_workflow(file.workflow.source.clone(), file.workflow.filename.clone())
            .await?;
        let (_, plan) = self.plan_of(&wf.id).await?;
        let outputs: BTreeMap<String, Arc<str>> = file
            .outputs
            .iter()
            .map(|(h, t)| (h.clone(), Arc::from(t.as_str())))
            .collect();
        let (mut exec, compat) =
            Execution::restore(plan.clone(), &file.checkpoint, &|h| outputs.get(h).cloned())
                .map_err(|e| {
                    EngineError::BadRequest(format!("the checkpoint file cannot be restored: {e}"))
                })?;
        let now = now_ms();
        exec.interrupt(now)
            .map_err(|e| EngineError::Internal(anyhow!(e)))?;
        let id = crate::ids::new_id();
        let full = exec.snapshot();
        let keys: Vec<String> = plan.workflow.steps.iter().map(|s| s.key.clone()).collect();
        let origin = file.origin.clone().unwrap_or_else(|| "a file".to_owned());
        let mut message = format!("imported from {origin}");
        if !compat.same_definition {
            message.push_str(&format!(
                "; re-running {} changed step(s)",
                compat.rerun.len()
            ));
        }
        // The batch is written under the lease the insert grants.
        let mut b = BatchBuilder::new(&id, now, None);
        b.log(&message);
        let mut batch = b.finish(None);
        batch.outputs = outputs.into_iter().collect();
        batch.steps = batch::step_rows(&exec);
        batch.execution = Some(store::ExecutionUpdate {
            state: exec.state(),
            reason: Some(message.clone()),
            started_at: None,
            finished_at: None,
            wake_at: (exec.state() == ExecutionState::Waiting)
                .then(|| exec.next_wakeup())
                .flatten(),
        });
        let (lease, _) = self
            .store
            .insert_execution(
                store::NewExecution {
                    id: id.clone(),
                    workflow_id: wf.id.clone(),
                    inputs: serde_json::to_string(exec.inputs()).map_err(anyhow::Error::from)?,
                    seed: exec.seed(),
                    keys,
                    initial: full,
                    now,
                    // Only a resumed import wants a driver: one left
                    // interrupted waits for `resume`.
                    queued: resume && exec.state().is_resumable(),
                    parent: None,
                    budget: exec.own_budget(),
                    cache: false,
                },
                Some((self.me.clone(), self.lease_ms())),
                Some(batch),
            )
            .await?;
        let lease = lease.ok_or_else(|| EngineError::Internal(anyhow!("no lease was granted")))?;
        if resume && exec.state().is_resumable() {
            let handle = self.spawn_runner(id.clone(), exec, lease, Some(Event::Resume), None);
            return Ok((self.execution(&id).await?, Some(handle)));
        }
        self.store.release(&lease).await?;
        Ok((self.execution(&id).await?, None))
    }

    // ------------------------------------------------------------ the runner

    fn spawn_runner(
        self: &Arc<Self>,
        id: String,
        mut exec: Execution,
        lease: Lease,
        first: Option<Event>,
        parent: Option<store::ParentLink>,
    ) -> JoinHandle<RunEnd> {
        // What each step's attempt can cost at most, for the budget check.
        let router = Arc::clone(&self.router);
        exec.set_rates(&|s| router.rate(s));
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(
                id.clone(),
                Slot {
                    tx: tx.clone(),
                    lease: lease.clone(),
                },
            );
        }
        self.ensure_keeper();
        let engine = Arc::clone(self);
        // A child that waits was already reported as waiting.
        let waiting = exec.state() == ExecutionState::Waiting;
        tokio::spawn(async move {
            let mut runner = Runner {
                engine: Arc::clone(&engine),
                id: id.clone(),
                lease: lease.clone(),
                abandoned: false,
                exec,
                tx,
                in_flight: HashMap::new(),
                running: Default::default(),
                wake: None,
                journal: (0, 0),
                waiting,
                parent,
                cache_all: false,
            };
            let end = runner.run(rx, first).await;
            engine.forget_runner(&id, &runner.tx);
            if !runner.abandoned
                && let Some(parent) = &runner.parent
                && let Some(ev) = children::outcome_event(parent, &runner.exec)
            {
                engine.report_to_parent(parent, ev).await;
            }
            if runner.abandoned {
                engine.give_back(lease);
            } else {
                let _ = engine.store.release(&lease).await;
            }
            let _ = engine.notify.send(id);
            engine.work.notify_one();
            end
        })
    }

    /// A runner stopped driving on an error (the database went away, the
    /// lease was lost): hand its lease back once the database answers, so that
    /// a worker (this one too) resumes the run from what was recorded. Waiting
    /// for the lease to run out is not enough: workers on this machine see
    /// that this process is alive and would leave the run alone. A lease
    /// another process took meanwhile is not touched (the token differs).
    fn give_back(self: &Arc<Self>, lease: Lease) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            loop {
                let Some(engine) = weak.upgrade() else { return };
                match engine.store.release(&lease).await {
                    Ok(()) => {
                        engine.work.notify_one();
                        return;
                    }
                    Err(e) => tracing::warn!(
                        execution = %lease.execution_id,
                        "could not hand the lease back yet (retrying): {e:#}"
                    ),
                }
                drop(engine);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// A runner stops taking messages: the next control or decision finds no
    /// runner here (unless another runner took the execution over meanwhile).
    fn forget_runner(&self, id: &str, tx: &mpsc::UnboundedSender<Msg>) {
        if let Ok(mut runs) = self.runs.lock()
            && runs.get(id).is_some_and(|s| s.tx.same_channel(tx))
        {
            runs.remove(id);
        }
    }

    /// Start, once, the task that renews this process's leases and hands
    /// control requests to its runners (polling: the fallback for wake-ups).
    fn ensure_keeper(self: &Arc<Self>) {
        if self.keeper.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        self.ensure_wakeups();
        let weak = Arc::downgrade(self);
        let (poll, renew_every) = (self.settings.poll_interval, self.settings.lease / 3);
        tokio::spawn(async move {
            let mut last_renew = tokio::time::Instant::now();
            let mut last_poll = last_renew;
            loop {
                tokio::time::sleep(poll.min(renew_every)).await;
                let Some(engine) = weak.upgrade() else { return };
                let held: Vec<(String, i64)> = match engine.runs.lock() {
                    Ok(mut m) => {
                        // A runner task that died (aborted, panicked) holds nothing.
                        m.retain(|_, s| !s.tx.is_closed());
                        m.values()
                            .map(|s| (s.lease.execution_id.clone(), s.lease.token))
                            .collect()
                    }
                    Err(_) => return,
                };
                if held.is_empty() {
                    continue;
                }
                if last_poll.elapsed() >= poll {
                    last_poll = tokio::time::Instant::now();
                    engine.pass_controls().await;
                    engine.pass_messages().await;
                }
                if last_renew.elapsed() >= renew_every {
                    last_renew = tokio::time::Instant::now();
                    let ids: Vec<String> = held.iter().map(|(i, _)| i.clone()).collect();
                    match engine
                        .store
                        .renew(&engine.me, held, now_ms(), engine.lease_ms())
                        .await
                    {
                        Ok(kept) => {
                            for id in ids.iter().filter(|i| !kept.contains(i)) {
                                if let Some(tx) = engine.live_here(id) {
                                    let _ = tx.send(Msg::Fenced);
                                }
                            }
                        }
                        Err(e) => tracing::warn!("could not renew leases: {e:#}"),
                    }
                }
            }
        });
    }

    /// Hand the control requests left for this process to its runners.
    async fn pass_controls(&self) {
        match self.store.take_controls(&self.me).await {
            Ok(requests) => {
                for (id, c) in requests {
                    if let Some(tx) = self.live_here(&id) {
                        let _ = tx.send(Msg::Control(c));
                    }
                }
            }
            Err(e) => tracing::warn!("could not read control requests: {e:#}"),
        }
    }

    /// Tell the runners whose inbox holds messages (decisions, children's
    /// reports) to take them.
    async fn pass_messages(&self) {
        match self.store.with_messages(&self.me).await {
            Ok(ids) => {
                for id in ids {
                    if let Some(tx) = self.live_here(&id) {
                        let _ = tx.send(Msg::Inbox);
                    }
                }
            }
            Err(e) => tracing::warn!("could not read execution inboxes: {e:#}"),
        }
    }

    /// Start, once, the task that acts on the database's wake-ups (PostgreSQL's
    /// NOTIFY): a control request or a message for a run driven here reaches
    /// its runner at once, and new work wakes the worker loop. Nothing to do on
    /// SQLite; the keeper's and the worker's polling covers what a wake-up
    /// connection that was down missed.
    fn ensure_wakeups(self: &Arc<Self>) {
        if self
            .listening
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let Some(mut rx) = self.store.wakeups() else {
            return;
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            use broadcast::error::RecvError;
            loop {
                let wake = rx.recv().await;
                let Some(engine) = weak.upgrade() else { return };
                match wake {
                    Ok(Wake::Control(id)) => {
                        if engine.live_here(&id).is_some() {
                            engine.pass_controls().await;
                        }
                    }
                    Ok(Wake::Inbox(id)) => {
                        if let Some(tx) = engine.live_here(&id) {
                            let _ = tx.send(Msg::Inbox);
                        }
                    }
                    Ok(Wake::Work) => engine.work.notify_one(),
                    Ok(Wake::Resync) | Err(RecvError::Lagged(_)) => {
                        engine.pass_controls().await;
                        engine.pass_messages().await;
                        engine.work.notify_one();
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// Be a worker: claim executions that wait for a driver (and, with
    /// `recover`, those whose driver died or lost its lease) and drive them,
    /// up to `max_runs` at once, until the engine is dropped.
    pub fn start_worker(self: &Arc<Self>) {
        self.ensure_wakeups();
        let weak = Arc::downgrade(self);
        let interval = self.settings.claim_interval;
        tokio::spawn(async move {
            loop {
                let Some(engine) = weak.upgrade() else { return };
                if let Err(e) = engine.claim_once().await {
                    tracing::warn!("could not claim work: {e:#}");
                }
                let work = async { engine.work.notified().await };
                let _ = tokio::time::timeout(interval, work).await;
                // Wake-ups come in bursts (one per run handed back): one
                // pass serves a burst, and a run that cannot be adopted is
                // not retried in a tight loop.
                drop(engine);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    /// One pass of the worker: claim what fits and drive it.
    pub async fn claim_once(self: &Arc<Self>) -> Result<usize> {
        let free = match self.settings.max_runs {
            Some(max) => max.saturating_sub(self.running_here()),
            None => 64,
        };
        if free == 0 {
            return Ok(0);
        }
        let claimed = self
            .store
            .claim_work(
                &self.me,
                free,
                now_ms(),
                self.lease_ms(),
                self.settings.recover,
            )
            .await?;
        let n = claimed.len();
        for c in claimed {
            let id = c.lease.execution_id.clone();
            if let Err(e) = self.adopt(c).await {
                tracing::warn!(execution = %id, "could not take over: {e}");
            }
        }
        Ok(n)
    }

    /// Drive an execution this worker claimed: what was in flight when its
    /// previous driver stopped runs again; completed steps do not.
    async fn adopt(self: &Arc<Self>, c: Claimed) -> EngineResult<()> {
        let id = c.lease.execution_id.clone();
        let (rec, mut exec) = match self.load(&id).await {
            Ok(x) => x,
            Err(e) => {
                self.give_back(c.lease.clone());
                return Err(e);
            }
        };
        let now = now_ms();
        let mut actions = Vec::new();
        if !exec.state().is_terminal()
            && (exec.in_flight() > 0 || exec.state() == ExecutionState::Running)
        {
            actions = exec
                .interrupt(now)
                .map_err(|e| EngineError::Internal(anyhow!(e)))?;
            if rec.state() == ExecutionState::Interrupted {
                actions.retain(|a| !matches!(a, Action::ExecutionChanged { .. }));
            }
        }
        let message = match &c.previous {
            Some(prev) => {
                self.metrics.takeover();
                format!(
                    "taken over by {} from {prev}, whose lease ran out",
                    self.me.id
                )
            }
            None if c.state == "interrupted" => {
                self.metrics.takeover();
                format!("resumed by {} after its driver stopped", self.me.id)
            }
            None => format!("claimed by {}", self.me.id),
        };
        tracing::info!(execution = %id, "{message}");
        let mut b = BatchBuilder::new(&id, now, Some(c.lease.clone()));
        b.log(&message);
        b.add_actions(&exec, &actions, None, &mut Default::default());
        let delta = exec.take_delta();
        let completed = batch::completed_count(&exec);
        let batch = b.finish(Some((CheckpointWrite::Delta(delta), false, completed)));
        if let Err(e) = self.store.commit(batch, None).await {
            self.give_back(c.lease.clone());
            return Err(e.into());
        }
        let event = match exec.state() {
            ExecutionState::Idle => Event::Start,
            s if s.is_resumable() => Event::Resume,
            _ => {
                self.give_back(c.lease.clone());
                return Ok(());
            }
        };
        self.spawn_runner(id, exec, c.lease, Some(event), rec.parent);
        Ok(())
    }
}

/// A run driven by this process.
struct Slot {
    tx: mpsc::UnboundedSender<Msg>,
    lease: Lease,
}

/// Refuse what cannot apply, with a clear reason.
fn check_control(engine: &Engine, rec: &ExecutionRecord, control: Control) -> EngineResult<()> {
    let state = rec.state();
    let ok = match control {
        Control::Pause | Control::PauseNow => matches!(
            state,
            ExecutionState::Running
                | ExecutionState::Paused
                | ExecutionState::Idle
                | ExecutionState::Waiting
        ),
        Control::Resume => engine.can_resume(rec),
        Control::Cancel => !state.is_terminal(),
    };
    if ok {
        return Ok(());
    }
    let hint = match control {
        Control::Resume if state == ExecutionState::Running => {
            " (it is already running)".to_owned()
        }
        Control::Resume if state == ExecutionState::Waiting => {
            " (it waits for a decision: approve or reject its waiting step, and it goes on by itself)"
                .to_owned()
        }
        Control::Resume => {
            format!(" (only paused, failed or interrupted executions resume; this one is {state})")
        }
        _ => String::new(),
    };
    Err(EngineError::Conflict(format!(
        "cannot {} execution {}: it is {state}{hint}",
        control.as_str(),
        rec.id
    )))
}

struct Runner {
    engine: Arc<Engine>,
    id: String,
    /// Every batch is written under it (and refused once it is lost).
    lease: Lease,
    /// Stopped driving on an error (lease lost, database gone).
    abandoned: bool,
    exec: Execution,
    tx: mpsc::UnboundedSender<Msg>,
    in_flight: HashMap<(String, u32), JoinHandle<()>>,
    running: std::collections::HashSet<(String, u32)>,
    wake: Option<u64>,
    /// (restore points, journal rows since the last full snapshot), kept in
    /// memory so that no step has to count them.
    journal: (usize, usize),
    /// Whether the parent was last told that this child waits.
    waiting: bool,
    /// For a child execution: its parent.
    parent: Option<store::ParentLink>,
    /// The run's `--cache`.
    cache_all: bool,
}

/// Compact an execution's checkpoint journal after this many rows.
const COMPACT_AFTER_ROWS: usize = 2000;

impl Runner {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Msg>, first: Option<Event>) -> RunEnd {
        if let Err(e) = self.refresh_budget().await {
            return self.abandon(e);
        }
        if let Err(e) = self.find_children().await {
            return self.abandon(e);
        }
        let first = match first {
            Some(ev) => self.step(ev, None).await,
            // Started for a message in its inbox.
            None => self.take_messages().await,
        };
        if let Err(e) = first {
            return self.abandon(e);
        }
        loop {
            if self.finished() {
                // Take what arrived while it was finishing (a resume right
                // after a pause), else stop taking messages.
                let result = match rx.try_recv() {
                    Ok(Msg::Control(c)) => self.control(c).await,
                    Ok(Msg::Inbox) => self.take_messages().await,
                    Ok(Msg::Event(ev)) => self.child_event(ev).await,
                    Ok(_) => Ok(()),
                    Err(_) => {
                        self.engine.forget_runner(&self.id, &self.tx);
                        break;
                    }
                };
                if let Err(e) = result {
                    return self.abandon(e);
                }
                continue;
            }
            let sleep_for = self
                .wake
                .map(|w| Duration::from_millis(w.saturating_sub(now_ms())))
                .unwrap_or(Duration::from_secs(3600));
            let result = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Answer { key, attempt, outcome }) => {
                        self.in_flight.remove(&(key.clone(), attempt));
                        let class = outcome.result.as_ref().err().map(|e| e.class.as_str());
                        self.engine.metrics.step_ended(&outcome.provider, class, outcome.latency_ms);
                        self.exec.charge(&key, attempt, spend_of(&outcome));
                        let ev = match &outcome.result {
                            Ok(c) => Event::StepSucceeded { key: key.clone(), attempt, output: c.text.clone() },
                            Err(e) => Event::StepFailed {
                                key: key.clone(),
                                attempt,
                                error: ax_core::StepError {
                                    class: e.class,
                                    message: e.message.clone(),
                                    retry_after_ms: e.retry_after_ms,
                                    provider_retry: Some(outcome.retry),
                                },
                            },
                        };
                        self.step(ev, Some((key, attempt, outcome))).await
                    }
                    Some(Msg::Control(c)) => self.control(c).await,
                    Some(Msg::Fenced) => Err(anyhow!(
                        "this process lost its lease on execution {} (another process took it over)",
                        self.id
                    )),
                    Some(Msg::Inbox) => self.take_messages().await,
                    Some(Msg::Event(ev)) => self.child_event(ev).await,
                    None => break,
                },
                _ = tokio::time::sleep(sleep_for), if self.wake.is_some() => {
                    self.wake = None;
                    self.step(Event::Tick, None).await
                }
            };
            if let Err(e) = result {
                return self.abandon(e);
            }
        }
        for (_, h) in self.in_flight.drain() {
            h.abort();
        }
        RunEnd {
            state: self.exec.state(),
            reason: self.exec.reason().map(str::to_owned),
        }
    }

    /// The runner is done when the run ended, or when it is paused (or
    /// interrupted) with nothing in flight: resuming starts a new runner.
    fn finished(&self) -> bool {
        let s = self.exec.state();
        let idle = match s {
            ExecutionState::Paused | ExecutionState::Interrupted => true,
            ExecutionState::Waiting => !self.engine.settings.keep_waiting,
            s => s.is_terminal(),
        };
        // Children in flight are executions of their own: they report through
        // the inbox, whoever drives this one then.
        idle && self.exec.in_flight() == self.exec.children_in_flight()
    }

    /// Apply the messages in the execution's inbox (decisions, children's
    /// reports), recording for each whether the executor accepted it.
    async fn take_messages(&mut self) -> Result<()> {
        let now = now_ms();
        let messages = self
            .engine
            .store
            .take_messages(&self.id, &self.engine.me, now)
            .await?;
        for m in messages {
            let Some(event) = decisions::message_event(&m) else {
                let outcome = store::MessageOutcome::Refused {
                    status: 400,
                    error: "the message cannot be read".into(),
                };
                self.engine.store.settle_message(m.id, outcome, now).await?;
                continue;
            };
            // A refused event changes nothing: try it on a copy first.
            let outcome = match self.exec.clone().handle(event.clone(), now_ms()) {
                Err(e) => decisions::refusal(&e),
                Ok(_) => {
                    self.step(event, None).await?;
                    store::MessageOutcome::Accepted
                }
            };
            self.engine
                .store
                .settle_message(m.id, outcome, now_ms())
                .await?;
        }
        Ok(())
    }

    /// Stop driving after an error that makes driving unsafe (the database is
    /// gone, another process took over): abort calls, keep everything recorded.
    fn abandon(&mut self, e: anyhow::Error) -> RunEnd {
        tracing::error!(execution = %self.id, "stopped driving: {e:#}");
        self.abandoned = true;
        for (_, h) in self.in_flight.drain() {
            h.abort();
        }
        RunEnd {
            state: ExecutionState::Interrupted,
            reason: Some(format!("{e:#}")),
        }
    }

    /// The run's own budget, as last given (`resume --budget-usd` may have
    /// raised it from another process).
    async fn refresh_budget(&mut self) -> Result<()> {
        if let Some(rec) = self.engine.store.get_execution(&self.id).await? {
            self.exec.set_budget(rec.budget);
            self.cache_all = rec.cache;
        }
        Ok(())
    }

    async fn control(&mut self, c: Control) -> Result<()> {
        if c == Control::Resume {
            self.refresh_budget().await?;
        }
        let ev = match c {
            Control::Pause => Event::Pause { immediate: false },
            Control::PauseNow => Event::Pause { immediate: true },
            Control::Resume => Event::Resume,
            Control::Cancel => Event::Cancel {
                reason: Some("cancelled by request".into()),
            },
        };
        self.step(ev, None).await
    }

    /// Feed one event, commit what it decided, then act on it.
    async fn step(
        &mut self,
        event: Event,
        answer: Option<(String, u32, Box<CallOutcome>)>,
    ) -> Result<()> {
        let now = now_ms();
        let output = match &event {
            Event::StepSucceeded { output, .. } => Some(Arc::<str>::from(output.as_str())),
            _ => None,
        };
        let actions = match self.exec.handle(event, now) {
            Ok(a) => a,
            Err(ExecError::Stale { key, attempt, why }) => {
                tracing::debug!(execution = %self.id, "dropped a late answer for {key} attempt {attempt}: {why}");
                return Ok(());
            }
            Err(e @ ExecError::InvalidControl { .. }) => {
                let mut b = BatchBuilder::new(&self.id, now, Some(self.lease.clone()));
                b.log(&e.to_string());
                let batch = b.finish(None);
                self.engine.store.commit(batch, None).await?;
                let _ = self.engine.notify.send(self.id.clone());
                return Ok(());
            }
            Err(e) => return Err(anyhow!("execution {} refused an event: {e}", self.id)),
        };
        // Record.
        let mut b = BatchBuilder::new(&self.id, now, Some(self.lease.clone()));
        if let (Some(text), Some((key, attempt, _))) = (&output, &answer) {
            b.output(key, *attempt, text.clone());
        }
        let meta = answer
            .as_ref()
            .map(|(k, a, o)| (k.as_str(), *a, o.as_ref()));
        b.add_actions(&self.exec, &actions, meta, &mut self.running);
        if let Some((_, _, outcome)) = &answer {
            for note in &outcome.notes {
                b.log(note);
            }
        }
        let delta = self.exec.take_delta();
        let visible = actions.iter().any(|a| matches!(a, Action::Checkpoint));
        let completed = batch::completed_count(&self.exec);
        let batch = b.finish(Some((CheckpointWrite::Delta(delta), visible, completed)));
        // Keep restore points bounded: hide old ones now and then, and compact the
        // journal when it grows long or the run ends (amortized O(1) per step).
        let keep = self.engine.settings.keep_checkpoints.max(1);
        self.journal.1 += 1;
        if visible {
            self.journal.0 += 1;
        }
        let hide = self.journal.0 > keep + keep / 2;
        let compact = self.journal.1 > COMPACT_AFTER_ROWS
            || (self.exec.state().is_terminal() && self.journal.1 > keep);
        let maintenance = if compact {
            Some(Maintenance::Retain { keep })
        } else if hide {
            Some(Maintenance::Hide { keep })
        } else {
            None
        };
        self.engine
            .store
            .commit(batch, maintenance)
            .await
            .with_context(|| format!("could not record execution {}", self.id))?;
        if compact {
            self.journal = (self.journal.0.min(keep), 1);
        } else if hide {
            self.journal.0 = keep;
        }
        let _ = self.engine.notify.send(self.id.clone());
        // Act.
        let controls: Vec<Action> = actions
            .iter()
            .filter(|a| children::is_child_control(a))
            .cloned()
            .collect();
        for a in actions {
            match a {
                Action::AbortStep { key, attempt, .. } => {
                    if let Some(h) = self.in_flight.remove(&(key, attempt)) {
                        h.abort();
                    }
                }
                Action::StartStep(s) => {
                    let router = Arc::clone(&self.engine.router);
                    if let Some(first) = router.route(&s.agent).first() {
                        self.engine.metrics.step_started(&first.provider);
                    }
                    let tx = self.tx.clone();
                    let key = s.key.clone();
                    let attempt = s.attempt;
                    let deadline = s.deadline.map(|d| d.saturating_sub(now_ms()));
                    let sink = self.engine.deltas.sink(&self.id, &s.key, s.attempt);
                    let step = self.exec.plan().workflow.step(&s.key);
                    let using = cache::cache_use(&s, step, self.cache_all);
                    let store = self.engine.store.clone();
                    let handle = tokio::spawn(async move {
                        let outcome =
                            cache::call(&router, &store, &s, using, deadline, Some(sink)).await;
                        let _ = tx.send(Msg::Answer {
                            key: s.key,
                            attempt: s.attempt,
                            outcome: Box::new(outcome),
                        });
                    });
                    self.in_flight.insert((key, attempt), handle);
                }
                Action::WakeAt { at } => self.wake = Some(at),
                Action::StartChild(s) => self.start_child(s),
                _ => {}
            }
        }
        self.engine.control_children(&self.id, &controls);
        self.report_waiting().await;
        if self.exec.state().is_terminal() {
            self.wake = None;
        }
        Ok(())
    }
}

/// What an answer cost: its price (0 when the model has none) and its tokens
/// (nothing for an answer from the cache).
fn spend_of(outcome: &CallOutcome) -> ax_core::exec::Spend {
    let tokens = match &outcome.result {
        _ if outcome.provider == cache::CACHE_PROVIDER => 0,
        Ok(c) => c.tokens_in.saturating_add(c.tokens_out),
        Err(_) => 0,
    };
    ax_core::exec::Spend {
        usd: outcome.cost_usd.unwrap_or(0.0),
        tokens,
    }
}
