//! Every SQLite query, as blocking functions over a connection. `SqliteStore`
//! runs reads on its reader pool and writes on its writer thread.

use crate::store::journal::{self, JournalRow};
use crate::store::model::*;
use crate::store::owner::{Claim, Claimed, Control, Lease, Owner, orphan_reason, owner_alive};
use anyhow::{Result, anyhow};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

// ---------------------------------------------------------------- workflows

/// Store a valid workflow (its steps and dependencies too). An identical source
/// already stored is reused.
pub fn insert_workflow(conn: &mut Connection, w: &WorkflowRows) -> Result<WorkflowRecord> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing: Option<String> = tx
        .query_row(
            "SELECT id FROM workflows WHERE hash = ?1 AND source = ?2 AND archived = 0 ORDER BY created_at DESC LIMIT 1",
            params![w.hash, w.source],
            |r| r.get(0),
        )
        .optional()?;
    let id = match existing {
        Some(id) => id,
        None => {
            tx.execute(
                "INSERT INTO workflows (id, name, version, description, author, tags, source, format, filename,
                                        definition, hash, step_count, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
                params![
                    w.id,
                    w.name,
                    w.version,
                    w.description,
                    w.author,
                    w.tags,
                    w.source,
                    w.format,
                    w.filename,
                    w.definition,
                    w.hash,
                    w.steps.len() as i64,
                    to_i64(w.now)
                ],
            )?;
            let mut step = tx.prepare(
                "INSERT INTO workflow_steps (workflow_id, key, position, level, agent, prompt, optional, definition)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut dep = tx.prepare(
                "INSERT INTO workflow_dependencies (workflow_id, step_key, depends_on) VALUES (?1, ?2, ?3)",
            )?;
            for s in &w.steps {
                step.execute(params![
                    w.id,
                    s.key,
                    s.position,
                    s.level,
                    s.agent,
                    s.prompt,
                    s.optional,
                    s.definition
                ])?;
                for d in &s.dependencies {
                    dep.execute(params![w.id, s.key, d])?;
                }
            }
            drop((step, dep));
            w.id.clone()
        }
    };
    let rec = get_workflow(&tx, &id, true)?.ok_or_else(|| anyhow!("workflow {id} vanished"))?;
    tx.commit()?;
    Ok(rec)
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

/// The newest stored workflow with this file name (or, without one, this name).
pub fn find_workflow(
    conn: &Connection,
    filename: Option<&str>,
    name: Option<&str>,
) -> Result<Option<WorkflowRecord>> {
    Ok(conn
        .query_row(
            "SELECT * FROM workflows WHERE archived = 0
               AND (filename = ?1 OR (?1 IS NULL AND name = ?2))
             ORDER BY created_at DESC, rowid DESC LIMIT 1",
            params![filename, name],
            |r| workflow_row(r, true),
        )
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
    // Children of these runs (other workflows') outlive them, unlinked.
    tx.execute(
        "UPDATE workflow_executions SET parent_id = NULL WHERE parent_id IN
           (SELECT id FROM workflow_executions WHERE workflow_id = ?1)",
        [id],
    )?;
    tx.execute(
        "DELETE FROM workflow_executions WHERE workflow_id = ?1",
        [id],
    )?;
    tx.execute("DELETE FROM workflows WHERE id = ?1", [id])?;
    delete_orphan_outputs(&tx)?;
    tx.commit()?;
    Ok(DeleteOutcome::Deleted)
}

// ---------------------------------------------------------------- executions

const EXECUTION_SELECT: &str = "
    SELECT e.*, w.name AS workflow_name
    FROM workflow_executions e JOIN workflows w ON w.id = e.workflow_id";

fn execution_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    let inputs: String = r.get("inputs")?;
    Ok(ExecutionRecord {
        budget: ax_core::Budget {
            usd: r.get("budget_usd")?,
            tokens: ms(r.get("budget_tokens")?),
        },
        cache: r.get("cache")?,
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
        owner_started: r.get("owner_started")?,
        owner_boot: r.get("owner_boot")?,
        lease_token: r.get("lease_token")?,
        lease_expires_at: ms(r.get("lease_expires_at")?),
        queued_at: ms(r.get("queued_at")?),
        control: r.get("control")?,
        progress: Progress {
            total: r.get::<_, i64>("total_steps")? as u64,
            completed: r.get::<_, i64>("steps_completed")?.max(0) as u64,
            failed: r.get::<_, i64>("steps_failed")?.max(0) as u64,
            running: r.get::<_, i64>("steps_running")?.max(0) as u64,
            skipped: r.get::<_, i64>("steps_skipped")?.max(0) as u64,
        },
        parent: match r.get::<_, Option<String>>("parent_id")? {
            Some(id) => Some(ParentLink {
                id,
                step: r
                    .get::<_, Option<String>>("parent_step")?
                    .unwrap_or_default(),
                attempt: r.get::<_, Option<i64>>("parent_attempt")?.unwrap_or(0) as u32,
                item: r.get::<_, Option<i64>>("parent_item")?.map(|i| i as u32),
            }),
            None => None,
        },
    })
}

