//! The SQLite store: migrations, connections and every query ax runs.
//!
//! One writer connection (SQLite has one writer anyway) and a few readers, all used
//! from `spawn_blocking` so the async runtime never waits on disk. WAL, foreign
//! keys, a busy timeout, incremental auto-vacuum. Every multi-row change is one
//! transaction: a step's transition, its event, its output and the checkpoint
//! delta commit together, before the engine acts on them.

mod migrate;
pub mod queries;

use anyhow::{Context as _, Result, anyhow};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use queries::*;

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
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
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers,
                next_reader: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `f` with the writer connection, off the async runtime.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .writer
                .lock()
                .map_err(|_| anyhow!("the database writer lock is poisoned"))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| anyhow!("database task failed: {e}"))?
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

    /// Blocking variants, for code already off the runtime.
    pub fn write_blocking<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self
            .inner
            .writer
            .lock()
            .map_err(|_| anyhow!("the database writer lock is poisoned"))?;
        f(&mut conn)
    }

    pub fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.inner.with_reader(f)
    }
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
