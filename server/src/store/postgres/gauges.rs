//! `GET /metrics`'s figures on PostgreSQL (see `store::gauges`).

use super::PgStore;
use super::db::Db;
use crate::store::gauges::{BY_STATE_SQL, Gauges, QUEUED_SQL};
use anyhow::Result;

impl PgStore {
    pub async fn gauges(&self) -> Result<Gauges> {
        let c = self.conn().await?;
        let rows = Db::Conn(&c).query(BY_STATE_SQL, &[]).await?;
        let by_state = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
            .collect();
        let queued: i64 = Db::Conn(&c).one(QUEUED_SQL, &[]).await?.get(0);
        Ok(Gauges {
            by_state,
            queued: queued.max(0) as u64,
        })
    }
}
