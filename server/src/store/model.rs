//! What the store reads and writes, the same for every backend: records as the
//! API and the CLI show them, and the rows an engine step commits.

use ax_core::checkpoint::{Checkpoint, CheckpointDelta};
use ax_core::{ExecutionState, StepState};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

// ---------------------------------------------------------------- workflows

/// A stored workflow definition.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRecord {
    pub id: String,
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub hash: String,
    pub step_count: u64,
    pub created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub total_executions: u64,
    pub successful_executions: u64,
    pub failed_executions: u64,
}

/// A valid workflow to store.
pub struct NewWorkflow {
    pub id: String,
    pub source: String,
    pub filename: Option<String>,
    pub plan: Arc<ax_core::Plan>,
    pub format: ax_core::parse::Format,
    pub now: u64,
}

/// The rows of a new workflow, as every backend writes them.
pub struct WorkflowRows {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub author: Option<String>,
    /// JSON array.
    pub tags: String,
    pub source: String,
    pub format: &'static str,
    pub filename: Option<String>,
    /// The parsed workflow (JSON).
    pub definition: String,
    pub hash: String,
    pub now: u64,
    pub steps: Vec<StepDefinitionRow>,
}

pub struct StepDefinitionRow {
    pub key: String,
    pub position: u32,
    pub level: u32,
    pub agent: String,
    pub prompt: String,
    pub optional: bool,
    /// The step (JSON).
    pub definition: String,
    pub dependencies: Vec<String>,
}

impl NewWorkflow {
    pub fn rows(&self) -> anyhow::Result<WorkflowRows> {
        let wf = &self.plan.workflow;
        let mut steps = Vec::with_capacity(wf.steps.len());
        for (i, s) in wf.steps.iter().enumerate() {
            // Declaration order, each once.
            let mut deps: Vec<String> = Vec::with_capacity(s.dependencies.len());
            for d in &s.dependencies {
                if !deps.contains(d) {
                    deps.push(d.clone());
                }
            }
            steps.push(StepDefinitionRow {
                key: s.key.clone(),
                position: i as u32,
                level: self.plan.graph.level_of(i) as u32,
                agent: s.agent.clone(),
                prompt: s.prompt.clone(),
                optional: s.optional,
                definition: serde_json::to_string(s)?,
                dependencies: deps,
            });
        }
        Ok(WorkflowRows {
            id: self.id.clone(),
            name: wf.name.clone(),
            version: wf.version.clone(),
            description: wf.description.clone(),
            author: wf.author.clone(),
            tags: serde_json::to_string(&wf.tags)?,
            source: self.source.clone(),
            format: match self.format {
                ax_core::parse::Format::Json => "json",
                ax_core::parse::Format::Yaml => "yaml",
            },
            filename: self.filename.clone(),
            definition: serde_json::to_string(wf)?,
            hash: self.plan.hash().to_owned(),
            now: self.now,
            steps,
        })
    }
}

/// What deleting a workflow did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// Refused: this many executions are still active.
    Active(u64),
}

// ---------------------------------------------------------------- executions

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRecord {
    pub id: String,
    pub workflow_id: String,
    pub workflow: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub inputs: Value,
    #[serde(skip)]
    pub seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip)]
    pub owner_host: Option<String>,
    #[serde(skip)]
    pub owner_pid: Option<i64>,
    #[serde(skip)]
    pub heartbeat_at: Option<u64>,
    #[serde(skip)]
    pub owner_started: Option<i64>,
    #[serde(skip)]
    pub owner_boot: Option<String>,
    /// The fencing token of the current (or last) lease.
    #[serde(skip)]
    pub lease_token: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<u64>,
    /// Since when it waits for a worker to drive it (None: it needs none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    pub progress: Progress,
    /// The run's own budget (over the file's `config.budget`), if given.
    #[serde(skip_serializing_if = "ax_core::Budget::is_unlimited")]
    pub budget: ax_core::Budget,
    /// `--cache`: steps without their own `cache` use the response cache.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
    /// For a child execution (a `type: workflow` step's run): its parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
}

/// The execution, step, attempt and item (for `forEach`) a child execution
/// runs for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentLink {
    pub id: String,
    pub step: String,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    pub running: u64,
    pub skipped: u64,
}

impl ExecutionRecord {
    pub fn state(&self) -> ExecutionState {
        ExecutionState::parse(&self.state).unwrap_or(ExecutionState::Interrupted)
    }
}