/// Create an execution with every step pending and its initial checkpoint;
/// with `claim`, owned by that process, and with `then`, that batch committed
/// too: all in one transaction.
pub fn insert_execution(
    conn: &mut Connection,
    e: &NewExecution,
    claim_for: Option<(&Owner, u64)>,
    then: Option<Batch>,
) -> Result<(Option<Lease>, Option<i64>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO workflow_executions (id, workflow_id, state, inputs, seed, total_steps, created_at, updated_at, queued_at,
                                          parent_id, parent_step, parent_attempt, parent_item,
                                          budget_usd, budget_tokens, cache)
         VALUES (?1, ?2, 'idle', ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            e.id,
            e.workflow_id,
            e.inputs,
            (e.seed & (i64::MAX as u64)) as i64,
            e.keys.len() as i64,
            to_i64(e.now),
            e.queued.then_some(to_i64(e.now)),
            e.parent.as_ref().map(|p| &p.id),
            e.parent.as_ref().map(|p| &p.step),
            e.parent.as_ref().map(|p| i64::from(p.attempt)),
            e.parent.as_ref().and_then(|p| p.item).map(i64::from),
            e.budget.usd,
            e.budget.tokens.map(to_i64),
            e.cache
        ],
    )?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO execution_steps (execution_id, step_key, position, state, updated_at) VALUES (?1, ?2, ?3, 'pending', ?4)",
        )?;
        for (i, k) in e.keys.iter().enumerate() {
            stmt.execute(params![e.id, k, i as i64, to_i64(e.now)])?;
        }
    }
    tx.execute(
        "INSERT INTO workflow_checkpoints (execution_id, kind, visible, data, completed_steps, created_at)
         VALUES (?1, 'full', 0, ?2, 0, ?3)",
        params![e.id, e.initial.to_json(), to_i64(e.now)],
    )?;
    let lease = match claim_for {
        Some((me, lease_ms)) => Some(grant(&tx, &e.id, me, e.now, lease_ms, None)?),
        None => None,
    };
    let checkpoint = match then {
        Some(mut b) => {
            if lease.is_some() {
                b.lease = lease.clone();
            }
            commit_in(&tx, &b)?
        }
        None => None,
    };
    tx.commit()?;
    Ok((lease, checkpoint))
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
pub fn list_executions(conn: &Connection, f: &ExecutionFilter) -> Result<Vec<ExecutionRecord>> {
    let mut stmt = conn.prepare(&format!(
        "{EXECUTION_SELECT}
         WHERE (?1 IS NULL OR e.state = ?1) AND (?2 IS NULL OR e.workflow_id = ?2)
           AND (?4 IS NULL OR e.parent_id = ?4)
         ORDER BY e.created_at DESC, e.id DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        params![f.state, f.workflow_id, f.limit, f.parent_id],
        execution_row,
    )?;
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

/// The steps of an execution in declaration order, with their latest attempt's
/// provider data and tokens summed over all attempts.
pub fn execution_steps(conn: &Connection, id: &str, with_output: bool) -> Result<Vec<StepRecord>> {
    steps_of(conn, id, with_output, None)
}

/// One step of an execution, as [`execution_steps`] shows it (without its
/// output): one indexed lookup, whatever the number of steps.
pub fn execution_step(conn: &Connection, id: &str, key: &str) -> Result<Option<StepRecord>> {
    Ok(steps_of(conn, id, false, Some(key))?.pop())
}

/// The steps of an execution, or only the one keyed `only`.
fn steps_of(
    conn: &Connection,
    id: &str,
    with_output: bool,
    only: Option<&str>,
) -> Result<Vec<StepRecord>> {
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    {
        let mut stmt = conn.prepare_cached(if only.is_some() {
            "SELECT d.step_key, d.depends_on FROM workflow_dependencies d
               JOIN workflow_executions e ON e.workflow_id = d.workflow_id
              WHERE e.id = ?1 AND d.step_key = ?2"
        } else {
            "SELECT d.step_key, d.depends_on FROM workflow_dependencies d
               JOIN workflow_executions e ON e.workflow_id = d.workflow_id WHERE e.id = ?1"
        })?;
        let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(String, String)> {
            Ok((r.get(0)?, r.get(1)?))
        };
        let rows: Vec<(String, String)> = match only {
            Some(key) => stmt
                .query_map(params![id, key], read)?
                .collect::<rusqlite::Result<_>>()?,
            None => stmt
                .query_map([id], read)?
                .collect::<rusqlite::Result<_>>()?,
        };
        for (k, d) in rows {
            deps.entry(k).or_default().push(d);
        }
    }
    let filter = if only.is_some() {
        "s.execution_id = ?1 AND s.step_key = ?3"
    } else {
        "s.execution_id = ?1"
    };
    let mut stmt = conn.prepare_cached(&format!(
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
                CASE WHEN ?2 THEN (SELECT o.text FROM step_outputs o WHERE o.hash = s.output_hash) END AS output,
                s.request, s.items_done, s.items_total, ws.definition
         FROM execution_steps s
         JOIN workflow_executions e ON e.id = s.execution_id
         JOIN workflow_steps ws ON ws.workflow_id = e.workflow_id AND ws.key = s.step_key
         WHERE {filter} ORDER BY s.position"
    ))?;
    let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<StepRecord> {
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
            request: r.get("request")?,
            settings: step_settings(&r.get::<_, String>("definition")?),
            items: match (
                r.get::<_, Option<i64>>("items_done")?,
                r.get::<_, Option<i64>>("items_total")?,
            ) {
                (Some(done), Some(total)) => Some(ItemProgress {
                    completed: done.max(0) as u32,
                    total: total.max(0) as u32,
                }),
                _ => None,
            },
            key,
        })
    };
    let mut out: Vec<StepRecord> = match only {
        Some(key) => stmt
            .query_map(params![id, with_output, key], row)?
            .collect::<rusqlite::Result<_>>()?,
        None => stmt
            .query_map(params![id, with_output], row)?
            .collect::<rusqlite::Result<_>>()?,
    };
    for s in &mut out {
        if let Some(d) = deps.remove(&s.key) {
            s.dependencies = d;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- commits

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
    if b.lease.is_some() {
        let (owner, token): (Option<String>, i64) = tx
            .query_row(
                "SELECT owner, lease_token FROM workflow_executions WHERE id = ?1",
                [&b.execution_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| anyhow!("no execution {}", b.execution_id))?;
        b.fence(owner.as_deref(), token)?;
    }
    let token = b.token();
    let now = to_i64(b.now);
    if !b.rewind.is_empty() {
        let mut stmt = tx.prepare_cached(
            "UPDATE workflow_step_executions SET superseded = 1
              WHERE execution_id = ?1 AND step_key = ?2 AND attempt > ?3",
        )?;
        for (key, kept) in &b.rewind {
            stmt.execute(params![b.execution_id, key, kept])?;
        }
    }
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
            "INSERT INTO workflow_step_executions (execution_id, step_key, attempt, state, prompt, started_at, updated_at, lease_token, item)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7, ?8)",
        )?;
        for s in &b.starts {
            stmt.execute(params![
                b.execution_id,
                s.key,
                s.attempt,
                s.prompt,
                to_i64(s.at),
                now,
                token,
                s.item
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
                    output_hash = ?8, started_at = ?9, finished_at = ?10, updated_at = ?11,
                    request = ?12, items_done = ?13, items_total = ?14
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
                now,
                s.request,
                s.items.map(|(done, _)| done),
                s.items.map(|(_, total)| total)
            ])?;
        }
    }
    if let Some(u) = &b.execution {
        tx.prepare_cached(
            "UPDATE workflow_executions SET state = ?2, reason = ?3, started_at = COALESCE(started_at, ?4),
                    finished_at = ?5, updated_at = ?6, queued_at = CASE WHEN ?7 THEN NULL ELSE queued_at END,
                    wake_at = ?8
              WHERE id = ?1",
        )?
        .execute(params![
            b.execution_id,
            u.state.as_str(),
            u.reason,
            opt_i64(u.started_at),
            opt_i64(u.finished_at),
            now,
            b.settles(),
            opt_i64(u.wake_at)
        ])?;
    }
    let mut checkpoint_id = None;
    if let Some((cp, visible, completed)) = &b.checkpoint {
        tx.prepare_cached(
            "INSERT INTO workflow_checkpoints (execution_id, kind, visible, data, completed_steps, created_at, lease_token)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            b.execution_id,
            cp.kind(),
            visible,
            cp.to_json()?,
            to_i64(*completed),
            now,
            token
        ])?;
        checkpoint_id = Some(tx.last_insert_rowid());
    }
    if !b.events.is_empty() {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO workflow_events (execution_id, at, type, step_key, state, attempt, message, data, lease_token)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for e in &b.events {
            stmt.execute(params![
                b.execution_id,
                to_i64(e.at),
                e.kind,
                e.step,
                e.state,
                e.attempt,
                e.message,
                Batch::event_data(e, checkpoint_id).map(|d| d.to_string()),
                token
            ])?;
        }
    }
    Ok(checkpoint_id)
}

