//! Storage: one interface, two backends. SQLite (a file on one machine, the
//! embedded default) and PostgreSQL (shared by many ax processes on many hosts).
//! The engine, the API and the CLI call the typed methods of [`Store`] and do
//! not know which backend they have; SQL lives only below this module.
//!
//! Every multi-row change is one transaction: a step's transition, its event,
//! its output and the checkpoint delta commit together, before the engine acts
//! on them. Both backends group-commit engine batches: batches that many
//! executions queue at the same moment share one transaction.
//!
//! `Store` is an enum over the two concrete stores rather than a trait object:
//! the set of backends is closed, every method is async (a `dyn` trait would
//! box a future per call), and a `match` in each method makes the compiler
//! check that both backends implement the whole interface.

pub mod gauges;
pub mod inbox;
pub mod journal;
pub mod model;
pub mod owner;
pub mod postgres;
pub mod sqlite;

pub use gauges::Gauges;
pub use inbox::*;
pub use model::*;
pub use owner::*;
pub use postgres::PgStore;
pub use sqlite::{Durability, SqliteStore};

use anyhow::{Result, anyhow, bail};
use std::path::{Path, PathBuf};

/// Where the data lives: `--db` / `AX_DB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl DbTarget {
    /// A `postgres://…` URL selects PostgreSQL; anything else is a SQLite path.
    pub fn parse(s: &str) -> Result<DbTarget> {
        let t = s.trim();
        if t.is_empty() {
            bail!("the database is empty: give a file path or a postgres:// URL");
        }
        let lower = t.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(DbTarget::Postgres(t.to_owned()));
        }
        if let Some((scheme, _)) = t.split_once("://") {
            bail!(
                "unsupported database URL scheme `{scheme}://`: use a file path (SQLite) or postgres://USER@HOST:PORT/DB"
            );
        }
        Ok(DbTarget::Sqlite(PathBuf::from(t)))
    }

    /// `$AX_DB`, else the SQLite file in the user's data directory.
    pub fn from_env_or_default() -> Result<DbTarget> {
        match std::env::var("AX_DB") {
            Ok(v) if !v.trim().is_empty() => DbTarget::parse(&v),
            _ => Ok(DbTarget::Sqlite(default_db_path())),
        }
    }

    /// For logs and messages: a path, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            DbTarget::Sqlite(p) => p.display().to_string(),
            DbTarget::Postgres(url) => postgres::redact(url),
        }
    }

    /// As given on a command line (for a child `ax` process).
    pub fn as_arg(&self) -> std::ffi::OsString {
        match self {
            DbTarget::Sqlite(p) => p.clone().into_os_string(),
            DbTarget::Postgres(url) => url.into(),
        }
    }
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Call the same method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Open (creating the schema if needed) the database `target` names.
    pub async fn open(target: &DbTarget) -> Result<Store> {
        match target {
            DbTarget::Sqlite(path) => {
                let path = path.clone();
                let durability = Durability::from_env();
                tokio::task::spawn_blocking(move || SqliteStore::open(&path, durability))
                    .await
                    .map_err(|e| anyhow!("opening the database failed: {e}"))?
                    .map(Store::Sqlite)
            }
            DbTarget::Postgres(url) => PgStore::open(url).await.map(Store::Postgres),
        }
    }

    /// Open a SQLite file (blocking; benchmarks and tools).
    pub fn open_sqlite(path: &Path, durability: Durability) -> Result<Store> {
        SqliteStore::open(path, durability).map(Store::Sqlite)
    }

    /// For logs: the file, or the server and database (no password).
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => format!("SQLite {}", s.path().display()),
            Store::Postgres(s) => format!("PostgreSQL {}", s.describe()),
        }
    }

    /// The SQLite file, if this is SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Store::Sqlite(s) => Some(s.path()),
            Store::Postgres(_) => None,
        }
    }

    /// Does the database answer?
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self.ping())
    }

    // ------------------------------------------------------------ workflows

    /// Store a valid workflow (steps and dependencies too); an identical source
    /// already stored is returned instead.
    pub async fn insert_workflow(&self, w: NewWorkflow) -> Result<WorkflowRecord> {
        let rows = w.rows()?;
        dispatch!(self.insert_workflow(rows))
    }

    pub async fn get_workflow(
        &self,
        id: &str,
        with_source: bool,
    ) -> Result<Option<WorkflowRecord>> {
        dispatch!(self.get_workflow(id, with_source))
    }

    /// The newest stored workflow with this file name or, when `filename` is
    /// `None`, this name (how `type: workflow` steps find stored workflows).
    pub async fn find_workflow(
        &self,
        filename: Option<&str>,
        name: Option<&str>,
    ) -> Result<Option<WorkflowRecord>> {
        dispatch!(self.find_workflow(filename, name))
    }

    /// Newest first, archived ones left out.
    pub async fn list_workflows(&self, limit: u32) -> Result<Vec<WorkflowRecord>> {
        dispatch!(self.list_workflows(limit))
    }

    /// Delete a workflow and its finished executions; refused while one is active.
    pub async fn delete_workflow(&self, id: &str) -> Result<DeleteOutcome> {
        dispatch!(self.delete_workflow(id))
    }

    // ------------------------------------------------------------ executions

    /// Create an execution (every step pending, its initial checkpoint); with
    /// `claim`, leased to that process (for that many ms), and with `then`,
    /// that batch committed under the lease: all in one transaction. Returns
    /// the lease and the id of the batch's checkpoint row.
    pub async fn insert_execution(
        &self,
        e: NewExecution,
        claim: Option<(Owner, u64)>,
        then: Option<Batch>,
    ) -> Result<(Option<Lease>, Option<i64>)> {
        dispatch!(self.insert_execution(e, claim, then))
    }

    pub async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRecord>> {
        dispatch!(self.get_execution(id))
    }

    /// Newest first.
    pub async fn list_executions(&self, f: ExecutionFilter) -> Result<Vec<ExecutionRecord>> {
        dispatch!(self.list_executions(f))
    }

    /// Executions whose id starts with `prefix` (short ids on the command line); at most 5.
    pub async fn find_execution_ids(&self, prefix: &str) -> Result<Vec<String>> {
        dispatch!(self.find_execution_ids(prefix))
    }

    /// The steps of an execution in declaration order, with their latest
    /// attempt's provider data and tokens summed over all attempts.
    pub async fn execution_steps(&self, id: &str, with_output: bool) -> Result<Vec<StepRecord>> {
        dispatch!(self.execution_steps(id, with_output))
    }

    /// One step of an execution, as `execution_steps` shows it (without its
    /// output), found by its key: the same work for a step of a 10-step run
    /// as of a 10,000-step one (live progress reads it after each event).
    pub async fn execution_step(&self, id: &str, key: &str) -> Result<Option<StepRecord>> {
        dispatch!(self.execution_step(id, key))
    }

    /// What the runs of each workflow came to, one entry per workflow name
    /// (all its stored versions), names in order; `only` keeps one name (or
    /// one stored workflow, by id).
    pub async fn workflow_stats(&self, only: Option<&str>) -> Result<Vec<WorkflowStats>> {
        let only = only.map(str::trim).filter(|s| !s.is_empty());
        let rows: Vec<WorkflowStatsRow> = dispatch!(self.workflow_stats(only))?;
        Ok(fold_stats(rows))
    }

    /// Every attempt of an execution's steps, oldest first.
    pub async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>> {
        dispatch!(self.attempts(id))
    }

    /// Events with ids after `after`, oldest first.
    pub async fn events_after(&self, id: &str, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        dispatch!(self.events_after(id, after, limit))
    }

    /// Commit an engine batch in one transaction (shared with batches other
    /// executions queued at the same moment), then `after` off the commit's
    /// path. Returns the id of the checkpoint row written.
    pub async fn commit(&self, batch: Batch, after: Option<Maintenance>) -> Result<Option<i64>> {
        dispatch!(self.commit(batch, after))
    }

    // ------------------------------------------------------------ checkpoints

    /// Which execution a restore point belongs to.
    pub async fn checkpoint_execution(&self, row: i64) -> Result<Option<String>> {
        dispatch!(self.checkpoint_execution(row))
    }

    /// The journal folded into one checkpoint (the latest state, or the state
    /// at row `until`) and the outputs it refers to.
    pub async fn checkpoint_state(&self, id: &str, until: Option<i64>) -> Result<CheckpointState> {
        dispatch!(self.checkpoint_state(id, until))
    }

    /// Restore points, newest first.
    pub async fn list_checkpoints(&self, id: &str) -> Result<Vec<CheckpointRecord>> {
        dispatch!(self.list_checkpoints(id))
    }

    /// Keep the newest restore points, drop old ones (and old finished
    /// executions if asked), remove unreferenced outputs, give space back.
    pub async fn prune(&self, o: PruneOptions) -> Result<PruneReport> {
        dispatch!(self.prune(o))
    }

    /// A consistency check: "ok", or what is wrong.
    pub async fn check(&self) -> Result<String> {
        dispatch!(self.check())
    }

    /// Executions by state and the queue's depth, for `GET /metrics`.
    pub async fn gauges(&self) -> Result<Gauges> {
        dispatch!(self.gauges())
    }

    /// Row counts and checkpoint bytes (benchmarks, growth runs).
    pub async fn footprint(&self) -> Result<Footprint> {
        dispatch!(self.footprint())
    }

    // ------------------------------------------------------------ ownership

    /// Whether a live process can be told from a dead one by its pid when it
    /// runs on this machine, in this pid and network namespace: yes for both
    /// backends (a process that shares this one's network reaches the database
    /// as this one does); processes elsewhere are judged by their lease.
    pub fn checks_pids(&self) -> bool {
        true
    }

    /// Take the lease on `id` unless a live process holds it; with `drive`,
    /// the execution wants a driver from now on (a worker resumes it if this
    /// process dies).
    pub async fn claim(
        &self,
        id: &str,
        me: &Owner,
        now: u64,
        lease_ms: u64,
        drive: bool,
    ) -> Result<Claim> {
        dispatch!(self.claim(id, me, now, lease_ms, drive))
    }

    /// Claim up to `limit` executions that want a driver and have none alive
    /// (with `orphans`, also the runs of processes that died or lost their lease).
    pub async fn claim_work(
        &self,
        me: &Owner,
        limit: usize,
        now: u64,
        lease_ms: u64,
        orphans: bool,
    ) -> Result<Vec<Claimed>> {
        dispatch!(self.claim_work(me, limit, now, lease_ms, orphans))
    }

    /// Push the leases `me` holds forward; returns the executions it still holds.
    pub async fn renew(
        &self,
        me: &Owner,
        held: Vec<(String, i64)>,
        now: u64,
        lease_ms: u64,
    ) -> Result<Vec<String>> {
        dispatch!(self.renew(me, held, now, lease_ms))
    }

    /// Give a lease back.
    pub async fn release(&self, lease: &Lease) -> Result<()> {
        dispatch!(self.release(lease))
    }

    /// The cached answer under `key` no older than `max_age_ms`, counted as
    /// a hit.
    pub async fn cache_get(
        &self,
        key: &str,
        now: u64,
        max_age_ms: Option<u64>,
    ) -> Result<Option<CachedAnswer>> {
        dispatch!(self.cache_get(key, now, max_age_ms))
    }

    /// Keep an answer in the response cache (replacing one under its key).
    pub async fn cache_put(&self, answer: CachedAnswer) -> Result<()> {
        dispatch!(self.cache_put(answer))
    }

    pub async fn cache_stats(&self) -> Result<CacheStats> {
        dispatch!(self.cache_stats())
    }

    /// Remove cached answers made before `before` (every one with None).
    pub async fn cache_clear(&self, before: Option<u64>) -> Result<u64> {
        dispatch!(self.cache_clear(before))
    }

    /// Give the execution its own budget (each limit set replaces the one it
    /// had); false when there is no such execution.
    pub async fn set_budget(&self, id: &str, budget: ax_core::Budget, now: u64) -> Result<bool> {
        dispatch!(self.set_budget(id, budget, now))
    }

    /// Whether the execution wants a driver (a worker claims it).
    pub async fn set_queued(&self, id: &str, queued: bool, now: u64) -> Result<()> {
        dispatch!(self.set_queued(id, queued, now))
    }

    /// Leave a control request for the execution's current lease; returns
    /// that lease's token (None: no such execution).
    pub async fn request_control(
        &self,
        id: &str,
        control: Control,
        now: u64,
    ) -> Result<Option<i64>> {
        dispatch!(self.request_control(id, control, now))
    }

    /// Take the requests meant for the leases `me` holds.
    pub async fn take_controls(&self, me: &Owner) -> Result<Vec<(String, Control)>> {
        dispatch!(self.take_controls(me))
    }

    /// Word that a control request, a message or new work is waiting, as the
    /// database announces it (PostgreSQL: LISTEN/NOTIFY). None: this backend
    /// announces nothing (SQLite), and polling finds everything.
    pub fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<Wake>> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(s) => Some(s.wakeups()),
        }
    }

    /// Withdraw the request made at `at`, if nobody took it.
    pub async fn withdraw_control(&self, id: &str, at: u64) -> Result<()> {
        dispatch!(self.withdraw_control(id, at))
    }

    /// Mark executions left running by processes that are gone as interrupted
    /// (their lease is taken away; they still want a driver).
    pub async fn interrupt_orphans(&self, me: &Owner, now: u64) -> Result<Vec<String>> {
        dispatch!(self.interrupt_orphans(me, now))
    }

    /// Every claim of an execution, oldest first.
    pub async fn leases(&self, id: &str) -> Result<Vec<LeaseRecord>> {
        dispatch!(self.leases(id))
    }

    // ------------------------------------------------------------ inbox

    /// Leave a message (a decision, a child's report) for the process that
    /// drives the execution; returns the message's row.
    pub async fn deliver(&self, id: &str, m: NewMessage, now: u64) -> Result<i64> {
        dispatch!(self.deliver(id, m, now))
    }

    /// The messages not taken yet, oldest first, marked taken (the owner only).
    pub async fn take_messages(&self, id: &str, me: &Owner, now: u64) -> Result<Vec<InboxMessage>> {
        dispatch!(self.take_messages(id, me, now))
    }

    /// The executions owned by `me` with messages not taken yet.
    pub async fn with_messages(&self, me: &Owner) -> Result<Vec<String>> {
        dispatch!(self.with_messages(me))
    }

    /// Record what became of a message.
    pub async fn settle_message(&self, row: i64, outcome: MessageOutcome, now: u64) -> Result<()> {
        dispatch!(self.settle_message(row, outcome, now))
    }

    /// What became of a message, once settled.
    pub async fn message_outcome(&self, row: i64) -> Result<Option<MessageOutcome>> {
        dispatch!(self.message_outcome(row))
    }

    /// Waiting executions whose wake-up (an approval's deadline) is due.
    pub async fn due_waiting(&self, now: u64, limit: u32) -> Result<Vec<String>> {
        dispatch!(self.due_waiting(now, limit))
    }
}

