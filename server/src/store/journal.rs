//! The checkpoint journal, folded the same way for every backend: `full`
//! snapshots and `delta`s (the steps that changed since the previous row).

use super::model::CheckpointRecord;
use anyhow::{Context as _, Result, anyhow, bail};
use ax_core::checkpoint::{Checkpoint, CheckpointDelta};

/// One row of `workflow_checkpoints`.
pub struct JournalRow {
    pub id: i64,
    pub kind: String,
    pub visible: bool,
    pub data: String,
    pub created_at: u64,
}

impl JournalRow {
    pub fn is_full(&self) -> bool {
        self.kind == "full"
    }
}

/// Apply one journal row to the state folded so far.
pub fn fold(cp: &mut Option<Checkpoint>, row: &JournalRow) -> Result<()> {
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

/// Fold rows (a full snapshot first) into one checkpoint.
pub fn fold_all(execution_id: &str, rows: &[JournalRow]) -> Result<Checkpoint> {
    let mut cp = None;
    for row in rows {
        fold(&mut cp, row)?;
    }
    cp.ok_or_else(|| anyhow!("execution {execution_id} has no checkpoint"))
}

/// The restore points among all of an execution's rows, newest first (one pass).
pub fn restore_points(execution_id: &str, rows: &[JournalRow]) -> Result<Vec<CheckpointRecord>> {
    let mut out = Vec::new();
    let mut cp: Option<Checkpoint> = None;
    for row in rows {
        fold(&mut cp, row)?;
        if let (true, Some(c)) = (row.visible, &cp) {
            out.push(CheckpointRecord {
                id: row.id.to_string(),
                execution_id: execution_id.to_owned(),
                created_at: row.created_at,
                state: c.header.state.as_str().to_owned(),
                completed_steps: c.completed_steps(),
            });
        }
    }
    out.reverse();
    Ok(out)
}

/// The error for a journal with no full snapshot at or before a row.
pub fn no_base(execution_id: &str) -> anyhow::Error {
    anyhow!(
        "execution {execution_id} has no base checkpoint (its history was pruned past this point)"
    )
}