// ---------------------------------------------------------------- ownership and control

/// Give `me` a new lease on `id` (the next fencing token), recorded in the
/// lease history. Pending control requests were meant for an older lease:
/// they are dropped.
fn grant(
    tx: &Connection,
    id: &str,
    me: &Owner,
    now: u64,
    lease_ms: u64,
    previous: Option<&str>,
) -> Result<Lease> {
    let token: i64 = tx.query_row(
        "UPDATE workflow_executions
            SET owner = ?2, owner_host = ?3, owner_pid = ?4, owner_started = ?5, owner_boot = ?6,
                heartbeat_at = ?7, lease_expires_at = ?8, lease_token = lease_token + 1,
                control = NULL, control_at = NULL, control_token = NULL
          WHERE id = ?1 RETURNING lease_token",
        params![
            id,
            me.id,
            me.host,
            me.pid,
            me.started.map(|s| s as i64),
            me.boot,
            to_i64(now),
            to_i64(now.saturating_add(lease_ms))
        ],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO execution_leases (execution_id, token, owner, claimed_at, previous_owner) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, token, me.id, to_i64(now), previous],
    )?;
    Ok(Lease {
        execution_id: id.to_owned(),
        owner: me.id.clone(),
        token,
    })
}

/// Take the lease unless a live process holds it. With `drive`, the
/// execution also wants a driver from now on (a worker resumes it if this
/// process dies).
pub fn claim(
    conn: &mut Connection,
    id: &str,
    me: &Owner,
    now: u64,
    lease_ms: u64,
    drive: bool,
) -> Result<Claim> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let e = get_execution(&tx, id)?.ok_or_else(|| anyhow!("no execution {id}"))?;
    if let Some(owner) = &e.owner
        && owner != &me.id
        && owner_alive(&e, me, now, true)
    {
        return Ok(Claim::Held {
            owner: owner.clone(),
        });
    }
    let previous = e.owner.filter(|o| o != &me.id);
    let lease = grant(&tx, id, me, now, lease_ms, previous.as_deref())?;
    if drive {
        tx.execute(
            "UPDATE workflow_executions SET queued_at = COALESCE(queued_at, ?2) WHERE id = ?1",
            params![id, to_i64(now)],
        )?;
    }
    tx.commit()?;
    Ok(Claim::Granted { lease, previous })
}

