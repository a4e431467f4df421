//! Every PostgreSQL query but the group commit (`commit.rs`).

use super::commit;
use super::db::Db;
use super::db_err;
use crate::store::journal::{self, JournalRow};
use crate::store::model::*;
use crate::store::owner::{Claim, Claimed, Control, Lease, Owner, orphan_reason, owner_alive};
use anyhow::{Result, anyhow};
use deadpool_postgres::Object;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio_postgres::Row;

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

// ---------------------------------------------------------------- workflows

/// Store a valid workflow (its steps and dependencies too). An identical source
/// already stored is reused.
pub async fn insert_workflow(c: &mut Object, w: &WorkflowRows) -> Result<WorkflowRecord> {
    let tx = c.transaction().await.map_err(db_err)?;
    let db = Db::Tx(&tx);
    // Two processes storing the same text at once store it once.
    db.exec("SELECT pg_advisory_xact_lock(hashtext($1))", &[&w.hash])
        .await?;
    let existing = db
        .opt(
            "SELECT id FROM workflows WHERE hash = $1 AND source = $2 AND NOT archived
              ORDER BY created_at DESC LIMIT 1",
            &[&w.hash, &w.source],
        )
        .await?;
    let id: String = match existing {
        Some(row) => row.get(0),
        None => {
            let now = to_i64(w.now);
            db.exec(
                "INSERT INTO workflows (id, name, version, description, author, tags, source, format, filename,
                                        definition, hash, step_count, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10::text::jsonb, $11, $12, $13, $13)",
                &[
                    &w.id,
                    &w.name,
                    &w.version,
                    &w.description,
                    &w.author,
                    &w.tags,
                    &w.source,
                    &w.format,
                    &w.filename,
                    &w.definition,
                    &w.hash,
                    &(w.steps.len() as i32),
                    &now,
                ],
            )
            .await?;
            let keys: Vec<&str> = w.steps.iter().map(|s| s.key.as_str()).collect();
            let positions: Vec<i32> = w.steps.iter().map(|s| s.position as i32).collect();
            let levels: Vec<i32> = w.steps.iter().map(|s| s.level as i32).collect();
            let agents: Vec<&str> = w.steps.iter().map(|s| s.agent.as_str()).collect();
            let prompts: Vec<&str> = w.steps.iter().map(|s| s.prompt.as_str()).collect();
            let optional: Vec<bool> = w.steps.iter().map(|s| s.optional).collect();
            let defs: Vec<&str> = w.steps.iter().map(|s| s.definition.as_str()).collect();
            db.exec(
                "INSERT INTO workflow_steps (workflow_id, key, position, level, agent, prompt, optional, definition)
                 SELECT $1, k, p, l, a, pr, o, d::jsonb
                   FROM unnest($2::text[], $3::int4[], $4::int4[], $5::text[], $6::text[], $7::bool[], $8::text[])
                        AS t(k, p, l, a, pr, o, d)",
                &[&w.id, &keys, &positions, &levels, &agents, &prompts, &optional, &defs],
            )
            .await?;
            let mut dep_keys = Vec::new();
            let mut dep_on = Vec::new();
            let mut dep_pos = Vec::new();
            for s in &w.steps {
                for (i, d) in s.dependencies.iter().enumerate() {
                    dep_keys.push(s.key.as_str());
                    dep_on.push(d.as_str());
                    dep_pos.push(i as i32);
                }
            }
            if !dep_keys.is_empty() {
                db.exec(
                    "INSERT INTO workflow_dependencies (workflow_id, step_key, depends_on, position)
                     SELECT $1, k, d, p FROM unnest($2::text[], $3::text[], $4::int4[]) AS t(k, d, p)",
                    &[&w.id, &dep_keys, &dep_on, &dep_pos],
                )
                .await?;
            }
            w.id.clone()
        }
    };
    let rec = get_workflow_in(db, &id, true)
        .await?
        .ok_or_else(|| anyhow!("workflow {id} vanished"))?;
    tx.commit().await.map_err(db_err)?;
    Ok(rec)
}

fn workflow_select(with_source: bool) -> String {
    format!(
        "SELECT id, name, version, description, hash, step_count, created_at, filename, format,
                {} AS source, total_executions, successful_executions, failed_executions
           FROM workflows",
        if with_source { "source" } else { "NULL::text" }
    )
}

fn workflow_row(r: &Row) -> WorkflowRecord {
    WorkflowRecord {
        id: r.get("id"),
        name: r.get("name"),
        version: r.get("version"),
        description: r.get("description"),
        hash: r.get("hash"),
        step_count: r.get::<_, i32>("step_count").max(0) as u64,
        created_at: u(r.get("created_at")),
        filename: r.get("filename"),
        format: r.get("format"),
        source: r.get("source"),
        total_executions: u(r.get("total_executions")),
        successful_executions: u(r.get("successful_executions")),
        failed_executions: u(r.get("failed_executions")),
    }
}

async fn get_workflow_in(
    db: Db<'_, '_>,
    id: &str,
    with_source: bool,
) -> Result<Option<WorkflowRecord>> {
    let row = db
        .opt(
            &format!("{} WHERE id = $1", workflow_select(with_source)),
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(workflow_row))
}

pub async fn get_workflow(
    c: &Object,
    id: &str,
    with_source: bool,
) -> Result<Option<WorkflowRecord>> {
    get_workflow_in(Db::Conn(c), id, with_source).await
}

/// The newest stored workflow with this file name (or, without one, this name).
pub async fn find_workflow(
    c: &Object,
    filename: Option<&str>,
    name: Option<&str>,
) -> Result<Option<WorkflowRecord>> {
    let row = Db::Conn(c)
        .opt(
            &format!(
                "{} WHERE NOT archived AND (filename = $1 OR ($1::text IS NULL AND name = $2))
                 ORDER BY created_at DESC, id DESC LIMIT 1",
                workflow_select(true)
            ),
            &[&filename, &name],
        )
        .await?;
    Ok(row.as_ref().map(workflow_row))
}

pub async fn list_workflows(c: &Object, limit: u32) -> Result<Vec<WorkflowRecord>> {
    let rows = Db::Conn(c)
        .query(
            &format!(
                "{} WHERE NOT archived ORDER BY created_at DESC, id DESC LIMIT $1",
                workflow_select(false)
            ),
            &[&i64::from(limit)],
        )
        .await?;
    Ok(rows.iter().map(workflow_row).collect())
}

