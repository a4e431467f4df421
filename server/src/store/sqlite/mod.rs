//! The SQLite backend: one file on one machine, the embedded default.
//!
//! All writes go through one writer thread that owns the writer connection
//! (SQLite has one writer anyway); reads use a small pool of read-only
//! connections through `spawn_blocking`. The async runtime never waits on disk.
//! WAL, foreign keys, a busy timeout, incremental auto-vacuum.
//!
//! Engine batches are *group-committed*: batches queued by many executions at
//! the same moment share one transaction (each in its own savepoint, so one
//! refused batch does not affect the others) — the durability of one commit at
//! the cost of one commit.

mod gauges;
mod inbox;
mod migrate;
pub mod queries;

use super::model::*;
use super::owner::{Claim, Claimed, Control, Lease, Owner};
use anyhow::{Context as _, Result, anyhow};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How durable a commit is (`PRAGMA synchronous`). `Normal` survives a killed
/// process (the WAL is in the OS's hands); `Full` also survives power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Normal,
    Full,
}

impl Durability {
    pub fn from_env() -> Durability {
        match std::env::var("AX_SYNC").as_deref() {
            Ok("full") | Ok("FULL") => Durability::Full,
            _ => Durability::Normal,
        }
    }
}

/// A handle to one SQLite file; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<std_mpsc::Sender<Job>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
}

/// Work run alone on the writer connection.
type Exclusive = Box<dyn FnOnce(&mut Connection) + Send>;