/// A new execution: every step pending, and its initial checkpoint.
pub struct NewExecution {
    pub id: String,
    pub workflow_id: String,
    /// JSON object.
    pub inputs: String,
    pub seed: u64,
    pub keys: Vec<String>,
    pub initial: Checkpoint,
    pub now: u64,
    /// It wants a driver (a worker claims it unless its creator does).
    pub queued: bool,
    /// A child execution's parent.
    pub parent: Option<ParentLink>,
    /// The run's own budget (over the file's).
    pub budget: ax_core::Budget,
    /// Steps without their own `cache` use the response cache.
    pub cache: bool,
}

/// One answer in the response cache.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAnswer {
    pub key: String,
    pub output: String,
    /// The provider and model that gave it.
    pub provider: String,
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: Option<f64>,
    pub created_at: u64,
}

/// What the response cache holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    pub entries: u64,
    /// The answers' text, in bytes.
    pub bytes: u64,
    /// Answers given from the cache.
    pub hits: u64,
    /// What the cached answers cost when they were first made (what each hit saved).
    pub saved_usd: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_at: Option<u64>,
}

/// Which executions to list (newest first).
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub state: Option<String>,
    pub workflow_id: Option<String>,
    /// Only the children of this execution.
    pub parent_id: Option<String>,
    pub limit: u32,
}

/// One step of an execution, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub key: String,
    pub agent: String,
    pub state: String,
    pub attempts: u64,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    pub dependencies: Vec<String>,
    /// An approval's request, while it waits and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// A forEach step's items, once listed: `{"completed", "total"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemProgress>,
    /// The step's own model settings (`model`, `temperature`, `maxTokens`,
    /// `system`), when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<ax_core::ModelSettings>,
}

/// A forEach step's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ItemProgress {
    pub completed: u32,
    pub total: u32,
}

/// One attempt of a step (a row of `workflow_step_executions`), oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    pub id: i64,
    pub step: String,
    pub attempt: u32,
    pub state: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub error_class: Option<String>,
    /// Rewound by a restore: history, not the step's current attempt.
    pub superseded: bool,
    /// The lease it was started under.
    pub lease_token: Option<i64>,
}

/// One claim of an execution (`execution_leases`), oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    pub token: i64,
    pub owner: String,
    pub claimed_at: u64,
    pub previous_owner: Option<String>,
}

// ---------------------------------------------------------------- commits

/// A step attempt starting.
pub struct AttemptStart {
    pub key: String,
    pub attempt: u32,
    pub prompt: String,
    pub at: u64,
    /// The item of a forEach step this attempt is for.
    pub item: Option<u32>,
}

/// A step attempt ending (success, failure, timeout, abort).
#[derive(Default)]
pub struct AttemptEnd {
    pub key: String,
    pub attempt: u32,
    pub state: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: Option<f64>,
    pub latency_ms: Option<u64>,
    pub output_hash: Option<String>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub at: u64,
}

/// The current state of one step.
pub struct StepStateRow {
    pub key: String,
    pub state: StepState,
    pub attempts: u32,
    pub reason: Option<String>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub output_hash: Option<String>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// An approval's request (what the approver reads).
    pub request: Option<String>,
    /// A forEach step's items: (completed, total), once listed.
    pub items: Option<(u32, u32)>,
}

pub struct ExecutionUpdate {
    pub state: ExecutionState,
    pub reason: Option<String>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// A `waiting` execution's wake-up (an approval's deadline), if any.
    pub wake_at: Option<u64>,
}

pub struct NewEvent {
    pub at: u64,
    pub kind: &'static str,
    pub step: Option<String>,
    pub state: Option<String>,
    pub attempt: Option<u32>,
    pub message: Option<String>,
    pub data: Option<Value>,
}

pub enum CheckpointWrite {
    Delta(CheckpointDelta),
    Full(Checkpoint),
}

impl CheckpointWrite {
    pub fn kind(&self) -> &'static str {
        match self {
            CheckpointWrite::Delta(_) => "delta",
            CheckpointWrite::Full(_) => "full",
        }
    }

    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(match self {
            CheckpointWrite::Delta(d) => serde_json::to_string(d)?,
            CheckpointWrite::Full(c) => c.to_json(),
        })
    }
}