/// Claim up to `limit` executions that want a driver and have none alive:
/// new ones (queued, never owned or handed back), and with `orphans` the
/// runs of processes that died or lost their lease.
pub fn claim_work(
    conn: &mut Connection,
    me: &Owner,
    limit: usize,
    now: u64,
    lease_ms: u64,
    orphans: bool,
) -> Result<Vec<Claimed>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let candidates: Vec<ExecutionRecord> = {
        // Owners on this machine are checked by pid below, whatever their lease.
        let mut stmt = tx.prepare_cached(&format!(
            "{EXECUTION_SELECT} WHERE e.queued_at IS NOT NULL
               AND (e.owner IS NULL
                    OR (?1 AND e.owner <> ?2 AND (e.lease_expires_at < ?3 OR e.owner_boot = ?4)))
             ORDER BY e.queued_at, e.id LIMIT 10000"
        ))?;
        let rows = stmt.query_map(params![orphans, me.id, to_i64(now), me.boot], execution_row)?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut out = Vec::new();
    for e in candidates {
        if out.len() >= limit {
            break;
        }
        let orphan = e.owner.is_some() || e.state == "interrupted";
        if orphan && !orphans {
            continue;
        }
        if e.owner.is_some() && owner_alive(&e, me, now, true) {
            continue;
        }
        let previous = e.owner.clone();
        let lease = grant(&tx, &e.id, me, now, lease_ms, previous.as_deref())?;
        out.push(Claimed {
            lease,
            state: e.state,
            previous,
        });
    }
    tx.commit()?;
    Ok(out)
}

