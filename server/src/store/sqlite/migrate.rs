//! Forward-only migrations, embedded from `migrations/sqlite/` and tracked in
//! `schema_migrations`.

use anyhow::{Result, bail};
use rusqlite::{Connection, TransactionBehavior};

/// (version, name, SQL) in order. Append only; never edit a released migration.
/// `migrations/postgres/` has the same versions.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_workflows",
        include_str!("../../../../migrations/sqlite/0001_workflows.sql"),
    ),
    (
        2,
        "0002_leases",
        include_str!("../../../../migrations/sqlite/0002_leases.sql"),
    ),
    (
        3,
        "0003_waiting",
        include_str!("../../../../migrations/sqlite/0003_waiting.sql"),
    ),
    (
        4,
        "0004_flow",
        include_str!("../../../../migrations/sqlite/0004_flow.sql"),
    ),
    (
        5,
        "0005_cost",
        include_str!("../../../../migrations/sqlite/0005_cost.sql"),
    ),
    (
        6,
        "0006_wakeups",
        include_str!("../../../../migrations/sqlite/0006_wakeups.sql"),
    ),
];

/// Bring the schema up to date. The version check and every pending migration
/// run in one `BEGIN IMMEDIATE` transaction: a second process opening a fresh
/// file at the same moment waits for the first (busy timeout) and then finds
/// the schema in place, instead of failing on `CREATE TABLE`.
pub fn apply(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )?;
    let current: i64 = tx.query_row(
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
        tx.execute_batch(sql)
            .map_err(|e| anyhow::anyhow!("migration {name} failed: {e}"))?;
        if sql.contains("writable_schema") {
            reload_schema(&tx, name)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, crate::store::now_ms() as i64],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// After a migration that edited the stored schema text (a widened CHECK):
/// check that the edit took, and bump `schema_version` so that every
/// connection, this one included, parses the schema again.
fn reload_schema(tx: &rusqlite::Transaction<'_>, name: &str) -> Result<()> {
    let edited: i64 = tx.query_row(
        "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'workflow_executions' AND sql LIKE '%''waiting''%'",
        [],
        |r| r.get(0),
    )?;
    if edited != 1 {
        bail!("migration {name} failed: the executions table's state check was not widened");
    }
    let version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    tx.execute_batch(&format!("PRAGMA schema_version = {}", version + 1))?;
    Ok(())
}