/// Epoch milliseconds now (the server's one clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Epoch milliseconds as UTC `YYYY-MM-DD HH:MM:SSZ`.
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The default SQLite file: in the user's data directory.
pub fn default_db_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("ax").join("ax.db")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_time(1_709_164_800_000), "2024-02-29 00:00:00Z");
        assert_eq!(format_time(1_796_226_671_266), "2026-12-02 15:51:11Z");
        assert_eq!(format_time(4_102_444_799_999), "2099-12-31 23:59:59Z");
    }

    #[test]
    fn targets() {
        assert_eq!(
            DbTarget::parse("postgres://ax@db:5432/ax").unwrap(),
            DbTarget::Postgres("postgres://ax@db:5432/ax".into())
        );
        assert!(matches!(
            DbTarget::parse("PostgreSQL://h/d").unwrap(),
            DbTarget::Postgres(_)
        ));
        assert_eq!(
            DbTarget::parse("./data/ax.db").unwrap(),
            DbTarget::Sqlite("./data/ax.db".into())
        );
        let err = DbTarget::parse("mysql://h/d").unwrap_err().to_string();
        assert!(err.contains("mysql://"), "{err}");
        assert!(DbTarget::parse("  ").is_err());
        assert_eq!(
            DbTarget::parse("postgres://ax:secret@db/ax")
                .unwrap()
                .describe(),
            "postgres://ax:***@db/ax"
        );
    }
}