/// Delete a workflow and its finished executions. Refused while one is active.
pub async fn delete_workflow(c: &mut Object, id: &str) -> Result<DeleteOutcome> {
    let tx = c.transaction().await.map_err(db_err)?;
    let db = Db::Tx(&tx);
    if db
        .opt("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", &[&id])
        .await?
        .is_none()
    {
        return Ok(DeleteOutcome::NotFound);
    }
    let active: i64 = db
        .one(
            "SELECT count(*) FROM workflow_executions WHERE workflow_id = $1
               AND state IN ('idle', 'validating', 'running', 'paused', 'interrupted')",
            &[&id],
        )
        .await?
        .get(0);
    if active > 0 {
        return Ok(DeleteOutcome::Active(active as u64));
    }
    // Children of these runs (other workflows') outlive them, unlinked.
    db.exec(
        "UPDATE workflow_executions SET parent_id = NULL WHERE parent_id IN
           (SELECT id FROM workflow_executions WHERE workflow_id = $1)",
        &[&id],
    )
    .await?;
    db.exec(
        "DELETE FROM workflow_executions WHERE workflow_id = $1",
        &[&id],
    )
    .await?;
    db.exec("DELETE FROM workflows WHERE id = $1", &[&id])
        .await?;
    delete_orphan_outputs(db).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(DeleteOutcome::Deleted)
}

// ---------------------------------------------------------------- executions

const EXECUTION_SELECT: &str = "
    SELECT e.id, e.workflow_id, w.name AS workflow_name, e.state, e.reason, e.created_at, e.started_at,
           e.finished_at, e.duration_ms, e.inputs, e.seed, e.owner, e.owner_host, e.owner_pid,
           e.heartbeat_at, e.control, e.total_steps, e.steps_completed, e.steps_failed,
           e.steps_running, e.steps_skipped, e.owner_started, e.owner_boot, e.lease_token,
           e.lease_expires_at, e.queued_at, e.parent_id, e.parent_step, e.parent_attempt,
           e.parent_item, e.budget_usd, e.budget_tokens, e.cache
    FROM workflow_executions e JOIN workflows w ON w.id = e.workflow_id";

fn execution_row(r: &Row) -> ExecutionRecord {
    let count = |c: &str| r.get::<_, i32>(c).max(0) as u64;
    ExecutionRecord {
        budget: ax_core::Budget {
            usd: r.get("budget_usd"),
            tokens: ms(r.get("budget_tokens")),
        },
        cache: r.get("cache"),
        id: r.get("id"),
        workflow_id: r.get("workflow_id"),
        workflow: r.get("workflow_name"),
        state: r.get("state"),
        reason: r.get("reason"),
        created_at: u(r.get("created_at")),
        started_at: ms(r.get("started_at")),
        finished_at: ms(r.get("finished_at")),
        duration_ms: ms(r.get("duration_ms")),
        inputs: r.get::<_, Option<Value>>("inputs").unwrap_or(Value::Null),
        seed: u(r.get("seed")),
        owner: r.get("owner"),
        owner_host: r.get("owner_host"),
        owner_pid: r.get("owner_pid"),
        heartbeat_at: ms(r.get("heartbeat_at")),
        owner_started: r.get("owner_started"),
        owner_boot: r.get("owner_boot"),
        lease_token: r.get("lease_token"),
        lease_expires_at: ms(r.get("lease_expires_at")),
        queued_at: ms(r.get("queued_at")),
        control: r.get("control"),
        progress: Progress {
            total: count("total_steps"),
            completed: count("steps_completed"),
            failed: count("steps_failed"),
            running: count("steps_running"),
            skipped: count("steps_skipped"),
        },
        parent: r
            .get::<_, Option<String>>("parent_id")
            .map(|id| ParentLink {
                id,
                step: r
                    .get::<_, Option<String>>("parent_step")
                    .unwrap_or_default(),
                attempt: r
                    .get::<_, Option<i32>>("parent_attempt")
                    .unwrap_or(0)
                    .max(0) as u32,
                item: r
                    .get::<_, Option<i32>>("parent_item")
                    .map(|i| i.max(0) as u32),
            }),
    }
}

/// Create an execution with every step pending and its initial checkpoint;
/// with `claim`, owned by that process, and with `then`, that batch committed
/// too: all in one transaction.
pub async fn insert_execution(
    c: &mut Object,
    e: &NewExecution,
    claim_for: Option<(&Owner, u64)>,
    then: Option<Batch>,
) -> Result<(Option<Lease>, Option<i64>)> {
    let tx = c.transaction().await.map_err(db_err)?;
    let db = Db::Tx(&tx);
    let now = to_i64(e.now);
    db.exec(
        "INSERT INTO workflow_executions (id, workflow_id, state, inputs, seed, total_steps, created_at, updated_at, queued_at,
                                          parent_id, parent_step, parent_attempt, parent_item,
                                          budget_usd, budget_tokens, cache)
         VALUES ($1, $2, 'idle', $3::text::jsonb, $4, $5, $6, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            &e.id,
            &e.workflow_id,
            &e.inputs,
            &((e.seed & (i64::MAX as u64)) as i64),
            &(e.keys.len() as i32),
            &now,
            &e.queued.then_some(now),
            &e.parent.as_ref().map(|p| p.id.clone()),
            &e.parent.as_ref().map(|p| p.step.clone()),
            &e.parent.as_ref().map(|p| p.attempt as i32),
            &e.parent.as_ref().and_then(|p| p.item).map(|i| i as i32),
            &e.budget.usd,
            &e.budget.tokens.map(to_i64),
            &e.cache,
        ],
    )
    .await?;
    let positions: Vec<i32> = (0..e.keys.len() as i32).collect();
    db.exec(
        "INSERT INTO execution_steps (execution_id, step_key, position, state, updated_at)
         SELECT $1, k, p, 'pending', $4 FROM unnest($2::text[], $3::int4[]) AS t(k, p)",
        &[&e.id, &e.keys, &positions, &now],
    )
    .await?;
    db.exec(
        "INSERT INTO workflow_checkpoints (execution_id, kind, visible, data, completed_steps, created_at)
         VALUES ($1, 'full', false, $2::text::jsonb, 0, $3)",
        &[&e.id, &e.initial.to_json(), &now],
    )
    .await?;
    let lease = match claim_for {
        Some((me, lease_ms)) => Some(grant(db, &e.id, me, e.now, lease_ms, None).await?),
        None => None,
    };
    let checkpoint = match then {
        Some(mut b) => {
            if lease.is_some() {
                b.lease = lease.clone();
            }
            commit::apply(&tx, &[&b])
                .await?
                .pop()
                .ok_or_else(|| anyhow!("the batch had no result"))??
        }
        None => None,
    };
    tx.commit().await.map_err(db_err)?;
    Ok((lease, checkpoint))
}

