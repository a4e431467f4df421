//! Forward-only migrations, embedded from the top-level `migrations/` folder and
//! tracked in `schema_migrations`.

use anyhow::{Result, bail};
use rusqlite::Connection;

/// (version, name, SQL) in order. Append only; never edit a released migration.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "0001_workflows",
    include_str!("../../../migrations/0001_workflows.sql"),
)];

pub fn apply(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        bail!(
            "the database has schema version {current}, newer than this ax knows ({latest}); use a newer ax or another --db"
        );
    }
    for &(version, name, sql) in MIGRATIONS {
        if version <= current {
            continue;
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)
            .map_err(|e| anyhow::anyhow!("migration {name} failed: {e}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, super::now_ms() as i64],
        )?;
        tx.commit()?;
    }
    Ok(())
}