/// Everything one engine step changes, committed atomically.
pub struct Batch {
    pub execution_id: String,
    pub now: u64,
    /// Attempts after these (step, attempt) become history first (a restore).
    pub rewind: Vec<(String, u32)>,
    pub outputs: Vec<(String, Arc<str>)>,
    pub starts: Vec<AttemptStart>,
    pub ends: Vec<AttemptEnd>,
    pub steps: Vec<StepStateRow>,
    pub execution: Option<ExecutionUpdate>,
    pub events: Vec<NewEvent>,
    /// The checkpoint row, whether it is a restore point, and the completed steps.
    pub checkpoint: Option<(CheckpointWrite, bool, u64)>,
    /// The lease it is written under: refused unless it is still the
    /// execution's (checked in the same transaction as the writes).
    pub lease: Option<super::owner::Lease>,
}

impl Batch {
    pub fn new(execution_id: &str, now: u64, lease: Option<super::owner::Lease>) -> Batch {
        Batch {
            execution_id: execution_id.to_owned(),
            now,
            rewind: Vec::new(),
            outputs: Vec::new(),
            starts: Vec::new(),
            ends: Vec::new(),
            steps: Vec::new(),
            execution: None,
            events: Vec::new(),
            checkpoint: None,
            lease,
        }
    }

    pub fn token(&self) -> Option<i64> {
        self.lease.as_ref().map(|l| l.token)
    }

    /// Why the batch is refused, if the execution's current lease is not its own.
    pub fn fence(&self, owner: Option<&str>, token: i64) -> anyhow::Result<()> {
        match &self.lease {
            Some(l) if l.token != token || owner != Some(l.owner.as_str()) => anyhow::bail!(
                "execution {} is now driven by another process (lease {} replaced by {}); this process stops driving it",
                self.execution_id,
                l.token,
                token
            ),
            _ => Ok(()),
        }
    }

    /// Whether the execution stops wanting a driver with this batch.
    pub fn settles(&self) -> bool {
        self.execution.as_ref().is_some_and(|u| {
            // A waiting run needs no driver either: a decision or its
            // deadline brings one.
            u.state.is_terminal()
                || matches!(u.state, ExecutionState::Paused | ExecutionState::Waiting)
        })
    }

    /// The event data to store: a checkpoint event names the row it announces.
    pub fn event_data(e: &NewEvent, checkpoint_id: Option<i64>) -> Option<Value> {
        match (e.kind, checkpoint_id) {
            ("checkpoint", Some(id)) => Some(serde_json::json!({ "checkpointId": id.to_string() })),
            _ => e.data.clone(),
        }
    }
}

/// The attempt of each step that a restore to `cp` keeps: later ones, and one
/// that was in flight at the checkpoint (its answer belongs to the rewound
/// timeline), become history. Steps absent from `cp` keep none.
pub fn kept_attempts<'a>(
    cp: &Checkpoint,
    keys: impl Iterator<Item = &'a str>,
) -> Vec<(String, u32)> {
    keys.map(|k| {
        let kept = cp.steps.get(k).map_or(0, |s| {
            if s.state == StepState::Running {
                s.attempt.saturating_sub(1)
            } else {
                s.attempt
            }
        });
        (k.to_owned(), kept)
    })
    .collect()
}

/// Work on an execution's checkpoint journal after a commit, off the
/// commit's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    /// Fold the journal before the oldest of the newest `keep` restore points
    /// into one full snapshot.
    Retain { keep: usize },
    /// Hide restore points beyond the newest `keep` (cheap; rows stay until the
    /// next compaction).
    Hide { keep: usize },
}

// ---------------------------------------------------------------- checkpoints

/// A restore point as listed to users.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRecord {
    pub id: String,
    pub execution_id: String,
    pub created_at: u64,
    pub state: String,
    pub completed_steps: Vec<String>,
}

/// A folded checkpoint and the outputs it refers to.
pub struct CheckpointState {
    pub checkpoint: Checkpoint,
    pub outputs: BTreeMap<String, Arc<str>>,
}

/// What `prune` is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Restore points kept per execution.
    pub keep: usize,
    /// Also drop restore points older than this (ms); each execution keeps its newest.
    pub older_than: Option<u64>,
    /// With `older_than`: delete finished executions older than that.
    pub delete_finished: bool,
    pub now: u64,
}

