//! Group commit on PostgreSQL.
//!
//! Committer tasks take the batches that queued while the previous commit was
//! in flight (at most one per execution per group) and write them in one
//! transaction with one multi-row statement per table, each over `unnest` of
//! parameter arrays. The executions' rows are locked first, in id order (the
//! owner check, and the reason event ids grow in commit order per execution).
//!
//! A batch refused by the owner check fails alone. If the transaction fails
//! for any other reason before COMMIT, nothing was written, and each batch is
//! retried in its own transaction so that one bad batch does not fail the
//! others; if COMMIT itself fails the outcome is unknown, and every batch of
//! the group reports the error (its runner stops driving, and the run is
//! resumed from what the database holds).

use super::db::Db;
use super::{db_err, error_text};
use crate::store::model::*;
use anyhow::{Result, anyhow};
use deadpool_postgres::{Pool, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Batches committed together at most (`AX_PG_GROUP` lowers it: 1 turns
/// group commit off, to measure what it buys).
fn group_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("AX_PG_GROUP")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(256, |n| n.clamp(1, 256))
    })
}

pub struct Job {
    pub batch: Box<Batch>,
    pub reply: oneshot::Sender<Result<Option<i64>>>,
}

/// One committer: takes a group from the shared queue, commits it, repeats
/// until every store handle is gone.
pub async fn committer(pool: Pool, queue: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    let mut held: Option<Job> = None;
    loop {
        let group = match held.take() {
            // A batch kept back from the previous group: commit it now, with
            // whatever else is queued if the queue is free (waiting for the
            // lock could wait for the other committer's next batch forever).
            Some(first) => {
                let mut group = vec![first];
                if let Ok(mut rx) = queue.try_lock() {
                    take_more(&mut rx, &mut group, &mut held);
                }
                group
            }
            None => {
                // One lock for the whole take: the other committer waits
                // meanwhile, then takes what queues while this one commits.
                let mut rx = queue.lock().await;
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut group = vec![first];
                take_more(&mut rx, &mut group, &mut held);
                group
            }
        };
        commit_group(&pool, group).await;
    }
}

/// Add queued batches to `group`, at most one per execution: a second batch of
/// an execution already in it is kept back for the next group.
fn take_more(rx: &mut mpsc::UnboundedReceiver<Job>, group: &mut Vec<Job>, held: &mut Option<Job>) {
    let mut seen: HashSet<String> = group.iter().map(|j| j.batch.execution_id.clone()).collect();
    while group.len() < group_limit() {
        match rx.try_recv() {
            Ok(j) if seen.insert(j.batch.execution_id.clone()) => group.push(j),
            Ok(j) => {
                *held = Some(j);
                break;
            }
            Err(_) => break,
        }
    }
}

enum Failure {
    /// Nothing was written (the transaction never committed).
    RolledBack(anyhow::Error),
    /// COMMIT was sent and failed: it may or may not have taken effect.
    Unknown(anyhow::Error),
}

async fn commit_group(pool: &Pool, group: Vec<Job>) {
    let batches: Vec<&Batch> = group.iter().map(|j| &*j.batch).collect();
    let results = match write(pool, &batches).await {
        Ok(results) => results,
        Err(Failure::RolledBack(e)) if group.len() > 1 => {
            tracing::debug!("a group commit failed, committing its batches one by one: {e:#}");
            let mut results = Vec::with_capacity(group.len());
            for b in &batches {
                results.push(match write(pool, &[b]).await {
                    Ok(mut r) => r.pop().unwrap_or_else(|| Err(anyhow!("no result"))),
                    Err(Failure::RolledBack(e) | Failure::Unknown(e)) => Err(e),
                });
            }
            results
        }
        Err(Failure::RolledBack(e) | Failure::Unknown(e)) => {
            let msg = format!("{e:#}");
            batches
                .iter()
                .map(|_| Err(anyhow!("could not commit: {msg}")))
                .collect()
        }
    };
    for (job, result) in group.into_iter().zip(results) {
        let _ = job.reply.send(result);
    }
}

async fn write(
    pool: &Pool,
    batches: &[&Batch],
) -> std::result::Result<Vec<Result<Option<i64>>>, Failure> {
    let mut client = pool.get().await.map_err(|e| {
        Failure::RolledBack(anyhow!(
            "cannot reach the database: {}",
            match &e {
                deadpool_postgres::PoolError::Backend(pg) => error_text(pg),
                other => other.to_string(),
            }
        ))
    })?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| Failure::RolledBack(db_err(e)))?;
    let results = apply(&tx, batches).await.map_err(Failure::RolledBack)?;
    tx.commit().await.map_err(|e| Failure::Unknown(db_err(e)))?;
    Ok(results)
}