/// Push the expiry of the leases `me` holds; returns the executions whose
/// lease it still holds (the others were taken over).
pub fn renew(
    conn: &Connection,
    me: &Owner,
    held: &[(String, i64)],
    now: u64,
    lease_ms: u64,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE workflow_executions SET heartbeat_at = ?3, lease_expires_at = ?4
          WHERE id = ?1 AND owner = ?2 AND lease_token = ?5",
    )?;
    let mut kept = Vec::with_capacity(held.len());
    let until = to_i64(now.saturating_add(lease_ms));
    for (id, token) in held {
        if stmt.execute(params![id, me.id, to_i64(now), until, token])? == 1 {
            kept.push(id.clone());
        }
    }
    Ok(kept)
}

/// Give a lease back (the token stays, so that it keeps growing).
pub fn release(conn: &Connection, lease: &Lease) -> Result<()> {
    conn.execute(
        "UPDATE workflow_executions SET owner = NULL, owner_host = NULL, owner_pid = NULL, owner_started = NULL,
                owner_boot = NULL, heartbeat_at = NULL, lease_expires_at = NULL
          WHERE id = ?1 AND owner = ?2 AND lease_token = ?3",
        params![lease.execution_id, lease.owner, lease.token],
    )?;
    Ok(())
}

// ---------------------------------------------------------------- response cache

/// A cached answer no older than `max_age_ms` (counted as a hit), if any.
pub fn cache_get(
    conn: &Connection,
    key: &str,
    now: u64,
    max_age_ms: Option<u64>,
) -> Result<Option<CachedAnswer>> {
    let oldest = max_age_ms.map_or(i64::MIN, |a| to_i64(now.saturating_sub(a)));
    let row = conn
        .query_row(
            "UPDATE response_cache SET hits = hits + 1, last_hit_at = ?3
              WHERE key = ?1 AND created_at >= ?2
              RETURNING key, output, provider, model, tokens_in, tokens_out, cost_usd, created_at",
            params![key, oldest, to_i64(now)],
            |r| {
                Ok(CachedAnswer {
                    key: r.get(0)?,
                    output: r.get(1)?,
                    provider: r.get(2)?,
                    model: r.get(3)?,
                    tokens_in: r.get::<_, i64>(4)?.max(0) as u64,
                    tokens_out: r.get::<_, i64>(5)?.max(0) as u64,
                    cost_usd: r.get(6)?,
                    created_at: r.get::<_, i64>(7)?.max(0) as u64,
                })
            },
        )
        .optional()?;
    Ok(row)
}

/// Keep an answer (a newer one replaces an older one under the same key).
pub fn cache_put(conn: &Connection, a: &CachedAnswer) -> Result<()> {
    conn.execute(
        "INSERT INTO response_cache (key, output, provider, model, tokens_in, tokens_out, cost_usd, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (key) DO UPDATE SET output = excluded.output, provider = excluded.provider,
             model = excluded.model, tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out,
             cost_usd = excluded.cost_usd, created_at = excluded.created_at",
        params![
            a.key,
            a.output,
            a.provider,
            a.model,
            to_i64(a.tokens_in),
            to_i64(a.tokens_out),
            a.cost_usd,
            to_i64(a.created_at)
        ],
    )?;
    Ok(())
}

pub fn cache_stats(conn: &Connection) -> Result<CacheStats> {
    Ok(conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(output AS BLOB))), 0), COALESCE(SUM(hits), 0),
                COALESCE(SUM(COALESCE(cost_usd, 0) * hits), 0), MIN(created_at), MAX(created_at)
           FROM response_cache",
        [],
        |r| {
            Ok(CacheStats {
                entries: r.get::<_, i64>(0)?.max(0) as u64,
                bytes: r.get::<_, i64>(1)?.max(0) as u64,
                hits: r.get::<_, i64>(2)?.max(0) as u64,
                saved_usd: r.get(3)?,
                oldest_at: ms(r.get(4)?),
                newest_at: ms(r.get(5)?),
            })
        },
    )?)
}

