//! Every query, as blocking functions over a connection. Callers run them through
//! `Store::read`/`Store::write`.

use anyhow::{Context as _, Result, anyhow, bail};
use ax_core::checkpoint::{Checkpoint, CheckpointDelta};
use ax_core::{ExecutionState, StepState};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

fn ms(v: Option<i64>) -> Option<u64> {
    v.map(|x| x.max(0) as u64)
}

fn opt_i64(v: Option<u64>) -> Option<i64> {
    v.map(|x| x.min(i64::MAX as u64) as i64)
}

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

pub struct NewWorkflow<'a> {
    pub id: String,
    pub source: &'a str,
    pub filename: Option<&'a str>,
    pub plan: &'a ax_core::Plan,
    pub format: ax_core::parse::Format,
    pub now: u64,
}

/// Store a valid workflow (its steps and dependencies too). An identical source
/// already stored is reused.
pub fn insert_workflow(conn: &mut Connection, w: NewWorkflow<'_>) -> Result<WorkflowRecord> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT id FROM workflows WHERE hash = ?1 AND source = ?2 AND archived = 0 ORDER BY created_at DESC LIMIT 1",
            params![w.plan.hash(), w.source],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return get_workflow(conn, &id, true)?.ok_or_else(|| anyhow!("workflow {id} vanished"));
    }
    let wf = &w.plan.workflow;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO workflows (id, name, version, description, author, tags, source, format, filename,
                                definition, hash, step_count, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
        params![
            w.id,
            wf.name,
            wf.version,
            wf.description,
            wf.author,
            serde_json::to_string(&wf.tags)?,
            w.source,
            match w.format {
                ax_core::parse::Format::Json => "json",
                ax_core::parse::Format::Yaml => "yaml",
            },
            w.filename,
            serde_json::to_string(wf)?,
            w.plan.hash(),
            wf.steps.len() as i64,
            w.now as i64
        ],
    )?;
    {
        let mut step = tx.prepare(
            "INSERT INTO workflow_steps (workflow_id, key, position, level, agent, prompt, optional, definition)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut dep = tx.prepare(
            "INSERT OR IGNORE INTO workflow_dependencies (workflow_id, step_key, depends_on) VALUES (?1, ?2, ?3)",
        )?;
        for (i, s) in wf.steps.iter().enumerate() {
            step.execute(params![
                w.id,
                s.key,
                i as i64,
                w.plan.graph.level_of(i) as i64,
                s.agent,
                s.prompt,
                s.optional,
                serde_json::to_string(s)?
            ])?;
            for d in &s.dependencies {
                dep.execute(params![w.id, s.key, d])?;
            }
        }
    }
    tx.commit()?;
    get_workflow(conn, &w.id, true)?.ok_or_else(|| anyhow!("workflow {} vanished", w.id))
}

fn workflow_row(r: &rusqlite::Row<'_>, with_source: bool) -> rusqlite::Result<WorkflowRecord> {
    Ok(WorkflowRecord {
        id: r.get("id")?,
        name: r.get("name")?,
        version: r.get("version")?,
        description: r.get("description")?,
        hash: r.get("hash")?,
        step_count: r.get::<_, i64>("step_count")? as u64,
        created_at: r.get::<_, i64>("created_at")? as u64,
        filename: r.get("filename")?,
        format: r.get("format")?,
        source: if with_source { r.get("source")? } else { None },
        total_executions: r.get::<_, i64>("total_executions")? as u64,
        successful_executions: r.get::<_, i64>("successful_executions")? as u64,
        failed_executions: r.get::<_, i64>("failed_executions")? as u64,
    })
}

pub fn get_workflow(
    conn: &Connection,
    id: &str,
    with_source: bool,
) -> Result<Option<WorkflowRecord>> {
    Ok(conn
        .query_row("SELECT * FROM workflows WHERE id = ?1", [id], |r| {
            workflow_row(r, with_source)
        })
        .optional()?)
}