/// Write `batches` (at most one per execution) inside `tx`. Returns each
/// batch's result: the id of its checkpoint row, or why it was refused.
pub async fn apply(tx: &Transaction<'_>, batches: &[&Batch]) -> Result<Vec<Result<Option<i64>>>> {
    let db = Db::Tx(tx);
    let mut ids: Vec<&str> = batches.iter().map(|b| b.execution_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let leases: HashMap<String, (Option<String>, i64)> = db
        .query(
            "SELECT id, owner, lease_token FROM workflow_executions WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut results: Vec<Result<Option<i64>>> = Vec::with_capacity(batches.len());
    let mut valid: Vec<&Batch> = Vec::with_capacity(batches.len());
    for b in batches {
        match leases.get(&b.execution_id) {
            None => results.push(Err(anyhow!("no execution {}", b.execution_id))),
            Some((owner, token)) => match b.fence(owner.as_deref(), *token) {
                Err(e) => results.push(Err(e)),
                Ok(()) => {
                    results.push(Ok(None));
                    valid.push(b);
                }
            },
        }
    }
    if valid.is_empty() {
        return Ok(results);
    }
    write_rewinds(db, &valid).await?;
    write_outputs(db, &valid).await?;
    write_starts(db, &valid).await?;
    write_ends(db, &valid).await?;
    write_steps(db, &valid).await?;
    write_executions(db, &valid).await?;
    let checkpoints = write_checkpoints(db, &valid).await?;
    write_events(db, &valid, &checkpoints).await?;
    for (b, r) in batches.iter().zip(results.iter_mut()) {
        if let Ok(id) = r {
            *id = checkpoints.get(b.execution_id.as_str()).copied();
        }
    }
    Ok(results)
}

async fn write_rewinds(db: Db<'_, '_>, batches: &[&Batch]) -> Result<()> {
    let (mut eid, mut key, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    for b in batches {
        for (k, a) in &b.rewind {
            eid.push(b.execution_id.as_str());
            key.push(k.as_str());
            kept.push(*a as i32);
        }
    }
    if eid.is_empty() {
        return Ok(());
    }
    db.exec(
        "UPDATE workflow_step_executions a SET superseded = true
           FROM unnest($1::text[], $2::text[], $3::int4[]) AS t(eid, key, kept)
          WHERE a.execution_id = t.eid AND a.step_key = t.key AND a.attempt > t.kept AND NOT a.superseded",
        &[&eid, &key, &kept],
    )
    .await?;
    Ok(())
}

async fn write_outputs(db: Db<'_, '_>, batches: &[&Batch]) -> Result<()> {
    let mut seen = HashSet::new();
    let (mut hash, mut text, mut bytes, mut at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for b in batches {
        for (h, t) in &b.outputs {
            if seen.insert(h.as_str()) {
                hash.push(h.as_str());
                text.push(&**t);
                bytes.push(t.len() as i64);
                at.push(to_i64(b.now));
            }
        }
    }
    if hash.is_empty() {
        return Ok(());
    }
    db.exec(
        "INSERT INTO step_outputs (hash, text, bytes, created_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
         ON CONFLICT (hash) DO NOTHING",
        &[&hash, &text, &bytes, &at],
    )
    .await?;
    Ok(())
}

async fn write_starts(db: Db<'_, '_>, batches: &[&Batch]) -> Result<()> {
    let mut eid = Vec::new();
    let mut key = Vec::new();
    let mut attempt = Vec::new();
    let mut prompt = Vec::new();
    let mut at = Vec::new();
    let mut now = Vec::new();
    let mut token = Vec::new();
    let mut item = Vec::new();
    for b in batches {
        for s in &b.starts {
            item.push(s.item.map(|i| i as i32));
            eid.push(b.execution_id.as_str());
            key.push(s.key.as_str());
            attempt.push(s.attempt as i32);
            prompt.push(s.prompt.as_str());
            at.push(to_i64(s.at));
            now.push(to_i64(b.now));
            token.push(b.token());
        }
    }
    if eid.is_empty() {
        return Ok(());
    }
    db.exec(
        "INSERT INTO workflow_step_executions (execution_id, step_key, attempt, state, prompt, started_at, updated_at, lease_token, item)
         SELECT eid, key, attempt, 'running', prompt, at, now, token, item
           FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::int8[], $6::int8[], $7::int8[], $8::int4[])
                AS t(eid, key, attempt, prompt, at, now, token, item)",
        &[&eid, &key, &attempt, &prompt, &at, &now, &token, &item],
    )
    .await?;
    Ok(())
}

async fn write_ends(db: Db<'_, '_>, batches: &[&Batch]) -> Result<()> {
    let mut seen = HashSet::new();
    let mut eid = Vec::new();
    let mut key = Vec::new();
    let mut attempt = Vec::new();
    let mut state = Vec::new();
    let mut provider = Vec::new();
    let mut model = Vec::new();
    let mut tokens_in = Vec::new();
    let mut tokens_out = Vec::new();
    let mut cost = Vec::new();
    let mut latency = Vec::new();
    let mut output = Vec::new();
    let mut class = Vec::new();
    let mut error = Vec::new();
    let mut at = Vec::new();
    let mut now = Vec::new();
    for b in batches {
        for e in &b.ends {
            // As on SQLite, the first end of an attempt closes it.
            if !seen.insert((b.execution_id.as_str(), e.key.as_str(), e.attempt)) {
                continue;
            }
            eid.push(b.execution_id.as_str());
            key.push(e.key.as_str());
            attempt.push(e.attempt as i32);
            state.push(e.state.as_str());
            provider.push(e.provider.as_deref());
            model.push(e.model.as_deref());
            tokens_in.push(to_i64(e.tokens_in));
            tokens_out.push(to_i64(e.tokens_out));
            cost.push(e.cost_usd);
            latency.push(opt_i64(e.latency_ms));
            output.push(e.output_hash.as_deref());
            class.push(e.error_class.as_deref());
            error.push(e.error.as_deref());
            at.push(to_i64(e.at));
            now.push(to_i64(b.now));
        }
    }
    if eid.is_empty() {
        return Ok(());
    }
    db.exec(
        "UPDATE workflow_step_executions a
            SET state = t.state, provider = COALESCE(t.provider, a.provider), model = COALESCE(t.model, a.model),
                tokens_in = t.tokens_in, tokens_out = t.tokens_out, cost_usd = t.cost, latency_ms = t.latency,
                output_hash = t.output, error_class = t.class, error = t.error, finished_at = t.at, updated_at = t.now
           FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::text[], $7::int8[],
                       $8::int8[], $9::float8[], $10::int8[], $11::text[], $12::text[], $13::text[], $14::int8[],
                       $15::int8[])
                AS t(eid, key, attempt, state, provider, model, tokens_in, tokens_out, cost, latency, output,
                     class, error, at, now)
          WHERE a.execution_id = t.eid AND a.step_key = t.key AND a.attempt = t.attempt
            AND NOT a.superseded AND a.state = 'running'",
        &[
            &eid,
            &key,
            &attempt,
            &state,
            &provider,
            &model,
            &tokens_in,
            &tokens_out,
            &cost,
            &latency,
            &output,
            &class,
            &error,
            &at,
            &now,
        ],
    )
    .await?;
    Ok(())
}

async fn write_steps(db: Db<'_, '_>, batches: &[&Batch]) -> Result<()> {
    let mut eid = Vec::new();
    let mut key = Vec::new();
    let mut state = Vec::new();
    let mut attempts = Vec::new();
    let mut reason = Vec::new();
    let mut class = Vec::new();
    let mut error = Vec::new();
    let mut output = Vec::new();
    let mut started = Vec::new();
    let mut finished = Vec::new();
    let mut now = Vec::new();
    let mut request = Vec::new();
    let mut items_done = Vec::new();
    let mut items_total = Vec::new();
    for b in batches {
        for s in &b.steps {
            request.push(s.request.as_deref());
            items_done.push(s.items.map(|(d, _)| d as i32));
            items_total.push(s.items.map(|(_, t)| t as i32));
            eid.push(b.execution_id.as_str());
            key.push(s.key.as_str());
            state.push(s.state.as_str());
            attempts.push(s.attempts as i32);
            reason.push(s.reason.as_deref());
            class.push(s.error_class.as_deref());
            error.push(s.error.as_deref());
            output.push(s.output_hash.as_deref());
            started.push(opt_i64(s.started_at));
            finished.push(opt_i64(s.finished_at));
            now.push(to_i64(b.now));
        }
    }
    if eid.is_empty() {
        return Ok(());
    }
    db.exec(
        "UPDATE execution_steps s
            SET state = t.state, attempts = t.attempts, reason = t.reason, error_class = t.class, error = t.error,
                output_hash = t.output, started_at = t.started, finished_at = t.finished, updated_at = t.now,
                request = t.request, items_done = t.items_done, items_total = t.items_total
           FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::text[], $13::int4[], $14::int4[])
                AS t(eid, key, state, attempts, reason, class, error, output, started, finished, now,
                     request, items_done, items_total)
          WHERE s.execution_id = t.eid AND s.step_key = t.key",
        &[
            &eid, &key, &state, &attempts, &reason, &class, &error, &output, &started, &finished, &now,
            &request, &items_done, &items_total,
        ],
    )
    .await?;
    Ok(())
}

async fn write_executions(db: Db<'_, '_>, batches: &[&Batch]) -> Result<()> {
    let mut eid = Vec::new();
    let mut state = Vec::new();
    let mut reason = Vec::new();
    let mut started = Vec::new();
    let mut finished = Vec::new();
    let mut now = Vec::new();
    let mut settles = Vec::new();
    let mut wake = Vec::new();
    for b in batches {
        if let Some(u) = &b.execution {
            wake.push(opt_i64(u.wake_at));
            eid.push(b.execution_id.as_str());
            state.push(u.state.as_str());
            reason.push(u.reason.as_deref());
            started.push(opt_i64(u.started_at));
            finished.push(opt_i64(u.finished_at));
            now.push(to_i64(b.now));
            settles.push(b.settles());
        }
    }
    if eid.is_empty() {
        return Ok(());
    }
    db.exec(
        "UPDATE workflow_executions e
            SET state = t.state, reason = t.reason, started_at = COALESCE(e.started_at, t.started),
                finished_at = t.finished, updated_at = t.now,
                queued_at = CASE WHEN t.settles THEN NULL ELSE e.queued_at END, wake_at = t.wake
           FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::bool[], $8::int8[])
                AS t(eid, state, reason, started, finished, now, settles, wake)
          WHERE e.id = t.eid",
        &[&eid, &state, &reason, &started, &finished, &now, &settles, &wake],
    )
    .await?;
    Ok(())
}