/// Remove cached answers made before `before` (all with None); how many.
pub fn cache_clear(conn: &Connection, before: Option<u64>) -> Result<u64> {
    let n = conn.execute(
        "DELETE FROM response_cache WHERE ?1 IS NULL OR created_at < ?1",
        params![before.map(to_i64)],
    )?;
    Ok(n as u64)
}

/// Give the execution its own budget (each limit set replaces the file's).
pub fn set_budget(conn: &Connection, id: &str, b: ax_core::Budget, now: u64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE workflow_executions SET budget_usd = COALESCE(?2, budget_usd),
                budget_tokens = COALESCE(?3, budget_tokens), updated_at = ?4 WHERE id = ?1",
        params![id, b.usd, b.tokens.map(to_i64), to_i64(now)],
    )?;
    Ok(n > 0)
}

/// Whether the execution wants a driver.
pub fn set_queued(conn: &Connection, id: &str, queued: bool, now: u64) -> Result<()> {
    conn.execute(
        "UPDATE workflow_executions SET queued_at = CASE WHEN ?2 THEN COALESCE(queued_at, ?3) END WHERE id = ?1",
        params![id, queued, to_i64(now)],
    )?;
    Ok(())
}

/// Leave a request for the execution's current lease; returns that lease's
/// token (None: no such execution).
pub fn request_control(conn: &Connection, id: &str, c: Control, now: u64) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "UPDATE workflow_executions SET control = ?2, control_at = ?3, control_token = lease_token
              WHERE id = ?1 RETURNING lease_token",
            params![id, c.as_str(), to_i64(now)],
            |r| r.get(0),
        )
        .optional()?)
}