pub fn list_workflows(conn: &Connection, limit: u32) -> Result<Vec<WorkflowRecord>> {
    let mut stmt = conn.prepare(
        "SELECT * FROM workflows WHERE archived = 0 ORDER BY created_at DESC, id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| workflow_row(r, false))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Delete a workflow and its finished executions. Refused while one is active.
pub fn delete_workflow(conn: &mut Connection, id: &str) -> Result<DeleteOutcome> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let exists: bool = tx
        .query_row("SELECT 1 FROM workflows WHERE id = ?1", [id], |_| Ok(true))
        .optional()?
        .unwrap_or(false);
    if !exists {
        return Ok(DeleteOutcome::NotFound);
    }
    let active: i64 = tx.query_row(
        "SELECT COUNT(*) FROM workflow_executions WHERE workflow_id = ?1
           AND state IN ('idle', 'validating', 'running', 'paused', 'interrupted')",
        [id],
        |r| r.get(0),
    )?;
    if active > 0 {
        return Ok(DeleteOutcome::Active(active as u64));
    }
    tx.execute(
        "DELETE FROM workflow_executions WHERE workflow_id = ?1",
        [id],
    )?;
    tx.execute("DELETE FROM workflows WHERE id = ?1", [id])?;
    delete_orphan_outputs(&tx)?;
    tx.commit()?;
    Ok(DeleteOutcome::Deleted)
}

pub enum DeleteOutcome {
    Deleted,
    NotFound,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    pub progress: Progress,
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

const EXECUTION_SELECT: &str = "
    SELECT e.*, w.name AS workflow_name
    FROM workflow_executions e JOIN workflows w ON w.id = e.workflow_id";

fn execution_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    let inputs: String = r.get("inputs")?;
    Ok(ExecutionRecord {
        id: r.get("id")?,
        workflow_id: r.get("workflow_id")?,
        workflow: r.get("workflow_name")?,
        state: r.get("state")?,
        reason: r.get("reason")?,
        created_at: r.get::<_, i64>("created_at")? as u64,
        started_at: ms(r.get("started_at")?),
        finished_at: ms(r.get("finished_at")?),
        duration_ms: ms(r.get("duration_ms")?),
        inputs: serde_json::from_str(&inputs).unwrap_or(Value::Null),
        seed: r.get::<_, i64>("seed")? as u64,
        owner: r.get("owner")?,
        owner_host: r.get("owner_host")?,
        owner_pid: r.get("owner_pid")?,
        heartbeat_at: ms(r.get("heartbeat_at")?),
        control: r.get("control")?,
        progress: Progress {
            total: r.get::<_, i64>("total_steps")? as u64,
            completed: r.get::<_, i64>("steps_completed")?.max(0) as u64,
            failed: r.get::<_, i64>("steps_failed")?.max(0) as u64,
            running: r.get::<_, i64>("steps_running")?.max(0) as u64,
            skipped: r.get::<_, i64>("steps_skipped")?.max(0) as u64,
        },
    })
}

pub struct NewExecution<'a> {
    pub id: String,
    pub workflow_id: &'a str,
    pub inputs: &'a BTreeMap<String, Value>,
    pub seed: u64,
    pub keys: Vec<&'a str>,
    pub initial: &'a Checkpoint,
    pub now: u64,
}

/// Create an execution with every step pending and its initial checkpoint.
pub fn insert_execution(conn: &mut Connection, e: NewExecution<'_>) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO workflow_executions (id, workflow_id, state, inputs, seed, total_steps, created_at, updated_at)
         VALUES (?1, ?2, 'idle', ?3, ?4, ?5, ?6, ?6)",
        params![
            e.id,
            e.workflow_id,
            serde_json::to_string(e.inputs)?,
            (e.seed & (i64::MAX as u64)) as i64,
            e.keys.len() as i64,
            e.now as i64
        ],
    )?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO execution_steps (execution_id, step_key, position, state, updated_at) VALUES (?1, ?2, ?3, 'pending', ?4)",
        )?;
        for (i, k) in e.keys.iter().enumerate() {
            stmt.execute(params![e.id, k, i as i64, e.now as i64])?;
        }
    }
    tx.execute(
        "INSERT INTO workflow_checkpoints (execution_id, kind, visible, data, completed_steps, created_at)
         VALUES (?1, 'full', 0, ?2, 0, ?3)",
        params![e.id, e.initial.to_json(), e.now as i64],
    )?;
    tx.commit()?;
    Ok(())
}

pub fn get_execution(conn: &Connection, id: &str) -> Result<Option<ExecutionRecord>> {
    Ok(conn
        .query_row(
            &format!("{EXECUTION_SELECT} WHERE e.id = ?1"),
            [id],
            execution_row,
        )
        .optional()?)
}