/// Work for the writer thread.
enum Job {
    /// An engine batch, group-committable, then optional maintenance that runs
    /// on its own after the group's commit.
    Batch {
        batch: Box<Batch>,
        after: Option<Maintenance>,
        reply: oneshot::Sender<Result<Option<i64>>>,
    },
    /// Anything else, run alone (it manages its own transaction).
    Exclusive(Exclusive),
}

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn configure(conn: &Connection, durability: Durability) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// `PRAGMA journal_mode = WAL`, which answers "busy" at once, without waiting,
/// while another process switches the same fresh file: retried until one of
/// them has switched it (the mode is then stored in the file).
fn switch_to_wal(conn: &Connection) -> Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        let current: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if current.eq_ignore_ascii_case("wal") {
            return Ok(current);
        }
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(mode) => return Ok(mode),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Batches committed together at most.
const GROUP_LIMIT: usize = 256;

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and bring its schema up
    /// to date. Blocking: call it off the async runtime.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the database folder {}", dir.display()))?;
        }
        let mut writer = Connection::open(path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        // Before anything else: another process may be creating the same file.
        writer.busy_timeout(BUSY_TIMEOUT)?;
        // Must precede the first table to take effect.
        writer
            .pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .context("setting auto_vacuum")?;
        let mode = switch_to_wal(&writer).context("switching to WAL mode")?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(anyhow!(
                "the database {} cannot use WAL mode (got {mode}); use a local file system",
                path.display()
            ));
        }
        configure(&writer, durability).context("configuring the connection")?;
        // Checkpoints (WAL → database file, with its fsync) run on a background
        // thread, not inside the commits on the engine's path; after each reset
        // the WAL file is cut back to 16 MiB.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
        migrate::apply(&mut writer)
            .with_context(|| format!("while migrating {}", path.display()))?;
        let mut readers = Vec::new();
        for _ in 0..4 {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .context("opening a reader")?;
            configure(&r, durability).context("configuring a reader")?;
            readers.push(Mutex::new(r));
        }
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("ax-db-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .context("cannot start the database writer thread")?;
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            writer: Mutex::new(tx),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
        });
        spawn_checkpointer(Arc::downgrade(&inner), path.to_owned(), durability)
            .context("starting the WAL checkpointer")?;
        Ok(SqliteStore { inner })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn send(&self, job: Job) -> Result<()> {
        self.inner
            .writer
            .lock()
            .map_err(|_| anyhow!("the database writer is poisoned"))?
            .send(job)
            .map_err(|_| anyhow!("the database writer has stopped"))
    }

    /// Run `f` with the writer connection on the writer thread.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Exclusive(Box::new(move |c| {
            let _ = reply.send(f(c));
        })))?;
        rx.await
            .map_err(|_| anyhow!("the database writer dropped a request"))?
    }

    /// Run `f` with a reader connection, off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f))
            .await
            .map_err(|e| anyhow!("database task failed: {e}"))?
    }

    // ------------------------------------------------------------ the interface

    pub async fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .map(drop)
    }

    pub async fn insert_workflow(&self, w: WorkflowRows) -> Result<WorkflowRecord> {
        self.write(move |c| queries::insert_workflow(c, &w)).await
    }

    pub async fn get_workflow(
        &self,
        id: &str,
        with_source: bool,
    ) -> Result<Option<WorkflowRecord>> {
        let id = id.to_owned();
        self.read(move |c| queries::get_workflow(c, &id, with_source))
            .await
    }

    pub async fn find_workflow(
        &self,
        filename: Option<&str>,
        name: Option<&str>,
    ) -> Result<Option<WorkflowRecord>> {
        let (filename, name) = (filename.map(str::to_owned), name.map(str::to_owned));
        self.read(move |c| queries::find_workflow(c, filename.as_deref(), name.as_deref()))
            .await
    }

    pub async fn list_workflows(&self, limit: u32) -> Result<Vec<WorkflowRecord>> {
        self.read(move |c| queries::list_workflows(c, limit)).await
    }

    pub async fn delete_workflow(&self, id: &str) -> Result<DeleteOutcome> {
        let id = id.to_owned();
        self.write(move |c| queries::delete_workflow(c, &id)).await
    }

    pub async fn insert_execution(
        &self,
        e: NewExecution,
        claim: Option<(Owner, u64)>,
        then: Option<Batch>,
    ) -> Result<(Option<Lease>, Option<i64>)> {
        self.write(move |c| {
            queries::insert_execution(c, &e, claim.as_ref().map(|(o, l)| (o, *l)), then)
        })
        .await
    }

    pub async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRecord>> {
        let id = id.to_owned();
        self.read(move |c| queries::get_execution(c, &id)).await
    }

    pub async fn list_executions(&self, f: ExecutionFilter) -> Result<Vec<ExecutionRecord>> {
        self.read(move |c| queries::list_executions(c, &f)).await
    }

    pub async fn find_execution_ids(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.to_owned();
        self.read(move |c| queries::find_execution_ids(c, &prefix))
            .await
    }

    pub async fn execution_steps(&self, id: &str, with_output: bool) -> Result<Vec<StepRecord>> {
        let id = id.to_owned();
        self.read(move |c| queries::execution_steps(c, &id, with_output))
            .await
    }

    pub async fn execution_step(&self, id: &str, key: &str) -> Result<Option<StepRecord>> {
        let (id, key) = (id.to_owned(), key.to_owned());
        self.read(move |c| queries::execution_step(c, &id, &key))
            .await
    }

    pub async fn workflow_stats(&self, only: Option<&str>) -> Result<Vec<WorkflowStatsRow>> {
        let only = only.map(str::to_owned);
        self.read(move |c| queries::workflow_stats(c, only.as_deref()))
            .await
    }

    pub async fn attempts(&self, id: &str) -> Result<Vec<AttemptRecord>> {
        let id = id.to_owned();
        self.read(move |c| queries::attempts(c, &id)).await
    }

    pub async fn events_after(&self, id: &str, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        let id = id.to_owned();
        self.read(move |c| queries::events_after(c, &id, after, limit))
            .await
    }

    /// Commit an engine batch (group-committed with others queued at the same
    /// time), then run `after` on its own. Returns the checkpoint row id.
    pub async fn commit(&self, batch: Batch, after: Option<Maintenance>) -> Result<Option<i64>> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Batch {
            batch: Box::new(batch),
            after,
            reply,
        })?;
        rx.await
            .map_err(|_| anyhow!("the database writer dropped a commit"))?
    }

    pub async fn checkpoint_execution(&self, row: i64) -> Result<Option<String>> {
        self.read(move |c| queries::checkpoint_execution(c, row))
            .await
    }

    pub async fn checkpoint_state(&self, id: &str, until: Option<i64>) -> Result<CheckpointState> {
        let id = id.to_owned();
        self.read(move |c| queries::checkpoint_state(c, &id, until))
            .await
    }

    pub async fn list_checkpoints(&self, id: &str) -> Result<Vec<CheckpointRecord>> {
        let id = id.to_owned();
        self.read(move |c| queries::list_checkpoints(c, &id)).await
    }

    pub async fn prune(&self, o: PruneOptions) -> Result<PruneReport> {
        self.write(move |c| queries::prune(c, &o)).await
    }

    pub async fn check(&self) -> Result<String> {
        self.read(queries::check).await
    }

    pub async fn footprint(&self) -> Result<Footprint> {
        self.read(queries::footprint).await
    }

    pub async fn claim(
        &self,
        id: &str,
        me: &Owner,
        now: u64,
        lease_ms: u64,
        drive: bool,
    ) -> Result<Claim> {
        let (id, me) = (id.to_owned(), me.clone());
        self.write(move |c| queries::claim(c, &id, &me, now, lease_ms, drive))
            .await
    }

    pub async fn claim_work(
        &self,
        me: &Owner,
        limit: usize,
        now: u64,
        lease_ms: u64,
        orphans: bool,
    ) -> Result<Vec<Claimed>> {
        let me = me.clone();
        self.write(move |c| queries::claim_work(c, &me, limit, now, lease_ms, orphans))
            .await
    }

    pub async fn renew(
        &self,
        me: &Owner,
        held: Vec<(String, i64)>,
        now: u64,
        lease_ms: u64,
    ) -> Result<Vec<String>> {
        let me = me.clone();
        self.write(move |c| queries::renew(c, &me, &held, now, lease_ms))
            .await
    }

    pub async fn release(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.write(move |c| queries::release(c, &lease)).await
    }

    pub async fn cache_get(
        &self,
        key: &str,
        now: u64,
        max_age_ms: Option<u64>,
    ) -> Result<Option<CachedAnswer>> {
        let key = key.to_owned();
        self.write(move |c| queries::cache_get(c, &key, now, max_age_ms))
            .await
    }

    pub async fn cache_put(&self, answer: CachedAnswer) -> Result<()> {
        self.write(move |c| queries::cache_put(c, &answer)).await
    }

    pub async fn cache_stats(&self) -> Result<CacheStats> {
        self.read(queries::cache_stats).await
    }

    pub async fn cache_clear(&self, before: Option<u64>) -> Result<u64> {
        self.write(move |c| queries::cache_clear(c, before)).await
    }

    pub async fn set_budget(&self, id: &str, budget: ax_core::Budget, now: u64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| queries::set_budget(c, &id, budget, now))
            .await
    }

    pub async fn set_queued(&self, id: &str, queued: bool, now: u64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| queries::set_queued(c, &id, queued, now))
            .await
    }

    pub async fn request_control(
        &self,
        id: &str,
        control: Control,
        now: u64,
    ) -> Result<Option<i64>> {
        let id = id.to_owned();
        self.write(move |c| queries::request_control(c, &id, control, now))
            .await
    }

    pub async fn take_controls(&self, me: &Owner) -> Result<Vec<(String, Control)>> {
        let me = me.clone();
        self.write(move |c| queries::take_controls(c, &me)).await
    }

    pub async fn withdraw_control(&self, id: &str, at: u64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| queries::withdraw_control(c, &id, at))
            .await
    }

    pub async fn interrupt_orphans(&self, me: &Owner, now: u64) -> Result<Vec<String>> {
        let me = me.clone();
        self.write(move |c| queries::interrupt_orphans(c, &me, now))
            .await
    }

    pub async fn leases(&self, id: &str) -> Result<Vec<LeaseRecord>> {
        let id = id.to_owned();
        self.read(move |c| queries::leases(c, &id)).await
    }
}