/// What `prune` did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub executions_compacted: usize,
    pub checkpoints_removed: usize,
    pub executions_deleted: usize,
    pub outputs_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// How much the database holds (benchmarks, growth runs).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Footprint {
    /// Checkpoint rows ever written (the largest row id).
    pub checkpoint_rows_written: u64,
    /// Checkpoint rows kept.
    pub checkpoint_rows: u64,
    /// Bytes of checkpoint data kept (as JSON text).
    pub checkpoint_bytes: u64,
    pub attempts: u64,
    pub events: u64,
    pub outputs: u64,
    pub executions: u64,
    /// The database's size on disk (SQLite: the main file without its WAL).
    pub database_bytes: u64,
}

// ---------------------------------------------------------------- events

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub id: i64,
    pub execution_id: String,
    pub at: u64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

// ---------------------------------------------------------------- conversions

/// A step's own model settings, from its stored definition (JSON).
pub(crate) fn step_settings(definition: &str) -> Option<ax_core::ModelSettings> {
    serde_json::from_str::<ax_core::ModelSettings>(definition)
        .ok()
        .filter(|s| !s.is_empty())
}

pub(crate) fn ms(v: Option<i64>) -> Option<u64> {
    v.map(|x| x.max(0) as u64)
}

pub(crate) fn opt_i64(v: Option<u64>) -> Option<i64> {
    v.map(|x| x.min(i64::MAX as u64) as i64)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

// ---------------------------------------------------------------- statistics

/// What one stored workflow (one version of a file) has run, as the store
/// reads it from `v_workflow_stats`, `v_active_executions` and the attempts.
#[derive(Debug, Clone, Default)]
pub struct WorkflowStatsRow {
    pub workflow_id: String,
    pub name: String,
    pub total: u64,
    pub successful: u64,
    pub failed: u64,
    /// Runs not finished yet (`v_active_executions`).
    pub active: u64,
    pub last_run_at: Option<u64>,
    pub by_state: BTreeMap<String, u64>,
    /// Durations of the completed runs (ms).
    pub durations: Vec<u64>,
    /// Summed over every attempt (retries and superseded ones too: they were paid for).
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
}

/// What the runs of one workflow name (all its stored versions) came to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStats {
    pub name: String,
    /// The stored versions counted, newest run first.
    pub workflow_ids: Vec<String>,
    pub runs: u64,
    /// Runs by state (only states that occur).
    pub by_state: BTreeMap<String, u64>,
    /// Runs not finished yet.
    pub active: u64,
    /// Percent of finished runs (completed or failed) that completed, to 0.1;
    /// None before any run finished.
    pub success_rate: Option<f64>,
    /// Nearest-rank percentiles of the completed runs' durations (ms).
    pub p50_duration_ms: Option<u64>,
    pub p95_duration_ms: Option<u64>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub last_run_at: Option<u64>,
}

/// Fold per-version rows into one entry per workflow name, names in order.
pub fn fold_stats(rows: Vec<WorkflowStatsRow>) -> Vec<WorkflowStats> {
    let mut by_name: BTreeMap<String, Vec<WorkflowStatsRow>> = BTreeMap::new();
    for r in rows {
        by_name.entry(r.name.clone()).or_default().push(r);
    }
    by_name
        .into_iter()
        .map(|(name, mut rows)| {
            rows.sort_by_key(|r| std::cmp::Reverse(r.last_run_at));
            let mut durations: Vec<u64> = Vec::new();
            let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
            for r in &rows {
                durations.extend(&r.durations);
                for (s, n) in &r.by_state {
                    *by_state.entry(s.clone()).or_default() += n;
                }
            }
            durations.sort_unstable();
            let sum = |f: fn(&WorkflowStatsRow) -> u64| rows.iter().map(f).sum::<u64>();
            let (successful, failed) = (sum(|r| r.successful), sum(|r| r.failed));
            WorkflowStats {
                success_rate: (successful + failed > 0).then(|| {
                    (1000.0 * successful as f64 / (successful + failed) as f64).round() / 10.0
                }),
                p50_duration_ms: percentile(&durations, 50),
                p95_duration_ms: percentile(&durations, 95),
                runs: sum(|r| r.total),
                active: sum(|r| r.active),
                tokens_in: sum(|r| r.tokens_in),
                tokens_out: sum(|r| r.tokens_out),
                cost_usd: rows.iter().map(|r| r.cost_usd).sum(),
                last_run_at: rows.iter().filter_map(|r| r.last_run_at).max(),
                workflow_ids: rows.into_iter().map(|r| r.workflow_id).collect(),
                by_state,
                name,
            }
        })
        .collect()
}

/// The nearest-rank `p`th percentile of sorted values.
pub fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}
