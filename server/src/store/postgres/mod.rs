//! The PostgreSQL backend: one database shared by many ax processes on many
//! hosts.
//!
//! tokio-postgres with a deadpool-postgres pool: an async driver (no thread
//! per connection), prepared statements cached per connection, pipelining, and
//! LISTEN/NOTIFY on a plain connection. sqlx would add compile-time query
//! checking, which needs a live database or checked-in query data at build
//! time; ax's queries are few and tested against a real server instead.
//!
//! Engine batches are group-committed as on SQLite, and more so: the batches
//! that queue while a commit is in flight are written together with one
//! multi-row statement per table (`unnest` of arrays), so a group of 200 steps
//! costs about ten round trips and one fsync, not two thousand round trips.

mod commit;
mod db;
mod gauges;
mod inbox;
mod listen;
mod migrate;
mod queries;

use super::model::*;
use super::owner::{Claim, Claimed, Control, Lease, Owner, Wake};
use anyhow::{Context as _, Result, anyhow};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};

/// A handle to one PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    describe: String,
    commits: mpsc::UnboundedSender<commit::Job>,
    /// How to open the wake-up connection.
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// Wake-ups, once someone asked for them; the listener stops when the
    /// store (and with it the stop sender) is dropped.
    wakeups: std::sync::OnceLock<(broadcast::Sender<Wake>, oneshot::Sender<()>)>,
}

/// Connections per process (`AX_PG_POOL`): readers, committers and maintenance share them.
const DEFAULT_POOL: usize = 16;
/// How long the server lets a session of ours sit idle inside a
/// transaction before ending it (less than the default lease, so that a
/// cut-off owner's row locks are gone by the time its lease runs out; with a
/// shorter lease its runs are taken over this long after the cut).
const IDLE_TX_MS: u64 = 5_000;
/// Transactions that group-commit engine batches at the same time.
const COMMITTERS: usize = 2;

