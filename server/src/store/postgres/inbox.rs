//! The execution inbox on PostgreSQL (see `store::inbox`).

use super::PgStore;
use super::db::Db;
use crate::store::inbox::{InboxMessage, MessageKind, MessageOutcome, NewMessage};
use crate::store::model::to_i64;
use crate::store::owner::Owner;
use anyhow::Result;

impl PgStore {
    pub async fn deliver(&self, id: &str, m: NewMessage, now: u64) -> Result<i64> {
        let c = self.conn().await?;
        let attempt = m.attempt.map(|a| a as i32);
        let row = Db::Conn(&c)
            .one(
                "INSERT INTO execution_inbox (execution_id, kind, step_key, attempt, payload, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[&id, &m.kind.as_str(), &m.step, &attempt, &m.payload, &to_i64(now)],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn take_messages(&self, id: &str, me: &Owner, now: u64) -> Result<Vec<InboxMessage>> {
        let c = self.conn().await?;
        // One statement: the owner only, each message once.
        let rows = Db::Conn(&c)
            .query(
                "UPDATE execution_inbox i SET taken_at = $3
                   FROM workflow_executions e
                  WHERE i.execution_id = $1 AND i.taken_at IS NULL
                    AND e.id = i.execution_id AND e.owner = $2
                 RETURNING i.id, i.kind, i.step_key, i.attempt, i.payload, i.created_at",
                &[&id, &me.id, &to_i64(now)],
            )
            .await?;
        let mut out: Vec<InboxMessage> = rows
            .iter()
            .filter_map(|r| {
                Some(InboxMessage {
                    id: r.get(0),
                    kind: MessageKind::parse(r.get::<_, &str>(1))?,
                    step: r.get(2),
                    attempt: r.get::<_, Option<i32>>(3).map(|a| a.max(0) as u32),
                    payload: r.get(4),
                    created_at: r.get::<_, i64>(5).max(0) as u64,
                })
            })
            .collect();
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    pub async fn with_messages(&self, me: &Owner) -> Result<Vec<String>> {
        let c = self.conn().await?;
        let rows = Db::Conn(&c)
            .query(
                "SELECT DISTINCT i.execution_id FROM execution_inbox i
                   JOIN workflow_executions e ON e.id = i.execution_id
                  WHERE i.taken_at IS NULL AND e.owner = $1",
                &[&me.id],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn settle_message(&self, row: i64, outcome: MessageOutcome, now: u64) -> Result<()> {
        let c = self.conn().await?;
        let (outcome, status, error) = match outcome {
            MessageOutcome::Accepted => ("accepted", None, None),
            MessageOutcome::Refused { status, error } => {
                ("refused", Some(i32::from(status)), Some(error))
            }
        };
        Db::Conn(&c)
            .exec(
                "UPDATE execution_inbox SET outcome = $2, status = $3, error = $4,
                        taken_at = COALESCE(taken_at, $5) WHERE id = $1",
                &[&row, &outcome, &status, &error, &to_i64(now)],
            )
            .await?;
        Ok(())
    }

    pub async fn message_outcome(&self, row: i64) -> Result<Option<MessageOutcome>> {
        let c = self.conn().await?;
        let r = Db::Conn(&c)
            .opt(
                "SELECT outcome, status, error FROM execution_inbox WHERE id = $1",
                &[&row],
            )
            .await?;
        Ok(r.and_then(|r| {
            let outcome: Option<String> = r.get(0);
            match outcome.as_deref() {
                Some("refused") => Some(MessageOutcome::Refused {
                    status: r.get::<_, Option<i32>>(1).unwrap_or(409).clamp(100, 599) as u16,
                    error: r.get::<_, Option<String>>(2).unwrap_or_default(),
                }),
                Some(_) => Some(MessageOutcome::Accepted),
                None => None,
            }
        }))
    }

    pub async fn due_waiting(&self, now: u64, limit: u32) -> Result<Vec<String>> {
        let c = self.conn().await?;
        let rows = Db::Conn(&c)
            .query(
                "SELECT id FROM workflow_executions
                  WHERE wake_at IS NOT NULL AND wake_at <= $1 AND state = 'waiting'
                  ORDER BY wake_at LIMIT $2",
                &[&to_i64(now), &i64::from(limit)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