fn writer_loop(mut conn: Connection, rx: std_mpsc::Receiver<Job>) {
    let mut held: Option<Job> = None;
    loop {
        let job = match held.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return, // every store handle is gone
            },
        };
        match job {
            Job::Exclusive(f) => f(&mut conn),
            Job::Batch {
                batch,
                after,
                reply,
            } => {
                let mut group = vec![(batch, after, reply)];
                while group.len() < GROUP_LIMIT {
                    match rx.try_recv() {
                        Ok(Job::Batch {
                            batch,
                            after,
                            reply,
                        }) => group.push((batch, after, reply)),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                group_commit(&mut conn, group);
            }
        }
    }
}

type Grouped = (
    Box<Batch>,
    Option<Maintenance>,
    oneshot::Sender<Result<Option<i64>>>,
);

fn group_commit(conn: &mut Connection, group: Vec<Grouped>) {
    let mut results: Vec<Result<Option<i64>>> = Vec::with_capacity(group.len());
    let outcome = (|| -> Result<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (batch, _, _) in &group {
            tx.execute_batch("SAVEPOINT batch")?;
            match queries::commit_in(&tx, batch) {
                Ok(id) => {
                    tx.execute_batch("RELEASE batch")?;
                    results.push(Ok(id));
                }
                Err(e) => {
                    tx.execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                    results.push(Err(e));
                }
            }
        }
        tx.commit()?;
        Ok(())
    })();
    if let Err(e) = outcome {
        // The transaction itself failed: nothing of the group is committed.
        let msg = format!("{e:#}");
        results = group
            .iter()
            .map(|_| Err(anyhow!("could not commit: {msg}")))
            .collect();
    }
    // Batches without maintenance hear back at once; one with maintenance
    // after it has run, so that its runner never sees restore points that are
    // about to go.
    let mut later = Vec::new();
    for ((batch, after, reply), result) in group.into_iter().zip(results) {
        match (result.is_ok(), after) {
            (true, Some(m)) => later.push((batch, m, reply, result)),
            _ => {
                let _ = reply.send(result);
            }
        }
    }
    for (batch, m, reply, result) in later {
        queries::maintain(conn, &batch.execution_id, m);
        let _ = reply.send(result);
    }
}

/// Copies the WAL into the database file every 500 ms (and truncates it when it
/// has grown past 16 MiB), until the store is dropped.
fn spawn_checkpointer(
    store: std::sync::Weak<Inner>,
    path: PathBuf,
    durability: Durability,
) -> Result<()> {
    let conn = Connection::open(&path)?;
    configure(&conn, durability)?;
    conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
    std::thread::Builder::new()
        .name("ax-wal-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if store.upgrade().is_none() {
                    break;
                }
                let wal_pages: i64 = conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                    .unwrap_or(0);
                if wal_pages > 4_096 {
                    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                        r.get::<_, i64>(0)
                    });
                }
            }
        })?;
    Ok(())
}

impl Inner {
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let n = self.readers.len();
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Take a free reader if there is one, else wait for the next in turn.
        for k in 0..n {
            if let Ok(conn) = self.readers[(start + k) % n].try_lock() {
                return f(&conn);
            }
        }
        let conn = self.readers[start % n]
            .lock()
            .map_err(|_| anyhow!("a database reader lock is poisoned"))?;
        f(&conn)
    }
}