/// Returns the checkpoint row written for each execution.
async fn write_checkpoints<'b>(
    db: Db<'_, '_>,
    batches: &[&'b Batch],
) -> Result<HashMap<&'b str, i64>> {
    let mut eid = Vec::new();
    let mut kind = Vec::new();
    let mut visible = Vec::new();
    let mut data = Vec::new();
    let mut completed = Vec::new();
    let mut now = Vec::new();
    let mut token = Vec::new();
    for b in batches {
        if let Some((cp, vis, done)) = &b.checkpoint {
            eid.push(b.execution_id.as_str());
            kind.push(cp.kind());
            visible.push(*vis);
            data.push(cp.to_json()?);
            completed.push((*done).min(i32::MAX as u64) as i32);
            now.push(to_i64(b.now));
            token.push(b.token());
        }
    }
    if eid.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = db
        .query(
            "INSERT INTO workflow_checkpoints (execution_id, kind, visible, data, completed_steps, created_at, lease_token)
             SELECT eid, kind, visible, data::jsonb, completed, now, token
               FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::int4[], $6::int8[], $7::int8[])
                    AS t(eid, kind, visible, data, completed, now, token)
             RETURNING id, execution_id",
            &[&eid, &kind, &visible, &data, &completed, &now, &token],
        )
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let execution: String = r.get(1);
        if let Some(b) = batches.iter().find(|b| b.execution_id == execution) {
            out.insert(b.execution_id.as_str(), r.get::<_, i64>(0));
        }
    }
    Ok(out)
}

