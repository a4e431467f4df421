//! `GET /metrics`'s figures on SQLite (see `store::gauges`).

use super::SqliteStore;
use crate::store::gauges::{BY_STATE_SQL, Gauges, QUEUED_SQL};
use anyhow::Result;

impl SqliteStore {
    pub async fn gauges(&self) -> Result<Gauges> {
        self.read(|c| {
            let mut stmt = c.prepare(BY_STATE_SQL)?;
            let by_state = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let queued: i64 = c.query_row(QUEUED_SQL, [], |r| r.get(0))?;
            Ok(Gauges {
                by_state,
                queued: queued.max(0) as u64,
            })
        })
        .await
    }
}