/// Take the requests meant for the leases `me` holds.
pub fn take_controls(conn: &mut Connection, me: &Owner) -> Result<Vec<(String, Control)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let pending: Vec<(String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, control FROM workflow_executions
              WHERE owner = ?1 AND control IS NOT NULL AND control_token = lease_token",
        )?;
        stmt.query_map([&me.id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    for (id, _) in &pending {
        tx.execute(
            "UPDATE workflow_executions SET control = NULL, control_at = NULL, control_token = NULL WHERE id = ?1",
            [id],
        )?;
    }
    tx.commit()?;
    Ok(pending
        .into_iter()
        .filter_map(|(id, c)| Control::parse(&c).map(|c| (id, c)))
        .collect())
}

/// Withdraw a request nobody took (only the one made at `at`).
pub fn withdraw_control(conn: &Connection, id: &str, at: u64) -> Result<()> {
    conn.execute(
        "UPDATE workflow_executions SET control = NULL, control_at = NULL, control_token = NULL
          WHERE id = ?1 AND control_at = ?2",
        params![id, to_i64(at)],
    )?;
    Ok(())
}

/// Mark executions left running by processes that are gone as interrupted
/// (with an event saying why). Their lease is taken away (the token grows:
/// an owner that was only suspended cannot write afterwards); they still want
/// a driver, so a worker resumes them.
pub fn interrupt_orphans(conn: &mut Connection, me: &Owner, now: u64) -> Result<Vec<String>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let orphans: Vec<ExecutionRecord> = {
        let mut stmt = tx.prepare(&format!(
            "{EXECUTION_SELECT} WHERE e.state IN ('running', 'validating')"
        ))?;
        let rows = stmt.query_map([], execution_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .filter(|e| !owner_alive(e, me, now, true))
            .collect()
    };
    let mut ids = Vec::with_capacity(orphans.len());
    for e in orphans {
        let why = orphan_reason(&e, now);
        tx.execute(
            "UPDATE workflow_executions SET state = 'interrupted', reason = ?2, updated_at = ?3,
                    owner = NULL, owner_host = NULL, owner_pid = NULL, owner_started = NULL, owner_boot = NULL,
                    heartbeat_at = NULL, lease_expires_at = NULL, lease_token = lease_token + 1,
                    queued_at = COALESCE(queued_at, ?3)
              WHERE id = ?1",
            params![e.id, why, to_i64(now)],
        )?;
        tx.execute(
            "INSERT INTO workflow_events (execution_id, at, type, state, message) VALUES (?1, ?2, 'execution', 'interrupted', ?3)",
            params![e.id, to_i64(now), why],
        )?;
        ids.push(e.id);
    }
    tx.commit()?;
    Ok(ids)
}

/// Every claim of an execution, oldest first.
pub fn leases(conn: &Connection, id: &str) -> Result<Vec<LeaseRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT token, owner, claimed_at, previous_owner FROM execution_leases WHERE execution_id = ?1 ORDER BY token",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok(LeaseRecord {
            token: r.get(0)?,
            owner: r.get(1)?,
            claimed_at: r.get::<_, i64>(2)?.max(0) as u64,
            previous_owner: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// ---------------------------------------------------------------- checkpoints

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
            return Err(journal::no_base(id));
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

/// Fold the journal into one checkpoint: the latest state, or the state at row `until`.
pub fn folded_checkpoint(
    conn: &Connection,
    id: &str,
    until: Option<i64>,
) -> Result<ax_core::checkpoint::Checkpoint> {
    journal::fold_all(id, &journal(conn, id, until, true)?)
}

/// A folded checkpoint and the outputs it refers to.
pub fn checkpoint_state(
    conn: &Connection,
    id: &str,
    until: Option<i64>,
) -> Result<CheckpointState> {
    let checkpoint = folded_checkpoint(conn, id, until)?;
    let outputs = outputs(conn, &checkpoint.output_hashes())?;
    Ok(CheckpointState {
        checkpoint,
        outputs,
    })
}

/// Restore points of an execution, newest first (one pass over the journal).
pub fn list_checkpoints(conn: &Connection, id: &str) -> Result<Vec<CheckpointRecord>> {
    journal::restore_points(id, &journal(conn, id, None, false)?)
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

/// Keep the newest `keep` restore points per execution; with `older_than`, also
/// drop restore points older than that (each execution keeps its newest one), and
/// with `delete_finished`, delete finished executions older than that. Then
/// remove unreferenced outputs and give the space back to the file system.
pub fn prune(conn: &mut Connection, o: &PruneOptions) -> Result<PruneReport> {
    let keep = o.keep.max(1);
    let mut report = PruneReport {
        bytes_before: file_bytes(conn)?,
        ..PruneReport::default()
    };
    let cutoff = o.older_than.map(|age| to_i64(o.now.saturating_sub(age)));
    if let (Some(cutoff), true) = (cutoff, o.delete_finished) {
        // Children of the runs deleted outlive them, unlinked.
        conn.execute(
            "UPDATE workflow_executions SET parent_id = NULL WHERE parent_id IN
               (SELECT id FROM workflow_executions WHERE state IN ('completed', 'failed', 'cancelled')
                  AND COALESCE(finished_at, updated_at) < ?1)",
            [cutoff],
        )?;
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
                    // forEach steps: the list and each item's output.
                    if let Some(h) = s.pointer("/items/list/hash").and_then(Value::as_str) {
                        referenced.insert(h.to_owned());
                    }
                    if let Some(items) = s.pointer("/items/items").and_then(Value::as_object) {
                        for item in items.values() {
                            if let Some(h) = item.pointer("/output/hash").and_then(Value::as_str) {
                                referenced.insert(h.to_owned());
                            }
                        }
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

/// A consistency check of the file: `PRAGMA integrity_check` and
/// `foreign_key_check`; "ok" when sound, else what is wrong.
pub fn check(conn: &Connection) -> Result<String> {
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        return Ok(integrity);
    }
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let problems: Vec<String> = stmt
        .query_map([], |r| {
            Ok(format!(
                "a row of {} refers to a missing row of {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(2)?
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(if problems.is_empty() {
        "ok".to_owned()
    } else {
        problems.join("; ")
    })
}

/// Every attempt of an execution's steps, oldest first.
pub fn attempts(conn: &Connection, id: &str) -> Result<Vec<AttemptRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, step_key, attempt, state, provider, model, tokens_in, tokens_out, error_class, superseded, lease_token
           FROM workflow_step_executions WHERE execution_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok(AttemptRecord {
            id: r.get(0)?,
            step: r.get(1)?,
            attempt: r.get(2)?,
            state: r.get(3)?,
            provider: r.get(4)?,
            model: r.get(5)?,
            tokens_in: r.get::<_, i64>(6)?.max(0) as u64,
            tokens_out: r.get::<_, i64>(7)?.max(0) as u64,
            error_class: r.get(8)?,
            superseded: r.get(9)?,
            lease_token: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Checkpoint retention after a commit. Failures are logged: the next run of
/// it (or `prune`) does the same work.
pub fn maintain(conn: &mut Connection, id: &str, m: Maintenance) {
    let r = match m {
        Maintenance::Retain { keep } => retain_checkpoints(conn, id, keep).map(|_| ()),
        Maintenance::Hide { keep } => hide_old_checkpoints(conn, id, keep),
    };
    if let Err(e) = r {
        tracing::warn!(execution = %id, "checkpoint retention failed (retried later): {e:#}");
    }
}

/// Row counts and checkpoint bytes.
pub fn footprint(conn: &Connection) -> Result<Footprint> {
    Ok(conn.query_row(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM workflow_checkpoints),
                (SELECT COUNT(*) FROM workflow_checkpoints),
                (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM workflow_checkpoints),
                (SELECT COUNT(*) FROM workflow_step_executions),
                (SELECT COUNT(*) FROM workflow_events),
                (SELECT COUNT(*) FROM step_outputs),
                (SELECT COUNT(*) FROM workflow_executions),
                (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size())",
        [],
        |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            Ok(Footprint {
                checkpoint_rows_written: n(0)?,
                checkpoint_rows: n(1)?,
                checkpoint_bytes: n(2)?,
                attempts: n(3)?,
                events: n(4)?,
                outputs: n(5)?,
                executions: n(6)?,
                database_bytes: n(7)?,
            })
        },
    )?)
}

// ---------------------------------------------------------------- statistics

/// The stored workflows named `only` (or with that id), every one without it.
const STATS_SCOPE: &str =
    "(?1 IS NULL OR workflow_id IN (SELECT id FROM workflows WHERE name = ?1 OR id = ?1))";

/// What each stored workflow has run: `v_workflow_stats` and
/// `v_active_executions`, runs by state, completed runs' durations, and the
/// tokens and cost of every attempt.
pub fn workflow_stats(conn: &Connection, only: Option<&str>) -> Result<Vec<WorkflowStatsRow>> {
    let mut rows: BTreeMap<String, WorkflowStatsRow> = BTreeMap::new();
    let mut stmt = conn.prepare(&format!(
        "SELECT workflow_id, name, total_executions, successful_executions, failed_executions, last_run_at
           FROM v_workflow_stats WHERE {STATS_SCOPE}"
    ))?;
    for r in stmt.query_map([only], |r| {
        Ok(WorkflowStatsRow {
            workflow_id: r.get(0)?,
            name: r.get(1)?,
            total: r.get::<_, i64>(2)?.max(0) as u64,
            successful: r.get::<_, i64>(3)?.max(0) as u64,
            failed: r.get::<_, i64>(4)?.max(0) as u64,
            last_run_at: ms(r.get(5)?),
            ..WorkflowStatsRow::default()
        })
    })? {
        let r = r?;
        rows.insert(r.workflow_id.clone(), r);
    }
    let pairs = |sql: &str| -> Result<Vec<(String, i64)>> {
        let mut stmt = conn.prepare(&sql.replace("{STATS_SCOPE}", STATS_SCOPE))?;
        let out = stmt
            .query_map([only], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(out)
    };
    for (id, n) in pairs(
        "SELECT workflow_id, COUNT(*) FROM v_active_executions WHERE {STATS_SCOPE} GROUP BY workflow_id",
    )? {
        if let Some(row) = rows.get_mut(&id) {
            row.active = n.max(0) as u64;
        }
    }
    for (id, d) in pairs(
        "SELECT workflow_id, duration_ms FROM workflow_executions
          WHERE state = 'completed' AND duration_ms IS NOT NULL AND {STATS_SCOPE}",
    )? {
        if let Some(row) = rows.get_mut(&id) {
            row.durations.push(d.max(0) as u64);
        }
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT workflow_id, state, COUNT(*) FROM workflow_executions WHERE {STATS_SCOPE}
          GROUP BY workflow_id, state"
    ))?;
    for r in stmt.query_map([only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (id, state, n) = r?;
        if let Some(row) = rows.get_mut(&id) {
            row.by_state.insert(state, n.max(0) as u64);
        }
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT e.workflow_id, COALESCE(SUM(a.tokens_in), 0), COALESCE(SUM(a.tokens_out), 0),
                COALESCE(SUM(a.cost_usd), 0.0)
           FROM workflow_step_executions a JOIN workflow_executions e ON e.id = a.execution_id
          WHERE {} GROUP BY e.workflow_id",
        STATS_SCOPE.replace("workflow_id IN", "e.workflow_id IN")
    ))?;
    for r in stmt.query_map([only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, f64>(3)?,
        ))
    })? {
        let (id, tin, tout, cost) = r?;
        if let Some(row) = rows.get_mut(&id) {
            row.tokens_in = tin.max(0) as u64;
            row.tokens_out = tout.max(0) as u64;
            row.cost_usd = cost;
        }
    }
    Ok(rows.into_values().collect())
}