impl PgStore {
    /// Connect, bring the schema up to date, start the committers.
    pub async fn open(url: &str) -> Result<PgStore> {
        let describe = redact(url);
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            anyhow!(
                "{describe} is not a usable PostgreSQL URL ({e}); write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            )
        })?;
        if config.get_application_name().is_none() {
            config.application_name("ax");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A peer that vanished (host down, network cut) is noticed in seconds,
        // not after the kernel's default of minutes.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(15));
        // A process cut off in the middle of a transaction would keep its row
        // locks until the server's TCP gives up (hours), and no other worker
        // could claim those runs: the server ends such a session after
        // IDLE_TX_MS. ax's transactions never wait on the client longer.
        // Options given in the URL come after, so they win.
        let user_options = config.get_options().unwrap_or_default().to_owned();
        config.options(
            format!("-c idle_in_transaction_session_timeout={IDLE_TX_MS} {user_options}").trim(),
        );
        let tls = tls_connector()?;
        let size = std::env::var("AX_PG_POOL")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n >= 2)
            .unwrap_or(DEFAULT_POOL);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .context("cannot create the PostgreSQL connection pool")?;
        {
            let mut client = pool.get().await.map_err(|e| {
                anyhow!(
                    "cannot connect to {describe}: {} (is the server running, and may this user connect?)",
                    pool_error_text(&e)
                )
            })?;
            migrate::apply(&mut client)
                .await
                .with_context(|| format!("while migrating {describe}"))?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..COMMITTERS {
            tokio::spawn(commit::committer(pool.clone(), rx.clone()));
        }
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                describe,
                commits: tx,
                config,
                tls,
                wakeups: std::sync::OnceLock::new(),
            }),
        })
    }

    pub fn describe(&self) -> &str {
        &self.inner.describe
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object> {
        self.inner.pool.get().await.map_err(|e| {
            anyhow!(
                "cannot reach the database {}: {}",
                self.inner.describe,
                pool_error_text(&e)
            )
        })
    }

    /// Wake-ups from the database (LISTEN/NOTIFY on a connection of its
    /// own, opened on the first call and reopened when it breaks).
    pub fn wakeups(&self) -> broadcast::Receiver<Wake> {
        let (tx, _) = self.inner.wakeups.get_or_init(|| {
            let (tx, _) = broadcast::channel(1024);
            let (stop, stopped) = oneshot::channel();
            tokio::spawn(listen::run(
                self.inner.config.clone(),
                self.inner.tls.clone(),
                self.inner.describe.clone(),
                tx.clone(),
                stopped,
            ));
            (tx, stop)
        });
        tx.subscribe()
    }

    // ------------------------------------------------------------ the interface

    pub async fn ping(&self) -> Result<()> {
        let c = self.conn().await?;
        c.query_one("SELECT 1", &[]).await.map_err(db_err)?;
        Ok(())
    }

    pub async fn insert_workflow(&self, w: WorkflowRows) -> Result<WorkflowRecord> {
        let mut c = self.conn().await?;
        queries::insert_workflow(&mut c, &w).await
    }

    pub async fn get_workflow(
        &self,
        id: &str,
        with_source: bool,
    ) -> Result<Option<WorkflowRecord>> {
        let c = self.conn().await?;
        queries::get_workflow(&c, id, with_source).await
    }

    pub async fn find_workflow(
        &self,
        filename: Option<&str>,
        name: Option<&str>,
    ) -> Result<Option<WorkflowRecord>> {
        let c = self.conn().await?;
        queries::find_workflow(&c, filename, name).await
    }

    pub async fn list_workflows(&self, limit: u32) -> Result<Vec<WorkflowRecord>> {
        let c = self.conn().await?;
        queries::list_workflows(&c, limit).await
    }

    pub async fn delete_workflow(&self, id: &str) -> Result<DeleteOutcome> {
        let mut c = self.conn().await?;
        queries::delete_workflow(&mut c, id).await
    }

    pub async fn insert_execution(
        &self,
        e: NewExecution,
        claim: Option<(Owner, u64)>,
        then: Option<Batch>,
    ) -> Result<(Option<Lease>, Option<i64>)> {
        let mut c = self.conn().await?;
        queries::insert_execution(&mut c, &e, claim.as_ref().map(|(o, l)| (o, *l)), then).await
    }

    pub async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRecord>> {
        let c = self.conn().await?;
        queries::get_execution(&c, id).await
    }

    pub async fn list_executions(&self, f: ExecutionFilter) -> Result<Vec<ExecutionRecord>> {
        let c = self.conn().await?;
        queries::list_executions(&c, &f).await
    }

    pub async fn find_execution_ids(&self, prefix: &str) -> Result<Vec<String>> {
        let c = self.conn().await?;
        queries::find_execution_ids(&c, prefix).await
    }

    pub async fn execution_steps(&self, id: &str, with_output: bool) -> Result<Vec<StepRecord>> {
        let c = self.conn().await?;
        queries::execution_steps(&c, id, with_output).await
    }

    pub async fn execution_step(&self, id: &str, key: &str) -> Result<Option<StepRecord>> {
        let c = self.conn().await?;
        queries::execution_step(&c, id, key).await
    }

    pub async fn workflow_stats(&self, only: Option<&str>) -> Result<Vec<WorkflowStatsRow>> {
        let c = self.conn().await?;
        queries::workflow_stats(&c, only).await
    }

    pub async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>> {
        let c = self.conn().await?;
        queries::attempts(&c, id).await
    }

    pub async fn events_after(&self, id: &str, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        let c = self.conn().await?;
        queries::events_after(&c, id, after, limit).await
    }

    /// Queue a batch for the committers, then run its maintenance (on its own
    /// connection, so other executions' commits go on meanwhile).
    pub async fn commit(&self, batch: Batch, after: Option<Maintenance>) -> Result<Option<i64>> {
        let (reply, rx) = oneshot::channel();
        let execution_id = batch.execution_id.clone();
        self.inner
            .commits
            .send(commit::Job {
                batch: Box::new(batch),
                reply,
            })
            .map_err(|_| anyhow!("the database committer has stopped"))?;
        let result = rx
            .await
            .map_err(|_| anyhow!("the database committer dropped a commit"))?;
        if let (Ok(_), Some(m)) = (&result, after) {
            let r = async {
                let mut c = self.conn().await?;
                queries::maintain(&mut c, &execution_id, m).await
            }
            .await;
            if let Err(e) = r {
                tracing::warn!(execution = %execution_id, "checkpoint retention failed (retried later): {e:#}");
            }
        }
        result
    }

    pub async fn checkpoint_execution(&self, row: i64) -> Result<Option<String>> {
        let c = self.conn().await?;
        queries::checkpoint_execution(&c, row).await
    }

    pub async fn checkpoint_state(&self, id: &str, until: Option<i64>) -> Result<CheckpointState> {
        let c = self.conn().await?;
        queries::checkpoint_state(&c, id, until).await
    }

    pub async fn list_checkpoints(&self, id: &str) -> Result<Vec<CheckpointRecord>> {
        let c = self.conn().await?;
        queries::list_checkpoints(&c, id).await
    }

    pub async fn prune(&self, o: PruneOptions) -> Result<PruneReport> {
        let mut c = self.conn().await?;
        queries::prune(&mut c, &o).await
    }

    pub async fn check(&self) -> Result<String> {
        let c = self.conn().await?;
        queries::check(&c).await
    }

    pub async fn footprint(&self) -> Result<Footprint> {
        let c = self.conn().await?;
        queries::footprint(&c).await
    }

    pub async fn claim(
        &self,
        id: &str,
        me: &Owner,
        now: u64,
        lease_ms: u64,
        drive: bool,
    ) -> Result<Claim> {
        let mut c = self.conn().await?;
        queries::claim(&mut c, id, me, now, lease_ms, drive).await
    }

    pub async fn claim_work(
        &self,
        me: &Owner,
        limit: usize,
        now: u64,
        lease_ms: u64,
        orphans: bool,
    ) -> Result<Vec<Claimed>> {
        let mut c = self.conn().await?;
        queries::claim_work(&mut c, me, limit, now, lease_ms, orphans).await
    }

    pub async fn renew(
        &self,
        me: &Owner,
        held: Vec<(String, i64)>,
        now: u64,
        lease_ms: u64,
    ) -> Result<Vec<String>> {
        let c = self.conn().await?;
        queries::renew(&c, me, &held, now, lease_ms).await
    }

    pub async fn release(&self, lease: &Lease) -> Result<()> {
        let c = self.conn().await?;
        queries::release(&c, lease).await
    }

    pub async fn cache_get(
        &self,
        key: &str,
        now: u64,
        max_age_ms: Option<u64>,
    ) -> Result<Option<CachedAnswer>> {
        let c = self.conn().await?;
        queries::cache_get(&c, key, now, max_age_ms).await
    }

    pub async fn cache_put(&self, answer: CachedAnswer) -> Result<()> {
        let c = self.conn().await?;
        queries::cache_put(&c, &answer).await
    }

    pub async fn cache_stats(&self) -> Result<CacheStats> {
        let c = self.conn().await?;
        queries::cache_stats(&c).await
    }

    pub async fn cache_clear(&self, before: Option<u64>) -> Result<u64> {
        let c = self.conn().await?;
        queries::cache_clear(&c, before).await
    }

    pub async fn set_budget(&self, id: &str, budget: ax_core::Budget, now: u64) -> Result<bool> {
        let c = self.conn().await?;
        queries::set_budget(&c, id, budget, now).await
    }

    pub async fn set_queued(&self, id: &str, queued: bool, now: u64) -> Result<()> {
        let c = self.conn().await?;
        queries::set_queued(&c, id, queued, now).await
    }

    pub async fn request_control(
        &self,
        id: &str,
        control: Control,
        now: u64,
    ) -> Result<Option<i64>> {
        let c = self.conn().await?;
        queries::request_control(&c, id, control, now).await
    }

    pub async fn take_controls(&self, me: &Owner) -> Result<Vec<(String, Control)>> {
        let c = self.conn().await?;
        queries::take_controls(&c, me).await
    }

    pub async fn withdraw_control(&self, id: &str, at: u64) -> Result<()> {
        let c = self.conn().await?;
        queries::withdraw_control(&c, id, at).await
    }

    pub async fn interrupt_orphans(&self, me: &Owner, now: u64) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        queries::interrupt_orphans(&mut c, me, now).await
    }

    pub async fn leases(&self, id: &str) -> Result<Vec<LeaseRecord>> {
        let c = self.conn().await?;
        queries::leases(&c, id).await
    }
}