pub async fn get_execution(c: &Object, id: &str) -> Result<Option<ExecutionRecord>> {
    let row = Db::Conn(c)
        .opt(&format!("{EXECUTION_SELECT} WHERE e.id = $1"), &[&id])
        .await?;
    Ok(row.as_ref().map(execution_row))
}

/// Newest first; `state` and `workflow_id` filter.
pub async fn list_executions(c: &Object, f: &ExecutionFilter) -> Result<Vec<ExecutionRecord>> {
    let rows = Db::Conn(c)
        .query(
            &format!(
                "{EXECUTION_SELECT}
                 WHERE ($1::text IS NULL OR e.state = $1) AND ($2::text IS NULL OR e.workflow_id = $2)
                   AND ($4::text IS NULL OR e.parent_id = $4)
                 ORDER BY e.created_at DESC, e.id DESC LIMIT $3"
            ),
            &[&f.state, &f.workflow_id, &i64::from(f.limit), &f.parent_id],
        )
        .await?;
    Ok(rows.iter().map(execution_row).collect())
}

/// Executions whose id starts with `prefix` (for short ids on the command line).
pub async fn find_execution_ids(c: &Object, prefix: &str) -> Result<Vec<String>> {
    let pattern = format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let rows = Db::Conn(c)
        .query(
            "SELECT id FROM workflow_executions WHERE id LIKE $1 ESCAPE '\\' ORDER BY id LIMIT 5",
            &[&pattern],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The steps of an execution in declaration order, with their latest attempt's
/// provider data and tokens summed over all attempts.
pub async fn execution_steps(c: &Object, id: &str, with_output: bool) -> Result<Vec<StepRecord>> {
    steps_of(c, id, with_output, None).await
}

/// One step of an execution, as [`execution_steps`] shows it (without its
/// output): one indexed lookup, whatever the number of steps.
pub async fn execution_step(c: &Object, id: &str, key: &str) -> Result<Option<StepRecord>> {
    Ok(steps_of(c, id, false, Some(key)).await?.pop())
}

/// The steps of an execution, or only the one keyed `only`.
async fn steps_of(
    c: &Object,
    id: &str,
    with_output: bool,
    only: Option<&str>,
) -> Result<Vec<StepRecord>> {
    let db = Db::Conn(c);
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    let dep_rows = match only {
        Some(key) => {
            db.query(
                "SELECT d.step_key, d.depends_on FROM workflow_dependencies d
                   JOIN workflow_executions e ON e.workflow_id = d.workflow_id
                  WHERE e.id = $1 AND d.step_key = $2 ORDER BY d.position",
                &[&id, &key],
            )
            .await?
        }
        None => {
            db.query(
                "SELECT d.step_key, d.depends_on FROM workflow_dependencies d
                   JOIN workflow_executions e ON e.workflow_id = d.workflow_id
                  WHERE e.id = $1 ORDER BY d.step_key, d.position",
                &[&id],
            )
            .await?
        }
    };
    for r in dep_rows {
        deps.entry(r.get(0)).or_default().push(r.get(1));
    }
    let filter = if only.is_some() {
        "s.execution_id = $1 AND s.step_key = $3"
    } else {
        "s.execution_id = $1"
    };
    let sql = format!(
        "SELECT s.step_key, ws.agent, s.state, s.attempts, s.reason, s.error_class, s.error,
                    s.started_at, s.finished_at, s.request, s.items_done, s.items_total,
                    la.provider, la.model, la.latency_ms,
                    COALESCE(t.tokens_in, 0)::bigint AS tokens_in, COALESCE(t.tokens_out, 0)::bigint AS tokens_out,
                    t.cost_usd,
                    CASE WHEN $2 THEN (SELECT o.text FROM step_outputs o WHERE o.hash = s.output_hash) END AS output,
                    ws.definition::text AS definition
               FROM execution_steps s
               JOIN workflow_executions e ON e.id = s.execution_id
               JOIN workflow_steps ws ON ws.workflow_id = e.workflow_id AND ws.key = s.step_key
               LEFT JOIN LATERAL (
                    SELECT a.provider, a.model, a.latency_ms FROM workflow_step_executions a
                     WHERE a.execution_id = s.execution_id AND a.step_key = s.step_key AND NOT a.superseded
                     ORDER BY a.attempt DESC LIMIT 1) la ON true
               LEFT JOIN LATERAL (
                    SELECT sum(a.tokens_in) AS tokens_in, sum(a.tokens_out) AS tokens_out, sum(a.cost_usd) AS cost_usd
                      FROM workflow_step_executions a
                     WHERE a.execution_id = s.execution_id AND a.step_key = s.step_key AND NOT a.superseded) t ON true
              WHERE {filter}
              ORDER BY s.position"
    );
    let rows = match only {
        Some(key) => db.query(&sql, &[&id, &with_output, &key]).await?,
        None => db.query(&sql, &[&id, &with_output]).await?,
    };
    Ok(rows
        .iter()
        .map(|r| {
            let key: String = r.get("step_key");
            StepRecord {
                dependencies: deps.remove(&key).unwrap_or_default(),
                agent: r.get("agent"),
                state: r.get("state"),
                attempts: r.get::<_, i32>("attempts").max(0) as u64,
                reason: r.get("reason"),
                error_class: r.get("error_class"),
                error: r.get("error"),
                started_at: ms(r.get("started_at")),
                finished_at: ms(r.get("finished_at")),
                provider: r.get("provider"),
                model: r.get("model"),
                latency_ms: ms(r.get("latency_ms")),
                tokens_in: u(r.get("tokens_in")),
                tokens_out: u(r.get("tokens_out")),
                cost_usd: r.get("cost_usd"),
                output: r.get("output"),
                request: r.get("request"),
                settings: step_settings(r.get("definition")),
                items: match (
                    r.get::<_, Option<i32>>("items_done"),
                    r.get::<_, Option<i32>>("items_total"),
                ) {
                    (Some(done), Some(total)) => Some(ItemProgress {
                        completed: done.max(0) as u32,
                        total: total.max(0) as u32,
                    }),
                    _ => None,
                },
                key,
            }
        })
        .collect())
}

/// Every attempt of an execution's steps, oldest first.
pub async fn attempts(c: &Object, id: &str) -> Result<Vec<AttemptRecord>> {
    let rows = Db::Conn(c)
        .query(
            "SELECT id, step_key, attempt, state, provider, model, tokens_in, tokens_out, error_class, superseded,
                    lease_token
               FROM workflow_step_executions WHERE execution_id = $1 ORDER BY id",
            &[&id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AttemptRecord {
            id: r.get("id"),
            step: r.get("step_key"),
            attempt: r.get::<_, i32>("attempt").max(0) as u32,
            state: r.get("state"),
            provider: r.get("provider"),
            model: r.get("model"),
            tokens_in: u(r.get("tokens_in")),
            tokens_out: u(r.get("tokens_out")),
            error_class: r.get("error_class"),
            superseded: r.get("superseded"),
            lease_token: r.get("lease_token"),
        })
        .collect())
}

pub async fn events_after(
    c: &Object,
    id: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<EventRecord>> {
    let rows = Db::Conn(c)
        .query(
            "SELECT id, execution_id, at, type, step_key, state, attempt, message, data FROM workflow_events
              WHERE execution_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&id, &after, &i64::from(limit)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| EventRecord {
            id: r.get("id"),
            execution_id: r.get("execution_id"),
            at: u(r.get("at")),
            kind: r.get("type"),
            step: r.get("step_key"),
            state: r.get("state"),
            attempt: r.get::<_, Option<i32>>("attempt").map(|a| a.max(0) as u32),
            message: r.get("message"),
            data: r.get("data"),
        })
        .collect())
}

// ---------------------------------------------------------------- ownership and control

/// Give `me` a new lease on `id` (the next fencing token), recorded in the
/// lease history; requests meant for an older lease are dropped.
async fn grant(
    db: Db<'_, '_>,
    id: &str,
    me: &Owner,
    now: u64,
    lease_ms: u64,
    previous: Option<&str>,
) -> Result<Lease> {
    let token: i64 = db
        .one(
            "UPDATE workflow_executions
                SET owner = $2, owner_host = $3, owner_pid = $4, owner_started = $5, owner_boot = $6,
                    heartbeat_at = $7, lease_expires_at = $8, lease_token = lease_token + 1,
                    control = NULL, control_at = NULL, control_token = NULL
              WHERE id = $1 RETURNING lease_token",
            &[
                &id,
                &me.id,
                &me.host,
                &i64::from(me.pid),
                &me.started.map(|s| s as i64),
                &me.boot,
                &to_i64(now),
                &to_i64(now.saturating_add(lease_ms)),
            ],
        )
        .await?
        .get(0);
    db.exec(
        "INSERT INTO execution_leases (execution_id, token, owner, claimed_at, previous_owner)
         VALUES ($1, $2, $3, $4, $5)",
        &[&id, &token, &me.id, &to_i64(now), &previous],
    )
    .await?;
    Ok(Lease {
        execution_id: id.to_owned(),
        owner: me.id.clone(),
        token,
    })
}

/// Take the lease unless a live process holds it; with `drive`, the
/// execution wants a driver from now on.
pub async fn claim(
    c: &mut Object,
    id: &str,
    me: &Owner,
    now: u64,
    lease_ms: u64,
    drive: bool,
) -> Result<Claim> {
    let tx = c.transaction().await.map_err(db_err)?;
    let db = Db::Tx(&tx);
    let row = db
        .opt(
            &format!("{EXECUTION_SELECT} WHERE e.id = $1 FOR UPDATE OF e"),
            &[&id],
        )
        .await?
        .ok_or_else(|| anyhow!("no execution {id}"))?;
    let e = execution_row(&row);
    if let Some(owner) = &e.owner
        && owner != &me.id
        && owner_alive(&e, me, now, true)
    {
        return Ok(Claim::Held {
            owner: owner.clone(),
        });
    }
    let previous = e.owner.filter(|o| o != &me.id);
    let lease = grant(db, id, me, now, lease_ms, previous.as_deref()).await?;
    if drive {
        db.exec(
            "UPDATE workflow_executions SET queued_at = COALESCE(queued_at, $2) WHERE id = $1",
            &[&id, &to_i64(now)],
        )
        .await?;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(Claim::Granted { lease, previous })
}

/// Claim up to `limit` executions that want a driver and have none alive:
/// new ones (queued, never owned or handed back), and with `orphans` the runs
/// of processes that died (on this machine: pid check) or lost their lease.
/// Rows another worker is claiming are skipped (`SKIP LOCKED`).
pub async fn claim_work(
    c: &mut Object,
    me: &Owner,
    limit: usize,
    now: u64,
    lease_ms: u64,
    orphans: bool,
) -> Result<Vec<Claimed>> {
    let now_i = to_i64(now);
    // Owned rows whose owner may be gone, checked here without locks.
    let mut dead: Vec<String> = Vec::new();
    if orphans {
        let rows = Db::Conn(c)
            .query(
                &format!(
                    "{EXECUTION_SELECT} WHERE e.queued_at IS NOT NULL AND e.owner IS NOT NULL AND e.owner <> $1
                       AND (e.lease_expires_at < $2 OR e.owner_boot = $3)
                     ORDER BY e.queued_at, e.id LIMIT 10000"
                ),
                &[&me.id, &now_i, &me.boot],
            )
            .await?;
        dead = rows
            .iter()
            .map(execution_row)
            .filter(|e| !owner_alive(e, me, now, true))
            .map(|e| e.id)
            .take(limit)
            .collect();
    }
    let tx = c.transaction().await.map_err(db_err)?;
    let db = Db::Tx(&tx);
    let rows = db
        .query(
            &format!(
                "{EXECUTION_SELECT}
                 WHERE e.queued_at IS NOT NULL
                   AND ((e.owner IS NULL AND (e.state <> 'interrupted' OR $1)) OR e.id = ANY($2))
                 ORDER BY e.queued_at, e.id LIMIT $3
                 FOR UPDATE OF e SKIP LOCKED"
            ),
            &[&orphans, &dead, &(limit as i64)],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for e in rows.iter().map(execution_row) {
        // Re-checked under the lock: the owner may have come back meanwhile.
        if e.owner.is_some() && owner_alive(&e, me, now, true) {
            continue;
        }
        let previous = e.owner.clone();
        let lease = grant(db, &e.id, me, now, lease_ms, previous.as_deref()).await?;
        out.push(Claimed {
            lease,
            state: e.state,
            previous,
        });
    }
    tx.commit().await.map_err(db_err)?;
    Ok(out)
}

/// Push the leases `me` holds forward, in one statement; returns the
/// executions it still holds.
pub async fn renew(
    c: &Object,
    me: &Owner,
    held: &[(String, i64)],
    now: u64,
    lease_ms: u64,
) -> Result<Vec<String>> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = held.iter().map(|(i, _)| i.as_str()).collect();
    let tokens: Vec<i64> = held.iter().map(|(_, t)| *t).collect();
    let rows = Db::Conn(c)
        .query(
            "UPDATE workflow_executions e SET heartbeat_at = $2, lease_expires_at = $3
               FROM unnest($4::text[], $5::int8[]) AS t(id, token)
              WHERE e.id = t.id AND e.owner = $1 AND e.lease_token = t.token
             RETURNING e.id",
            &[
                &me.id,
                &to_i64(now),
                &to_i64(now.saturating_add(lease_ms)),
                &ids,
                &tokens,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn release(c: &Object, lease: &Lease) -> Result<()> {
    Db::Conn(c)
        .exec(
            "UPDATE workflow_executions SET owner = NULL, owner_host = NULL, owner_pid = NULL, owner_started = NULL,
                    owner_boot = NULL, heartbeat_at = NULL, lease_expires_at = NULL
              WHERE id = $1 AND owner = $2 AND lease_token = $3",
            &[&lease.execution_id, &lease.owner, &lease.token],
        )
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- response cache

fn cached_row(r: &Row) -> CachedAnswer {
    CachedAnswer {
        key: r.get("key"),
        output: r.get("output"),
        provider: r.get("provider"),
        model: r.get("model"),
        tokens_in: u(r.get("tokens_in")),
        tokens_out: u(r.get("tokens_out")),
        cost_usd: r.get("cost_usd"),
        created_at: u(r.get("created_at")),
    }
}

/// A cached answer no older than `max_age_ms` (counted as a hit), if any.
pub async fn cache_get(
    c: &Object,
    key: &str,
    now: u64,
    max_age_ms: Option<u64>,
) -> Result<Option<CachedAnswer>> {
    let oldest = max_age_ms.map_or(i64::MIN, |a| to_i64(now.saturating_sub(a)));
    let row = Db::Conn(c)
        .opt(
            "UPDATE response_cache SET hits = hits + 1, last_hit_at = $3
              WHERE key = $1 AND created_at >= $2
              RETURNING key, output, provider, model, tokens_in, tokens_out, cost_usd, created_at",
            &[&key, &oldest, &to_i64(now)],
        )
        .await?;
    Ok(row.as_ref().map(cached_row))
}

/// Keep an answer (a newer one replaces an older one under the same key).
pub async fn cache_put(c: &Object, a: &CachedAnswer) -> Result<()> {
    Db::Conn(c)
        .exec(
            "INSERT INTO response_cache (key, output, provider, model, tokens_in, tokens_out, cost_usd, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (key) DO UPDATE SET output = excluded.output, provider = excluded.provider,
                 model = excluded.model, tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out,
                 cost_usd = excluded.cost_usd, created_at = excluded.created_at",
            &[
                &a.key,
                &a.output,
                &a.provider,
                &a.model,
                &to_i64(a.tokens_in),
                &to_i64(a.tokens_out),
                &a.cost_usd,
                &to_i64(a.created_at),
            ],
        )
        .await?;
    Ok(())
}

pub async fn cache_stats(c: &Object) -> Result<CacheStats> {
    let r = Db::Conn(c)
        .one(
            "SELECT count(*)::bigint AS entries, COALESCE(sum(octet_length(output)), 0)::bigint AS bytes,
                    COALESCE(sum(hits), 0)::bigint AS hits,
                    COALESCE(sum(COALESCE(cost_usd, 0) * hits), 0)::double precision AS saved,
                    min(created_at) AS oldest, max(created_at) AS newest
               FROM response_cache",
            &[],
        )
        .await?;
    Ok(CacheStats {
        entries: u(r.get("entries")),
        bytes: u(r.get("bytes")),
        hits: u(r.get("hits")),
        saved_usd: r.get("saved"),
        oldest_at: ms(r.get("oldest")),
        newest_at: ms(r.get("newest")),
    })
}

/// Remove cached answers made before `before` (all with None); how many.
pub async fn cache_clear(c: &Object, before: Option<u64>) -> Result<u64> {
    Db::Conn(c)
        .exec(
            "DELETE FROM response_cache WHERE $1::bigint IS NULL OR created_at < $1",
            &[&before.map(to_i64)],
        )
        .await
}

/// Give the execution its own budget (each limit set replaces the file's).
pub async fn set_budget(c: &Object, id: &str, b: ax_core::Budget, now: u64) -> Result<bool> {
    let n = Db::Conn(c)
        .exec(
            "UPDATE workflow_executions SET budget_usd = COALESCE($2, budget_usd),
                    budget_tokens = COALESCE($3, budget_tokens), updated_at = $4 WHERE id = $1",
            &[&id, &b.usd, &b.tokens.map(to_i64), &to_i64(now)],
        )
        .await?;
    Ok(n > 0)
}

/// Whether the execution wants a driver.
pub async fn set_queued(c: &Object, id: &str, queued: bool, now: u64) -> Result<()> {
    Db::Conn(c)
        .exec(
            "UPDATE workflow_executions SET queued_at = CASE WHEN $2 THEN COALESCE(queued_at, $3) END
              WHERE id = $1",
            &[&id, &queued, &to_i64(now)],
        )
        .await?;
    Ok(())
}

/// Leave a request for the execution's current lease; returns that lease's token.
pub async fn request_control(
    c: &Object,
    id: &str,
    control: Control,
    now: u64,
) -> Result<Option<i64>> {
    Ok(Db::Conn(c)
        .opt(
            "UPDATE workflow_executions SET control = $2, control_at = $3, control_token = lease_token
              WHERE id = $1 RETURNING lease_token",
            &[&id, &control.as_str(), &to_i64(now)],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Take the requests meant for the leases `me` holds, in one statement.
pub async fn take_controls(c: &Object, me: &Owner) -> Result<Vec<(String, Control)>> {
    let rows = Db::Conn(c)
        .query(
            "WITH pending AS (
                 SELECT id, control FROM workflow_executions
                  WHERE owner = $1 AND control IS NOT NULL AND control_token = lease_token
                  FOR UPDATE)
             UPDATE workflow_executions e SET control = NULL, control_at = NULL, control_token = NULL
               FROM pending p WHERE e.id = p.id
             RETURNING p.id, p.control",
            &[&me.id],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Control::parse(r.get::<_, &str>(1)).map(|c| (r.get::<_, String>(0), c)))
        .collect())
}

pub async fn withdraw_control(c: &Object, id: &str, at: u64) -> Result<()> {
    Db::Conn(c)
        .exec(
            "UPDATE workflow_executions SET control = NULL, control_at = NULL, control_token = NULL
              WHERE id = $1 AND control_at = $2",
            &[&id, &to_i64(at)],
        )
        .await?;
    Ok(())
}

/// Mark executions left running by processes that are gone as interrupted,
/// taking their lease away (rows another transaction holds are skipped).
pub async fn interrupt_orphans(c: &mut Object, me: &Owner, now: u64) -> Result<Vec<String>> {
    let tx = c.transaction().await.map_err(db_err)?;
    let db = Db::Tx(&tx);
    let rows = db
        .query(
            &format!(
                "{EXECUTION_SELECT} WHERE e.state IN ('running', 'validating')
                 ORDER BY e.id FOR UPDATE OF e SKIP LOCKED"
            ),
            &[],
        )
        .await?;
    let mut ids = Vec::new();
    for e in rows.iter().map(execution_row) {
        if owner_alive(&e, me, now, true) {
            continue;
        }
        let why = orphan_reason(&e, now);
        db.exec(
            "UPDATE workflow_executions SET state = 'interrupted', reason = $2, updated_at = $3,
                    owner = NULL, owner_host = NULL, owner_pid = NULL, owner_started = NULL, owner_boot = NULL,
                    heartbeat_at = NULL, lease_expires_at = NULL, lease_token = lease_token + 1,
                    queued_at = COALESCE(queued_at, $3)
              WHERE id = $1",
            &[&e.id, &why, &to_i64(now)],
        )
        .await?;
        db.exec(
            "INSERT INTO workflow_events (execution_id, at, type, state, message)
             VALUES ($1, $2, 'execution', 'interrupted', $3)",
            &[&e.id, &to_i64(now), &why],
        )
        .await?;
        ids.push(e.id);
    }
    tx.commit().await.map_err(db_err)?;
    Ok(ids)
}

/// Every claim of an execution, oldest first.
pub async fn leases(c: &Object, id: &str) -> Result<Vec<LeaseRecord>> {
    let rows = Db::Conn(c)
        .query(
            "SELECT token, owner, claimed_at, previous_owner FROM execution_leases
              WHERE execution_id = $1 ORDER BY token",
            &[&id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| LeaseRecord {
            token: r.get(0),
            owner: r.get(1),
            claimed_at: u(r.get(2)),
            previous_owner: r.get(3),
        })
        .collect())
}

// ---------------------------------------------------------------- checkpoints

/// The journal rows of an execution from its latest full snapshot at or before
/// `until` (all rows when `until` is None and `from_base` is false).
async fn journal(
    db: Db<'_, '_>,
    id: &str,
    until: Option<i64>,
    from_base: bool,
) -> Result<Vec<JournalRow>> {
    let limit = until.unwrap_or(i64::MAX);
    let base: i64 = if from_base {
        db.one(
            "SELECT max(id) FROM workflow_checkpoints WHERE execution_id = $1 AND kind = 'full' AND id <= $2",
            &[&id, &limit],
        )
        .await?
        .get::<_, Option<i64>>(0)
        .ok_or_else(|| journal::no_base(id))?
    } else {
        0
    };
    let rows = db
        .query(
            "SELECT id, kind, visible, data::text AS data, created_at FROM workflow_checkpoints
              WHERE execution_id = $1 AND id >= $2 AND id <= $3 ORDER BY id",
            &[&id, &base, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| JournalRow {
            id: r.get("id"),
            kind: r.get("kind"),
            visible: r.get("visible"),
            data: r.get("data"),
            created_at: u(r.get("created_at")),
        })
        .collect())
}

async fn folded_checkpoint(
    db: Db<'_, '_>,
    id: &str,
    until: Option<i64>,
) -> Result<ax_core::checkpoint::Checkpoint> {
    journal::fold_all(id, &journal(db, id, until, true).await?)
}

pub async fn checkpoint_state(c: &Object, id: &str, until: Option<i64>) -> Result<CheckpointState> {
    let db = Db::Conn(c);
    let checkpoint = folded_checkpoint(db, id, until).await?;
    let outputs = outputs(db, &checkpoint.output_hashes()).await?;
    Ok(CheckpointState {
        checkpoint,
        outputs,
    })
}

pub async fn list_checkpoints(c: &Object, id: &str) -> Result<Vec<CheckpointRecord>> {
    journal::restore_points(id, &journal(Db::Conn(c), id, None, false).await?)
}

pub async fn checkpoint_execution(c: &Object, row: i64) -> Result<Option<String>> {
    Ok(Db::Conn(c)
        .opt(
            "SELECT execution_id FROM workflow_checkpoints WHERE id = $1 AND visible",
            &[&row],
        )
        .await?
        .map(|r| r.get(0)))
}

async fn outputs(db: Db<'_, '_>, hashes: &BTreeSet<String>) -> Result<BTreeMap<String, Arc<str>>> {
    if hashes.is_empty() {
        return Ok(BTreeMap::new());
    }
    let list: Vec<&str> = hashes.iter().map(String::as_str).collect();
    let rows = db
        .query(
            "SELECT hash, text FROM step_outputs WHERE hash = ANY($1)",
            &[&list],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), Arc::from(r.get::<_, &str>(1))))
        .collect())
}

/// Serializes journal maintenance per execution (never blocks commits).
async fn lock_journal(db: Db<'_, '_>, id: &str) -> Result<()> {
    db.exec(
        "SELECT pg_advisory_xact_lock(hashtext('ax-journal:' || $1::text))",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Replace the journal of an execution before row `from` with one full snapshot
/// at `from`. Returns the rows removed.
async fn compact_before(db: Db<'_, '_>, id: &str, from: i64) -> Result<u64> {
    let folded = folded_checkpoint(db, id, Some(from)).await?;
    db.exec(
        "UPDATE workflow_checkpoints SET kind = 'full', data = $2::text::jsonb WHERE id = $1",
        &[&from, &folded.to_json()],
    )
    .await?;
    db.exec(
        "DELETE FROM workflow_checkpoints WHERE execution_id = $1 AND id < $2",
        &[&id, &from],
    )
    .await
}

/// Keep the newest `keep` restore points of an execution (and what they need).
async fn retain_checkpoints(c: &mut Object, id: &str, keep: usize) -> Result<u64> {
    let keep = keep.max(1) as i64;
    let tx = c.transaction().await.map_err(db_err)?;
    let db = Db::Tx(&tx);
    lock_journal(db, id).await?;
    let oldest_kept: Option<i64> = db
        .opt(
            "SELECT id FROM workflow_checkpoints WHERE execution_id = $1 AND visible
              ORDER BY id DESC OFFSET $2 LIMIT 1",
            &[&id, &(keep - 1)],
        )
        .await?
        .map(|r| r.get(0));
    let more: bool = match oldest_kept {
        Some(from) => db
            .one(
                "SELECT EXISTS (SELECT 1 FROM workflow_checkpoints WHERE execution_id = $1 AND visible AND id < $2)",
                &[&id, &from],
            )
            .await?
            .get(0),
        None => false,
    };
    let removed = match (oldest_kept, more) {
        (Some(from), true) => compact_before(db, id, from).await?,
        _ => 0,
    };
    tx.commit().await.map_err(db_err)?;
    Ok(removed)
}

/// Hide restore points beyond the newest `keep`.
async fn hide_old_checkpoints(c: &Object, id: &str, keep: usize) -> Result<()> {
    Db::Conn(c)
        .exec(
            "UPDATE workflow_checkpoints SET visible = false
              WHERE execution_id = $1 AND visible AND id < (
                SELECT id FROM workflow_checkpoints WHERE execution_id = $1 AND visible
                 ORDER BY id DESC OFFSET $2 LIMIT 1)",
            &[&id, &(keep.max(1) as i64 - 1)],
        )
        .await?;
    Ok(())
}

pub async fn maintain(c: &mut Object, id: &str, m: Maintenance) -> Result<()> {
    match m {
        Maintenance::Retain { keep } => retain_checkpoints(c, id, keep).await.map(drop),
        Maintenance::Hide { keep } => hide_old_checkpoints(c, id, keep).await,
    }
}

/// Outputs that no step, attempt or checkpoint refers to. Commits that add
/// outputs wait meanwhile (the table lock), so an output is never removed
/// between its insert and the row that refers to it.
async fn delete_orphan_outputs(db: Db<'_, '_>) -> Result<u64> {
    db.exec("LOCK TABLE step_outputs IN SHARE ROW EXCLUSIVE MODE", &[])
        .await?;
    db.exec(
        "WITH referenced AS (
             SELECT output_hash AS hash FROM execution_steps WHERE output_hash IS NOT NULL
             UNION SELECT output_hash FROM workflow_step_executions WHERE output_hash IS NOT NULL
             UNION SELECT s.value -> 'output' ->> 'hash'
                     FROM workflow_checkpoints c CROSS JOIN LATERAL jsonb_each(c.data -> 'steps') s
                    WHERE s.value -> 'output' ->> 'hash' IS NOT NULL
             -- forEach steps: the list and each item's output.
             UNION SELECT s.value -> 'items' -> 'list' ->> 'hash'
                     FROM workflow_checkpoints c CROSS JOIN LATERAL jsonb_each(c.data -> 'steps') s
                    WHERE s.value -> 'items' -> 'list' ->> 'hash' IS NOT NULL
             UNION SELECT i.value -> 'output' ->> 'hash'
                     FROM workflow_checkpoints c CROSS JOIN LATERAL jsonb_each(c.data -> 'steps') s
                          CROSS JOIN LATERAL jsonb_each(COALESCE(s.value -> 'items' -> 'items', '{}'::jsonb)) i
                    WHERE i.value -> 'output' ->> 'hash' IS NOT NULL)
         DELETE FROM step_outputs o WHERE NOT EXISTS (SELECT 1 FROM referenced r WHERE r.hash = o.hash)",
        &[],
    )
    .await
}

async fn database_bytes(c: &Object) -> Result<u64> {
    Ok(u(Db::Conn(c)
        .one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0)))
}

/// As SQLite's `prune`: keep the newest restore points, drop old ones and old
/// finished executions if asked, remove unreferenced outputs, then VACUUM the
/// tables it shrank (PostgreSQL reuses the space; the files shrink only at
/// their end).
pub async fn prune(c: &mut Object, o: &PruneOptions) -> Result<PruneReport> {
    let keep = o.keep.max(1);
    let mut report = PruneReport {
        bytes_before: database_bytes(c).await?,
        ..PruneReport::default()
    };
    let cutoff = o.older_than.map(|age| to_i64(o.now.saturating_sub(age)));
    if let (Some(cutoff), true) = (cutoff, o.delete_finished) {
        // Children of the runs deleted outlive them, unlinked.
        Db::Conn(c)
            .exec(
                "UPDATE workflow_executions SET parent_id = NULL WHERE parent_id IN
                   (SELECT id FROM workflow_executions WHERE state IN ('completed', 'failed', 'cancelled')
                      AND COALESCE(finished_at, updated_at) < $1)",
                &[&cutoff],
            )
            .await?;
        report.executions_deleted = Db::Conn(c)
            .exec(
                "DELETE FROM workflow_executions WHERE state IN ('completed', 'failed', 'cancelled')
                   AND COALESCE(finished_at, updated_at) < $1",
                &[&cutoff],
            )
            .await? as usize;
    }
    let ids: Vec<String> = Db::Conn(c)
        .query("SELECT id FROM workflow_executions ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in ids {
        let mut removed = retain_checkpoints(c, &id, keep).await? as usize;
        if let Some(cutoff) = cutoff {
            let tx = c.transaction().await.map_err(db_err)?;
            let db = Db::Tx(&tx);
            lock_journal(db, &id).await?;
            // The oldest restore point newer than the cutoff becomes the base.
            let from: Option<i64> = db
                .one(
                    "SELECT COALESCE(
                        (SELECT min(id) FROM workflow_checkpoints WHERE execution_id = $1 AND visible AND created_at >= $2),
                        (SELECT max(id) FROM workflow_checkpoints WHERE execution_id = $1 AND visible))",
                    &[&id, &cutoff],
                )
                .await?
                .get(0);
            if let Some(from) = from {
                let older: bool = db
                    .one(
                        "SELECT EXISTS (SELECT 1 FROM workflow_checkpoints WHERE execution_id = $1 AND id < $2)",
                        &[&id, &from],
                    )
                    .await?
                    .get(0);
                if older {
                    removed += compact_before(db, &id, from).await? as usize;
                }
            }
            tx.commit().await.map_err(db_err)?;
        }
        if removed > 0 {
            report.executions_compacted += 1;
            report.checkpoints_removed += removed;
        }
    }
    {
        let tx = c.transaction().await.map_err(db_err)?;
        report.outputs_removed = delete_orphan_outputs(Db::Tx(&tx)).await? as usize;
        tx.commit().await.map_err(db_err)?;
    }
    c.batch_execute("VACUUM (ANALYZE) workflow_checkpoints, step_outputs, workflow_executions")
        .await
        .map_err(db_err)?;
    report.bytes_after = database_bytes(c).await?;
    Ok(report)
}

/// What SQLite's integrity check covers and PostgreSQL does not do by itself:
/// the counters that triggers keep agree with the rows they count.
pub async fn check(c: &Object) -> Result<String> {
    let db = Db::Conn(c);
    let mut problems: Vec<String> = Vec::new();
    for r in db
        .query(
            "SELECT e.id FROM workflow_executions e
               LEFT JOIN (SELECT execution_id,
                                 count(*) FILTER (WHERE state = 'completed') AS completed,
                                 count(*) FILTER (WHERE state = 'failed') AS failed,
                                 count(*) FILTER (WHERE state = 'running') AS running,
                                 count(*) FILTER (WHERE state = 'skipped') AS skipped
                            FROM execution_steps GROUP BY execution_id) s ON s.execution_id = e.id
              WHERE e.steps_completed <> COALESCE(s.completed, 0) OR e.steps_failed <> COALESCE(s.failed, 0)
                 OR e.steps_running <> COALESCE(s.running, 0) OR e.steps_skipped <> COALESCE(s.skipped, 0)
              LIMIT 5",
            &[],
        )
        .await?
    {
        problems.push(format!(
            "execution {}: step counters disagree with its steps",
            r.get::<_, String>(0)
        ));
    }
    for r in db
        .query(
            "SELECT w.id FROM workflows w
              WHERE w.total_executions < (SELECT count(*) FROM workflow_executions e WHERE e.workflow_id = w.id)
              LIMIT 5",
            &[],
        )
        .await?
    {
        problems.push(format!(
            "workflow {}: fewer executions counted than stored",
            r.get::<_, String>(0)
        ));
    }
    Ok(if problems.is_empty() {
        "ok".to_owned()
    } else {
        problems.join("; ")
    })
}

/// Row counts and checkpoint bytes.
pub async fn footprint(c: &Object) -> Result<Footprint> {
    let r = Db::Conn(c)
        .one(
            "SELECT (SELECT COALESCE(max(id), 0) FROM workflow_checkpoints),
                    (SELECT count(*) FROM workflow_checkpoints),
                    (SELECT COALESCE(sum(octet_length(data::text)), 0)::bigint FROM workflow_checkpoints),
                    (SELECT count(*) FROM workflow_step_executions),
                    (SELECT count(*) FROM workflow_events),
                    (SELECT count(*) FROM step_outputs),
                    (SELECT count(*) FROM workflow_executions),
                    pg_database_size(current_database())",
            &[],
        )
        .await?;
    let n = |i: usize| u(r.get::<_, i64>(i));
    Ok(Footprint {
        checkpoint_rows_written: n(0),
        checkpoint_rows: n(1),
        checkpoint_bytes: n(2),
        attempts: n(3),
        events: n(4),
        outputs: n(5),
        executions: n(6),
        database_bytes: n(7),
    })
}

// ---------------------------------------------------------------- statistics

/// The stored workflows named `$1` (or with that id), every one without it.
const STATS_SCOPE: &str =
    "($1::text IS NULL OR workflow_id IN (SELECT id FROM workflows WHERE name = $1 OR id = $1))";

/// What each stored workflow has run: `v_workflow_stats` and
/// `v_active_executions`, runs by state, completed runs' durations, and the
/// tokens and cost of every attempt.
pub async fn workflow_stats(c: &Object, only: Option<&str>) -> Result<Vec<WorkflowStatsRow>> {
    let db = Db::Conn(c);
    let q = |sql: &str| sql.replace("{SCOPE}", STATS_SCOPE);
    let mut rows: BTreeMap<String, WorkflowStatsRow> = BTreeMap::new();
    for r in db
        .query(
            &q(
                "SELECT workflow_id, name, total_executions::bigint, successful_executions::bigint,
                       failed_executions::bigint, last_run_at::bigint
                  FROM v_workflow_stats WHERE {SCOPE}",
            ),
            &[&only],
        )
        .await?
    {
        let row = WorkflowStatsRow {
            workflow_id: r.get(0),
            name: r.get(1),
            total: u(r.get(2)),
            successful: u(r.get(3)),
            failed: u(r.get(4)),
            last_run_at: ms(r.get(5)),
            ..WorkflowStatsRow::default()
        };
        rows.insert(row.workflow_id.clone(), row);
    }
    for r in db
        .query(
            &q(
                "SELECT workflow_id, COUNT(*)::bigint FROM v_active_executions
                 WHERE {SCOPE} GROUP BY workflow_id",
            ),
            &[&only],
        )
        .await?
    {
        if let Some(row) = rows.get_mut(r.get::<_, &str>(0)) {
            row.active = u(r.get(1));
        }
    }
    for r in db
        .query(
            &q(
                "SELECT workflow_id, duration_ms::bigint FROM workflow_executions
                 WHERE state = 'completed' AND duration_ms IS NOT NULL AND {SCOPE}",
            ),
            &[&only],
        )
        .await?
    {
        if let Some(row) = rows.get_mut(r.get::<_, &str>(0)) {
            row.durations.push(u(r.get(1)));
        }
    }
    for r in db
        .query(
            &q(
                "SELECT workflow_id, state, COUNT(*)::bigint FROM workflow_executions
                 WHERE {SCOPE} GROUP BY workflow_id, state",
            ),
            &[&only],
        )
        .await?
    {
        if let Some(row) = rows.get_mut(r.get::<_, &str>(0)) {
            row.by_state.insert(r.get(1), u(r.get(2)));
        }
    }
    for r in db
        .query(
            &q("SELECT e.workflow_id, COALESCE(SUM(a.tokens_in), 0)::bigint,
                       COALESCE(SUM(a.tokens_out), 0)::bigint, COALESCE(SUM(a.cost_usd), 0)::float8
                  FROM workflow_step_executions a JOIN workflow_executions e ON e.id = a.execution_id
                 WHERE {SCOPE} GROUP BY e.workflow_id"),
            &[&only],
        )
        .await?
    {
        if let Some(row) = rows.get_mut(r.get::<_, &str>(0)) {
            row.tokens_in = u(r.get(1));
            row.tokens_out = u(r.get(2));
            row.cost_usd = r.get(3);
        }
    }
    Ok(rows.into_values().collect())
}
