//! The SQLite store: migrations, connections and every query ax runs.
//!
//! All writes go through one writer thread that owns the writer connection
//! (SQLite has one writer anyway); reads use a small pool of read-only
//! connections through `spawn_blocking`. The async runtime never waits on disk.
//! WAL, foreign keys, a busy timeout, incremental auto-vacuum.
//!
//! Every multi-row change is one transaction: a step's transition, its event, its
//! output and the checkpoint delta commit together, before the engine acts on
//! them. Engine batches are *group-committed*: batches queued by many executions
//! at the same moment share one transaction (each in its own savepoint, so one
//! refused batch does not affect the others) — the durability of one commit at
//! the cost of one commit.

mod migrate;
pub mod queries;

use anyhow::{Context as _, Result, anyhow};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

pub use queries::*;

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<std_mpsc::Sender<Job>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
}

/// Work run alone on the writer connection.
pub type Exclusive = Box<dyn FnOnce(&mut Connection) + Send>;

/// Work for the writer thread.
enum Job {
    /// An engine batch, group-committable, then optional maintenance that runs
    /// on its own after the group's commit.
    Batch {
        batch: Box<Batch>,
        after: Option<Exclusive>,
        reply: oneshot::Sender<Result<Option<i64>>>,
    },
    /// Anything else, run alone (it manages its own transaction).
    Exclusive(Exclusive),
}

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

fn configure(conn: &Connection, durability: Durability) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Batches committed together at most.
const GROUP_LIMIT: usize = 256;

impl Store {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, Durability::from_env())
    }

    pub fn open_with(path: &Path, durability: Durability) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the database folder {}", dir.display()))?;
        }
        let mut writer = Connection::open(path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        // Must precede the first table to take effect.
        writer.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(anyhow!(
                "the database {} cannot use WAL mode (got {mode}); use a local file system",
                path.display()
            ));
        }
        configure(&writer, durability)?;
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
            )?;
            configure(&r, durability)?;
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
        spawn_checkpointer(Arc::downgrade(&inner), path.to_owned(), durability)?;
        Ok(Store { inner })
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
    pub async fn write<T, F>(&self, f: F) -> Result<T>
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

    /// Commit an engine batch (group-committed with others queued at the same
    /// time), then run `after` on its own. Returns the checkpoint row id.
    pub async fn commit(&self, batch: Batch, after: Option<Exclusive>) -> Result<Option<i64>> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Batch {
            batch: Box::new(batch),
            after,
            reply,
        })?;
        rx.await
            .map_err(|_| anyhow!("the database writer dropped a commit"))?
    }

    /// Run `f` with a reader connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f))
            .await
            .map_err(|e| anyhow!("database task failed: {e}"))?
    }
}

fn writer_loop(mut conn: Connection, rx: std_mpsc::Receiver<Job>) {
    let mut held: Option<Job> = None;
    loop {
        let job = match held.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return, // every Store handle is gone
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
    Option<Exclusive>,
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
    for ((_, after, reply), result) in group.into_iter().zip(results) {
        let committed = result.is_ok();
        let _ = reply.send(result);
        if let (true, Some(f)) = (committed, after) {
            f(conn);
        }
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

/// Epoch milliseconds now (the server's one clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The default database path: `$AX_DB`, else the user's data directory.
pub fn default_db_path() -> PathBuf {
    if let Some(p) = std::env::var_os("AX_DB").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("ax").join("ax.db")
}
