//! Forward-only migrations, embedded from `migrations/postgres/` and tracked in
//! `schema_migrations`, applied under an advisory lock: ten processes starting
//! at once on a fresh database take turns, and all but the first find the
//! schema in place.

use anyhow::{Context as _, Result, bail};
use tokio_postgres::Client;

/// (version, name, SQL) in order, the same versions as `migrations/sqlite/`.
/// Append only; never edit a released migration.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_workflows",
        include_str!("../../../../migrations/postgres/0001_workflows.sql"),
    ),
    (
        2,
        "0002_leases",
        include_str!("../../../../migrations/postgres/0002_leases.sql"),
    ),
    (
        3,
        "0003_waiting",
        include_str!("../../../../migrations/postgres/0003_waiting.sql"),
    ),
    (
        4,
        "0004_flow",
        include_str!("../../../../migrations/postgres/0004_flow.sql"),
    ),
    (
        5,
        "0005_cost",
        include_str!("../../../../migrations/postgres/0005_cost.sql"),
    ),
    (
        6,
        "0006_wakeups",
        include_str!("../../../../migrations/postgres/0006_wakeups.sql"),
    ),
];

/// The advisory lock key that serializes migrations ("ax-migr" in ASCII).
const LOCK_KEY: i64 = 0x0061_782d_6d69_6772;

pub async fn apply(client: &mut Client) -> Result<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .context("cannot take the migration lock")?;
    let result = apply_locked(client).await;
    // A session lock: released here, or by the server if this process dies.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result?;
    unlock.context("cannot release the migration lock")?;
    Ok(())
}

async fn apply_locked(client: &mut Client) -> Result<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    bigint PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at bigint NOT NULL
             )",
        )
        .await?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
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
        let tx = client.transaction().await?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| anyhow::anyhow!("migration {name} failed: {}", super::error_text(&e)))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&version, &name, &(crate::store::now_ms() as i64)],
        )
        .await?;
        tx.commit().await?;
        tracing::info!("applied migration {name}");
    }
    Ok(())
}
