//! The execution inbox on SQLite (see `store::inbox`).

use super::SqliteStore;
use crate::store::inbox::{InboxMessage, MessageKind, MessageOutcome, NewMessage};
use crate::store::model::to_i64;
use crate::store::owner::Owner;
use anyhow::Result;
use rusqlite::{OptionalExtension, params};

impl SqliteStore {
    pub async fn deliver(&self, id: &str, m: NewMessage, now: u64) -> Result<i64> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute(
                "INSERT INTO execution_inbox (execution_id, kind, step_key, attempt, payload, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    m.kind.as_str(),
                    m.step,
                    m.attempt,
                    m.payload.to_string(),
                    to_i64(now)
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    pub async fn take_messages(&self, id: &str, me: &Owner, now: u64) -> Result<Vec<InboxMessage>> {
        let (id, me) = (id.to_owned(), me.clone());
        self.write(move |c| {
            // Cheap check first: this runs every poll interval.
            let any: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM execution_inbox WHERE execution_id = ?1 AND taken_at IS NULL)",
                [&id],
                |r| r.get(0),
            )?;
            if !any {
                return Ok(Vec::new());
            }
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let owner: Option<String> = tx
                .query_row(
                    "SELECT owner FROM workflow_executions WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            if owner.as_deref() != Some(me.id.as_str()) {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            {
                let mut stmt = tx.prepare(
                    "SELECT id, kind, step_key, attempt, payload, created_at FROM execution_inbox
                      WHERE execution_id = ?1 AND taken_at IS NULL ORDER BY id",
                )?;
                let rows = stmt.query_map([&id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })?;
                for row in rows {
                    let (mid, kind, step, attempt, payload, at) = row?;
                    let Some(kind) = MessageKind::parse(&kind) else {
                        continue;
                    };
                    out.push(InboxMessage {
                        id: mid,
                        kind,
                        step,
                        attempt: attempt.map(|a| a.max(0) as u32),
                        payload: serde_json::from_str(&payload).unwrap_or_default(),
                        created_at: at.max(0) as u64,
                    });
                }
            }
            tx.execute(
                "UPDATE execution_inbox SET taken_at = ?2 WHERE execution_id = ?1 AND taken_at IS NULL",
                params![id, to_i64(now)],
            )?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    pub async fn with_messages(&self, me: &Owner) -> Result<Vec<String>> {
        let me = me.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT i.execution_id FROM execution_inbox i
                   JOIN workflow_executions e ON e.id = i.execution_id
                  WHERE i.taken_at IS NULL AND e.owner = ?1",
            )?;
            let rows = stmt.query_map([&me.id], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    pub async fn settle_message(&self, row: i64, outcome: MessageOutcome, now: u64) -> Result<()> {
        self.write(move |c| {
            let (outcome, status, error) = match outcome {
                MessageOutcome::Accepted => ("accepted", None, None),
                MessageOutcome::Refused { status, error } => ("refused", Some(status), Some(error)),
            };
            c.execute(
                "UPDATE execution_inbox SET outcome = ?2, status = ?3, error = ?4,
                        taken_at = COALESCE(taken_at, ?5) WHERE id = ?1",
                params![row, outcome, status, error, to_i64(now)],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn message_outcome(&self, row: i64) -> Result<Option<MessageOutcome>> {
        self.read(move |c| {
            let r: Option<(Option<String>, Option<i64>, Option<String>)> = c
                .query_row(
                    "SELECT outcome, status, error FROM execution_inbox WHERE id = ?1",
                    [row],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            Ok(match r {
                Some((Some(o), status, error)) if o == "refused" => Some(MessageOutcome::Refused {
                    status: status.unwrap_or(409).clamp(100, 599) as u16,
                    error: error.unwrap_or_default(),
                }),
                Some((Some(_), _, _)) => Some(MessageOutcome::Accepted),
                _ => None,
            })
        })
        .await
    }

    pub async fn due_waiting(&self, now: u64, limit: u32) -> Result<Vec<String>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT id FROM workflow_executions
                  WHERE wake_at IS NOT NULL AND wake_at <= ?1 AND state = 'waiting'
                  ORDER BY wake_at LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![to_i64(now), limit], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
}