/// TLS when the server offers it (`sslmode=prefer`, the default) or requires it
/// (`sslmode=require`): the web's root certificates, plus the PEM file in
/// `AX_PG_CA_FILE` for a private certificate authority.
fn tls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = std::env::var_os("AX_PG_CA_FILE").filter(|p| !p.is_empty()) {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .and_then(|it| it.collect())
            .map_err(|e| {
                anyhow!(
                    "AX_PG_CA_FILE={}: not a readable PEM certificate file ({e})",
                    std::path::Path::new(&path).display()
                )
            })?;
        for cert in certs {
            roots.add(cert).map_err(|e| {
                anyhow!(
                    "AX_PG_CA_FILE={}: a certificate is not usable ({e})",
                    std::path::Path::new(&path).display()
                )
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| anyhow!("TLS set-up failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The URL without its password (for logs and messages).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// A database error with the server's own message, code and detail.
pub(crate) fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!(": {d}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}

pub(crate) fn db_err(e: tokio_postgres::Error) -> anyhow::Error {
    anyhow!("database error: {}", error_text(&e))
}

fn pool_error_text(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => error_text(pg),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://ax@h:5432/db"), "postgres://ax@h:5432/db");
        assert_eq!(
            redact("postgres://ax:s3cr@t@h/db?sslmode=require"),
            "postgres://ax:***@h/db?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://h/db?user=ax&password=x"),
            "postgresql://h/db?user=ax&password=***"
        );
        assert_eq!(redact("postgres://h"), "postgres://h");
    }
}