/// Newest first; `state` filters.
pub fn list_executions(
    conn: &Connection,
    state: Option<&str>,
    workflow: Option<&str>,
    limit: u32,
) -> Result<Vec<ExecutionRecord>> {
    let mut stmt = conn.prepare(&format!(
        "{EXECUTION_SELECT}
         WHERE (?1 IS NULL OR e.state = ?1) AND (?2 IS NULL OR e.workflow_id = ?2)
         ORDER BY e.created_at DESC, e.id DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![state, workflow, limit], execution_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Executions whose id starts with `prefix` (for short ids on the command line).
pub fn find_execution_ids(conn: &Connection, prefix: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT id FROM workflow_executions WHERE id LIKE ?1 || '%' ESCAPE '\\' LIMIT 5",
    )?;
    let escaped = prefix
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let rows = stmt.query_map([escaped], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
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
}

/// The steps of an execution in declaration order, with their latest attempt's
/// provider data and tokens summed over all attempts.
pub fn execution_steps(conn: &Connection, id: &str, with_output: bool) -> Result<Vec<StepRecord>> {
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT d.step_key, d.depends_on FROM workflow_dependencies d
               JOIN workflow_executions e ON e.workflow_id = d.workflow_id WHERE e.id = ?1",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (k, d) = row?;
            deps.entry(k).or_default().push(d);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT s.step_key, ws.agent, s.state, s.attempts, s.reason, s.error_class, s.error, s.output_hash,
                s.started_at, s.finished_at,
                (SELECT a.provider FROM workflow_step_executions a WHERE a.execution_id = s.execution_id
                   AND a.step_key = s.step_key AND a.superseded = 0 ORDER BY a.attempt DESC LIMIT 1) AS provider,
                (SELECT a.model FROM workflow_step_executions a WHERE a.execution_id = s.execution_id
                   AND a.step_key = s.step_key AND a.superseded = 0 ORDER BY a.attempt DESC LIMIT 1) AS model,
                (SELECT a.latency_ms FROM workflow_step_executions a WHERE a.execution_id = s.execution_id
                   AND a.step_key = s.step_key AND a.superseded = 0 ORDER BY a.attempt DESC LIMIT 1) AS latency_ms,
                (SELECT COALESCE(SUM(a.tokens_in), 0) FROM workflow_step_executions a
                   WHERE a.execution_id = s.execution_id AND a.step_key = s.step_key AND a.superseded = 0) AS tokens_in,
                (SELECT COALESCE(SUM(a.tokens_out), 0) FROM workflow_step_executions a
                   WHERE a.execution_id = s.execution_id AND a.step_key = s.step_key AND a.superseded = 0) AS tokens_out,
                (SELECT SUM(a.cost_usd) FROM workflow_step_executions a
                   WHERE a.execution_id = s.execution_id AND a.step_key = s.step_key AND a.superseded = 0) AS cost_usd,
                CASE WHEN ?2 THEN (SELECT o.text FROM step_outputs o WHERE o.hash = s.output_hash) END AS output
         FROM execution_steps s
         JOIN workflow_executions e ON e.id = s.execution_id
         JOIN workflow_steps ws ON ws.workflow_id = e.workflow_id AND ws.key = s.step_key
         WHERE s.execution_id = ?1 ORDER BY s.position",
    )?;
    let rows = stmt.query_map(params![id, with_output], |r| {
        let key: String = r.get(0)?;
        Ok(StepRecord {
            dependencies: Vec::new(),
            agent: r.get(1)?,
            state: r.get(2)?,
            attempts: r.get::<_, i64>(3)? as u64,
            reason: r.get(4)?,
            error_class: r.get(5)?,
            error: r.get(6)?,
            started_at: ms(r.get(8)?),
            finished_at: ms(r.get(9)?),
            provider: r.get(10)?,
            model: r.get(11)?,
            latency_ms: ms(r.get(12)?),
            tokens_in: r.get::<_, i64>(13)? as u64,
            tokens_out: r.get::<_, i64>(14)? as u64,
            cost_usd: r.get(15)?,
            output: r.get(16)?,
            key,
        })
    })?;
    let mut out: Vec<StepRecord> = rows.collect::<rusqlite::Result<_>>()?;
    for s in &mut out {
        if let Some(d) = deps.remove(&s.key) {
            s.dependencies = d;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- commits

/// A step attempt starting.
pub struct AttemptStart {
    pub key: String,
    pub attempt: u32,
    pub prompt: String,
    pub at: u64,
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
}

pub struct ExecutionUpdate {
    pub state: ExecutionState,
    pub reason: Option<String>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
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

/// Everything one engine step changes, committed atomically.
pub struct Batch {
    pub execution_id: String,
    pub now: u64,
    pub outputs: Vec<(String, Arc<str>)>,
    pub starts: Vec<AttemptStart>,
    pub ends: Vec<AttemptEnd>,
    pub steps: Vec<StepStateRow>,
    pub execution: Option<ExecutionUpdate>,
    pub events: Vec<NewEvent>,
    pub checkpoint: Option<(CheckpointWrite, bool, u64)>,
    /// The writer must still own the execution (a stale owner's commit is refused).
    pub owner: Option<String>,
}

/// Commit a batch in one transaction; returns the id of the checkpoint row written.
pub fn commit(conn: &mut Connection, b: &Batch) -> Result<Option<i64>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let id = commit_in(&tx, b)?;
    tx.commit()?;
    Ok(id)
}

/// The body of [`commit`], inside a transaction the caller manages (the group
/// committer runs many batches in one transaction, each in a savepoint).
pub fn commit_in(tx: &Connection, b: &Batch) -> Result<Option<i64>> {
    if let Some(owner) = &b.owner {
        let current: Option<String> = tx
            .query_row(
                "SELECT owner FROM workflow_executions WHERE id = ?1",
                [&b.execution_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        if current.as_deref() != Some(owner.as_str()) {
            bail!(
                "execution {} is now driven by another process; this process stops driving it",
                b.execution_id
            );
        }
    }
    let now = b.now as i64;
    if !b.outputs.is_empty() {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO step_outputs (hash, text, bytes, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (hash, text) in &b.outputs {
            stmt.execute(params![hash, &**text, text.len() as i64, now])?;
        }
    }
    if !b.starts.is_empty() {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO workflow_step_executions (execution_id, step_key, attempt, state, prompt, started_at, updated_at)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)",
        )?;
        for s in &b.starts {
            stmt.execute(params![
                b.execution_id,
                s.key,
                s.attempt,
                s.prompt,
                s.at as i64,
                now
            ])?;
        }
    }
    if !b.ends.is_empty() {
        let mut stmt = tx.prepare_cached(
            "UPDATE workflow_step_executions SET state = ?4, provider = COALESCE(?5, provider), model = COALESCE(?6, model),
                    tokens_in = ?7, tokens_out = ?8, cost_usd = ?9, latency_ms = ?10, output_hash = ?11,
                    error_class = ?12, error = ?13, finished_at = ?14, updated_at = ?15
              WHERE execution_id = ?1 AND step_key = ?2 AND attempt = ?3 AND superseded = 0 AND state = 'running'",
        )?;
        for e in &b.ends {
            stmt.execute(params![
                b.execution_id,
                e.key,
                e.attempt,
                e.state,
                e.provider,
                e.model,
                e.tokens_in as i64,
                e.tokens_out as i64,
                e.cost_usd,
                opt_i64(e.latency_ms),
                e.output_hash,
                e.error_class,
                e.error,
                e.at as i64,
                now
            ])?;
        }
    }
    if !b.steps.is_empty() {
        let mut stmt = tx.prepare_cached(
            "UPDATE execution_steps SET state = ?3, attempts = ?4, reason = ?5, error_class = ?6, error = ?7,
                    output_hash = ?8, started_at = ?9, finished_at = ?10, updated_at = ?11
              WHERE execution_id = ?1 AND step_key = ?2",
        )?;
        for s in &b.steps {
            stmt.execute(params![
                b.execution_id,
                s.key,
                s.state.as_str(),
                s.attempts,
                s.reason,
                s.error_class,
                s.error,
                s.output_hash,
                opt_i64(s.started_at),
                opt_i64(s.finished_at),
                now
            ])?;
        }
    }
    if let Some(u) = &b.execution {
        tx.prepare_cached(
            "UPDATE workflow_executions SET state = ?2, reason = ?3, started_at = COALESCE(started_at, ?4),
                    finished_at = ?5, updated_at = ?6 WHERE id = ?1",
        )?
        .execute(params![
            b.execution_id,
            u.state.as_str(),
            u.reason,
            opt_i64(u.started_at),
            opt_i64(u.finished_at),
            now
        ])?;
    }
    let mut checkpoint_id = None;
    if let Some((cp, visible, completed)) = &b.checkpoint {
        let (kind, data) = match cp {
            CheckpointWrite::Delta(d) => ("delta", serde_json::to_string(d)?),
            CheckpointWrite::Full(c) => ("full", c.to_json()),
        };
        tx.prepare_cached(
            "INSERT INTO workflow_checkpoints (execution_id, kind, visible, data, completed_steps, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![b.execution_id, kind, visible, data, *completed as i64, now])?;
        checkpoint_id = Some(tx.last_insert_rowid());
    }
    if !b.events.is_empty() {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO workflow_events (execution_id, at, type, step_key, state, attempt, message, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for e in &b.events {
            let mut data = e.data.clone();
            if e.kind == "checkpoint"
                && let Some(id) = checkpoint_id
            {
                data = Some(serde_json::json!({ "checkpointId": id.to_string() }));
            }
            stmt.execute(params![
                b.execution_id,
                e.at as i64,
                e.kind,
                e.step,
                e.state,
                e.attempt,
                e.message,
                data.map(|d| d.to_string())
            ])?;
        }
    }
    Ok(checkpoint_id)
}

// ---------------------------------------------------------------- ownership and control

/// Who drives an execution: this host, this process, a random token.
#[derive(Debug, Clone)]
pub struct Owner {
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl Owner {
    pub fn this_process() -> Owner {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "localhost".to_owned());
        let pid = std::process::id();
        let mut token = [0u8; 6];
        let _ = getrandom::fill(&mut token);
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        Owner {
            id: format!("{host}/{pid}/{token}"),
            host,
            pid,
        }
    }
}

/// Heartbeats older than this mean the owner is gone.
pub const HEARTBEAT_STALE_MS: u64 = 5_000;

/// Is the recorded owner of `e` alive? Same host: its process must exist and its
/// heartbeat be fresh. Other hosts: a fresh heartbeat.
pub fn owner_alive(e: &ExecutionRecord, me: &Owner, now: u64) -> bool {
    let Some(owner) = &e.owner else { return false };
    if owner == &me.id {
        return true;
    }
    let fresh = e
        .heartbeat_at
        .is_some_and(|h| now.saturating_sub(h) < HEARTBEAT_STALE_MS);
    if e.owner_host.as_deref() == Some(me.host.as_str()) {
        let pid_alive = e.owner_pid.is_some_and(|pid| {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
                || !std::path::Path::new("/proc/self").exists()
        });
        return pid_alive && fresh;
    }
    fresh
}

/// Take ownership if nobody alive holds it. Returns false if another live process owns it.
pub fn claim(conn: &mut Connection, id: &str, me: &Owner, now: u64) -> Result<bool> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let e = get_execution(&tx, id)?.ok_or_else(|| anyhow!("no execution {id}"))?;
    if owner_alive(&e, me, now) && e.owner.as_deref() != Some(me.id.as_str()) {
        return Ok(false);
    }
    tx.execute(
        "UPDATE workflow_executions SET owner = ?2, owner_host = ?3, owner_pid = ?4, heartbeat_at = ?5 WHERE id = ?1",
        params![id, me.id, me.host, me.pid, now as i64],
    )?;
    tx.commit()?;
    Ok(true)
}

/// Refresh the heartbeat; false if someone else took the execution over.
pub fn heartbeat(conn: &Connection, id: &str, me: &Owner, now: u64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE workflow_executions SET heartbeat_at = ?3 WHERE id = ?1 AND owner = ?2",
        params![id, me.id, now as i64],
    )?;
    Ok(n == 1)
}

pub fn release(conn: &Connection, id: &str, me: &Owner) -> Result<()> {
    conn.execute(
        "UPDATE workflow_executions SET owner = NULL, owner_host = NULL, owner_pid = NULL, heartbeat_at = NULL
          WHERE id = ?1 AND owner = ?2",
        params![id, me.id],
    )?;
    Ok(())
}

/// A control request from any process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    PauseNow,
    Resume,
    Cancel,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::PauseNow => "pause-now",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
        }
    }
    pub fn parse(s: &str) -> Option<Control> {
        Some(match s {
            "pause" => Control::Pause,
            "pause-now" => Control::PauseNow,
            "resume" => Control::Resume,
            "cancel" => Control::Cancel,
            _ => return None,
        })
    }
}

pub fn request_control(conn: &Connection, id: &str, c: Control, now: u64) -> Result<()> {
    conn.execute(
        "UPDATE workflow_executions SET control = ?2, control_at = ?3 WHERE id = ?1",
        params![id, c.as_str(), now as i64],
    )?;
    Ok(())
}

/// Read and clear a pending control request (owner only).
pub fn take_control(conn: &mut Connection, id: &str, me: &Owner) -> Result<Option<Control>> {
    // Cheap check first: this runs every poll interval.
    let pending: Option<String> = conn
        .query_row(
            "SELECT control FROM workflow_executions WHERE id = ?1 AND owner = ?2 AND control IS NOT NULL",
            params![id, me.id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(control) = pending else {
        return Ok(None);
    };
    conn.execute(
        "UPDATE workflow_executions SET control = NULL, control_at = NULL WHERE id = ?1 AND control = ?2",
        params![id, control],
    )?;
    Ok(Control::parse(&control))
}

/// Cheap check for a pending control request.
pub fn pending_control(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT control IS NOT NULL FROM workflow_executions WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(false))
}

/// Executions left running or paused by processes that are gone.
pub fn orphaned_executions(
    conn: &Connection,
    me: &Owner,
    now: u64,
) -> Result<Vec<ExecutionRecord>> {
    let mut stmt = conn.prepare(&format!(
        "{EXECUTION_SELECT} WHERE e.state IN ('running', 'validating')"
    ))?;
    let rows = stmt.query_map([], execution_row)?;
    let all: Vec<ExecutionRecord> = rows.collect::<rusqlite::Result<_>>()?;
    Ok(all
        .into_iter()
        .filter(|e| !owner_alive(e, me, now))
        .collect())
}

// ---------------------------------------------------------------- checkpoints

/// One row of the checkpoint journal.
struct JournalRow {
    id: i64,
    kind: String,
    visible: bool,
    data: String,
    created_at: u64,
}

impl JournalRow {
    fn is_full(&self) -> bool {
        self.kind == "full"
    }
}

/// The journal rows of an execution from its latest full snapshot at or before
/// `until` (all rows when `until` is None and `from_base` is false).
fn journal(
    conn: &Connection,
    id: &str,
    until: Option<i64>,
    from_base: bool,
) -> Result<Vec<JournalRow>> {
    let limit = until.unwrap_or(i64::MAX);
    let base = if from_base {
        let base: Option<i64> = conn
            .query_row(
                "SELECT MAX(id) FROM workflow_checkpoints WHERE execution_id = ?1 AND kind = 'full' AND id <= ?2",
                params![id, limit],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let Some(base) = base else {
            bail!("execution {id} has no base checkpoint (its history was pruned past this point)");
        };
        base
    } else {
        0
    };
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, visible, data, created_at FROM workflow_checkpoints
          WHERE execution_id = ?1 AND id >= ?2 AND id <= ?3 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![id, base, limit], |r| {
        Ok(JournalRow {
            id: r.get(0)?,
            kind: r.get(1)?,
            visible: r.get(2)?,
            data: r.get(3)?,
            created_at: r.get::<_, i64>(4)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Apply one journal row to the state folded so far.
fn fold(cp: &mut Option<Checkpoint>, row: &JournalRow) -> Result<()> {
    if row.is_full() {
        *cp = Some(
            Checkpoint::from_json(&row.data)
                .with_context(|| format!("checkpoint row {} is unreadable", row.id))?,
        );
        return Ok(());
    }
    let delta: CheckpointDelta = serde_json::from_str(&row.data)
        .with_context(|| format!("checkpoint row {} is unreadable", row.id))?;
    match cp.as_mut() {
        Some(c) => c.apply(&delta),
        None => bail!("checkpoint row {} has no base", row.id),
    }
    Ok(())
}

/// Fold the journal into one checkpoint: the latest state, or the state at row `until`.
pub fn folded_checkpoint(conn: &Connection, id: &str, until: Option<i64>) -> Result<Checkpoint> {
    let mut cp: Option<Checkpoint> = None;
    for row in journal(conn, id, until, true)? {
        fold(&mut cp, &row)?;
    }
    cp.ok_or_else(|| anyhow!("execution {id} has no checkpoint"))
}

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

/// Restore points of an execution, newest first (one pass over the journal).
pub fn list_checkpoints(conn: &Connection, id: &str) -> Result<Vec<CheckpointRecord>> {
    let mut out = Vec::new();
    let mut cp: Option<Checkpoint> = None;
    for row in journal(conn, id, None, false)? {
        fold(&mut cp, &row)?;
        if let (true, Some(c)) = (row.visible, &cp) {
            out.push(CheckpointRecord {
                id: row.id.to_string(),
                execution_id: id.to_owned(),
                created_at: row.created_at,
                state: c.header.state.as_str().to_owned(),
                completed_steps: c.completed_steps(),
            });
        }
    }
    out.reverse();
    Ok(out)
}

/// Which execution a checkpoint row belongs to (visible restore points only).
pub fn checkpoint_execution(conn: &Connection, checkpoint_id: i64) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT execution_id FROM workflow_checkpoints WHERE id = ?1 AND visible = 1",
            [checkpoint_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Output texts by hash.
pub fn outputs(conn: &Connection, hashes: &BTreeSet<String>) -> Result<BTreeMap<String, Arc<str>>> {
    let mut stmt = conn.prepare_cached("SELECT text FROM step_outputs WHERE hash = ?1")?;
    let mut out = BTreeMap::new();
    for h in hashes {
        if let Some(t) = stmt.query_row([h], |r| r.get::<_, String>(0)).optional()? {
            out.insert(h.clone(), Arc::from(t));
        }
    }
    Ok(out)
}

/// After a restore: attempts newer than the checkpoint become history.
pub fn supersede_attempts_after(tx: &Transaction<'_>, id: &str, cp: &Checkpoint) -> Result<()> {
    let mut stmt = tx.prepare(
        "UPDATE workflow_step_executions SET superseded = 1 WHERE execution_id = ?1 AND step_key = ?2 AND attempt > ?3",
    )?;
    let mut all = tx.prepare("SELECT step_key FROM execution_steps WHERE execution_id = ?1")?;
    let keys: Vec<String> = all
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for k in keys {
        // Attempts after the checkpoint are history; so is one that was in flight
        // at the checkpoint (its answer belongs to the rewound timeline).
        let kept = cp.steps.get(&k).map_or(0, |s| {
            if s.state == StepState::Running {
                s.attempt.saturating_sub(1)
            } else {
                s.attempt
            }
        });
        stmt.execute(params![id, k, kept])?;
    }
    Ok(())
}

/// Replace the journal of an execution before row `from` with one full snapshot
/// at `from` (used to keep only the newest restore points).
fn compact_before(tx: &Transaction<'_>, id: &str, from: i64) -> Result<()> {
    let folded = folded_checkpoint(tx, id, Some(from))?;
    tx.execute(
        "UPDATE workflow_checkpoints SET kind = 'full', data = ?2 WHERE id = ?1",
        params![from, folded.to_json()],
    )?;
    tx.execute(
        "DELETE FROM workflow_checkpoints WHERE execution_id = ?1 AND id < ?2",
        params![id, from],
    )?;
    Ok(())
}

/// Keep the newest `keep` restore points of an execution (and what they need).
pub fn retain_checkpoints(conn: &mut Connection, id: &str, keep: usize) -> Result<usize> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let visible: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT id FROM workflow_checkpoints WHERE execution_id = ?1 AND visible = 1 ORDER BY id")?;
        stmt.query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    if visible.len() <= keep.max(1) {
        return Ok(0);
    }
    let oldest_kept = visible[visible.len() - keep.max(1)];
    let before: i64 = tx.query_row(
        "SELECT COUNT(*) FROM workflow_checkpoints WHERE execution_id = ?1 AND id < ?2",
        params![id, oldest_kept],
        |r| r.get(0),
    )?;
    compact_before(&tx, id, oldest_kept)?;
    tx.commit()?;
    Ok(before as usize)
}

/// Hide restore points beyond the newest `keep` (a cheap update; the journal rows
/// stay until the next compaction).
pub fn hide_old_checkpoints(conn: &Connection, id: &str, keep: usize) -> Result<()> {
    conn.execute(
        "UPDATE workflow_checkpoints SET visible = 0
          WHERE execution_id = ?1 AND visible = 1 AND id < (
            SELECT id FROM workflow_checkpoints WHERE execution_id = ?1 AND visible = 1
             ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        params![id, keep.max(1) as i64 - 1],
    )?;
    Ok(())
}

/// (restore points, journal rows after the newest full snapshot) of an execution.
pub fn journal_counts(conn: &Connection, id: &str) -> Result<(usize, usize)> {
    let (visible, since): (i64, i64) = conn.query_row(
        "SELECT
           (SELECT COUNT(*) FROM workflow_checkpoints WHERE execution_id = ?1 AND visible = 1),
           (SELECT COUNT(*) FROM workflow_checkpoints WHERE execution_id = ?1 AND id >
              COALESCE((SELECT MAX(id) FROM workflow_checkpoints WHERE execution_id = ?1 AND kind = 'full'), 0))",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((visible as usize, since as usize))
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

/// Keep the newest `keep` restore points per execution; with `older_than`, also
/// drop restore points older than that (each execution keeps its newest one), and
/// with `delete_finished`, delete finished executions older than that. Then
/// remove unreferenced outputs and give the space back to the file system.
pub fn prune(
    conn: &mut Connection,
    keep: usize,
    older_than: Option<u64>,
    delete_finished: bool,
    now: u64,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        bytes_before: file_bytes(conn)?,
        ..PruneReport::default()
    };
    let cutoff = older_than.map(|age| now.saturating_sub(age) as i64);
    if let (Some(cutoff), true) = (cutoff, delete_finished) {
        report.executions_deleted = conn.execute(
            "DELETE FROM workflow_executions WHERE state IN ('completed', 'failed', 'cancelled')
               AND COALESCE(finished_at, updated_at) < ?1",
            [cutoff],
        )?;
    }
    let ids: Vec<String> = {
        let mut stmt = conn.prepare("SELECT id FROM workflow_executions")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    for id in ids {
        let removed = retain_checkpoints(conn, &id, keep)?;
        if let Some(cutoff) = cutoff {
            // The oldest restore point newer than the cutoff becomes the base.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let keep_from: Option<i64> = tx
                .query_row(
                    "SELECT COALESCE(
                        (SELECT MIN(id) FROM workflow_checkpoints WHERE execution_id = ?1 AND visible = 1 AND created_at >= ?2),
                        (SELECT MAX(id) FROM workflow_checkpoints WHERE execution_id = ?1 AND visible = 1))",
                    params![id, cutoff],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let mut n = 0;
            if let Some(from) = keep_from {
                n = tx.query_row(
                    "SELECT COUNT(*) FROM workflow_checkpoints WHERE execution_id = ?1 AND id < ?2",
                    params![id, from],
                    |r| r.get::<_, i64>(0),
                )? as usize;
                if n > 0 {
                    compact_before(&tx, &id, from)?;
                }
            }
            tx.commit()?;
            report.checkpoints_removed += n;
            if n > 0 || removed > 0 {
                report.executions_compacted += 1;
            }
        } else if removed > 0 {
            report.executions_compacted += 1;
        }
        report.checkpoints_removed += removed;
    }
    {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        report.outputs_removed = delete_orphan_outputs(&tx)?;
        tx.commit()?;
    }
    conn.execute_batch("PRAGMA incremental_vacuum;")?;
    let _: (i64, i64, i64) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    report.bytes_after = file_bytes(conn)?;
    Ok(report)
}

fn file_bytes(conn: &Connection) -> Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok((pages * size) as u64)
}

/// Outputs that no step, attempt or checkpoint refers to.
fn delete_orphan_outputs(tx: &Transaction<'_>) -> Result<usize> {
    // Hashes referenced by checkpoints live inside JSON: collect them.
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    {
        let mut stmt = tx.prepare("SELECT data FROM workflow_checkpoints")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for data in rows {
            let data = data?;
            if let Ok(v) = serde_json::from_str::<Value>(&data)
                && let Some(steps) = v.get("steps").and_then(Value::as_object)
            {
                for s in steps.values() {
                    if let Some(h) = s.pointer("/output/hash").and_then(Value::as_str) {
                        referenced.insert(h.to_owned());
                    }
                }
            }
        }
    }
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS keep_outputs (hash TEXT PRIMARY KEY); DELETE FROM keep_outputs;",
    )?;
    {
        let mut ins = tx.prepare("INSERT OR IGNORE INTO keep_outputs (hash) VALUES (?1)")?;
        for h in &referenced {
            ins.execute([h])?;
        }
    }
    let n = tx.execute(
        "DELETE FROM step_outputs WHERE hash NOT IN (SELECT hash FROM keep_outputs)
            AND hash NOT IN (SELECT output_hash FROM execution_steps WHERE output_hash IS NOT NULL)
            AND hash NOT IN (SELECT output_hash FROM workflow_step_executions WHERE output_hash IS NOT NULL)",
        [],
    )?;
    tx.execute_batch("DELETE FROM keep_outputs;")?;
    Ok(n)
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

pub fn events_after(
    conn: &Connection,
    id: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<EventRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, execution_id, at, type, step_key, state, attempt, message, data FROM workflow_events
          WHERE execution_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![id, after, limit], |r| {
        let data: Option<String> = r.get(8)?;
        Ok(EventRecord {
            id: r.get(0)?,
            execution_id: r.get(1)?,
            at: r.get::<_, i64>(2)? as u64,
            kind: r.get(3)?,
            step: r.get(4)?,
            state: r.get(5)?,
            attempt: r.get(6)?,
            message: r.get(7)?,
            data: data.and_then(|d| serde_json::from_str(&d).ok()),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Set an execution's state directly (for transitions outside a run, e.g. a
/// crashed run becoming interrupted), with an event.
pub fn set_execution_state(
    conn: &mut Connection,
    id: &str,
    state: ExecutionState,
    reason: Option<&str>,
    now: u64,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE workflow_executions SET state = ?2, reason = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, state.as_str(), reason, now as i64],
    )?;
    tx.execute(
        "INSERT INTO workflow_events (execution_id, at, type, state, message) VALUES (?1, ?2, 'execution', ?3, ?4)",
        params![id, now as i64, state.as_str(), reason],
    )?;
    tx.commit()?;
    Ok(())
}

/// Integrity check (`PRAGMA integrity_check`): "ok" when sound.
pub fn integrity_check(conn: &Connection) -> Result<String> {
    Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
}