async fn write_events(
    db: Db<'_, '_>,
    batches: &[&Batch],
    checkpoints: &HashMap<&str, i64>,
) -> Result<()> {
    let mut eid = Vec::new();
    let mut at = Vec::new();
    let mut kind = Vec::new();
    let mut step = Vec::new();
    let mut state = Vec::new();
    let mut attempt = Vec::new();
    let mut message = Vec::new();
    let mut data = Vec::new();
    let mut token = Vec::new();
    for b in batches {
        let checkpoint = checkpoints.get(b.execution_id.as_str()).copied();
        for e in &b.events {
            token.push(b.token());
            eid.push(b.execution_id.as_str());
            at.push(to_i64(e.at));
            kind.push(e.kind);
            step.push(e.step.as_deref());
            state.push(e.state.as_deref());
            attempt.push(e.attempt.map(|a| a as i32));
            message.push(e.message.as_deref());
            data.push(Batch::event_data(e, checkpoint).map(|d| d.to_string()));
        }
    }
    if eid.is_empty() {
        return Ok(());
    }
    db.exec(
        "INSERT INTO workflow_events (execution_id, at, type, step_key, state, attempt, message, data, lease_token)
         SELECT eid, at, kind, step, state, attempt, message, data::jsonb, token
           FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::text[],
                       $8::text[], $9::int8[])
                AS t(eid, at, kind, step, state, attempt, message, data, token)",
        &[&eid, &at, &kind, &step, &state, &attempt, &message, &data, &token],
    )
    .await?;
    Ok(())
}
