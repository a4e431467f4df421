//! Everything the designer keeps in the browser, in IndexedDB (`indexed_db_futures`):
//! documents with their autosaved drafts and version history, dry runs with
//! their checkpoints, and step outputs stored once by content hash.
//!
//! Values are JSON strings under string keys. Keys that belong to a parent sort
//! under it (`<doc id>/<seq>`, `<run id>/<seq>`), so a key range lists them.

use crate::dryrun::{Record, SimSettings};
use ax_core::ExecutionState;
use ax_core::checkpoint::{Checkpoint, CheckpointDelta};
use indexed_db_futures::database::Database;
use indexed_db_futures::prelude::*;
use indexed_db_futures::transaction::TransactionMode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const DEFAULT_DB: &str = "ax-designer";
const VERSION: u8 = 1;
const DOCS: &str = "docs";
const VERSIONS: &str = "versions";
const RUNS: &str = "runs";
const CHECKPOINTS: &str = "checkpoints";
const OUTPUTS: &str = "outputs";
const META: &str = "meta";
const STORES: [&str; 6] = [DOCS, VERSIONS, RUNS, CHECKPOINTS, OUTPUTS, META];

/// A saved document: its current text is the autosaved draft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocRecord {
    pub id: String,
    pub name: String,
    pub text: String,
    pub created_at: f64,
    pub updated_at: f64,
    /// The last explicit save.
    #[serde(default)]
    pub saved_at: Option<f64>,
    /// The newest version snapshot.
    #[serde(default)]
    pub last_version_at: Option<f64>,
    #[serde(default)]
    pub next_version: u32,
}

/// A snapshot of a document's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionRecord {
    pub doc_id: String,
    pub seq: u32,
    pub at: f64,
    /// `save` (explicit), `auto` (periodic, from autosave) or `before-restore`.
    pub kind: String,
    pub name: String,
    pub text: String,
}

/// A dry run in the browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub id: String,
    pub name: String,
    /// The workflow text the run was started from (runs survive edits).
    pub source: String,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub doc_id: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
    pub state: ExecutionState,
    pub settings: SimSettings,
    pub last_seq: u64,
    pub completed: usize,
    pub total: usize,
    /// `browser`, or where an imported checkpoint came from.
    #[serde(default)]
    pub origin: Option<String>,
}

/// A stored checkpoint: a full snapshot or a delta on the ones before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRecord {
    pub run_id: String,
    pub seq: u64,
    pub at: u64,
    pub state: ExecutionState,
    pub completed: usize,
    #[serde(default)]
    pub snapshot: Option<Checkpoint>,
    #[serde(default)]
    pub delta: Option<CheckpointDelta>,
}

impl CheckpointRecord {
    pub fn record(&self) -> Option<Record> {
        match (&self.snapshot, &self.delta) {
            (Some(s), _) => Some(Record::Snapshot(s.clone())),
            (_, Some(d)) => Some(Record::Delta(d.clone())),
            _ => None,
        }
    }
}

/// The IndexedDB database (a cheap handle).
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    name: String,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn now() -> f64 {
    js_sys::Date::now()
}

/// A new random id with a prefix (`d-…` documents, `r-…` runs).
pub fn new_id(prefix: &str) -> String {
    let t = now() as u64;
    let r = (js_sys::Math::random() * 1e9) as u64;
    format!("{prefix}-{t:x}{r:x}")
}

fn doc_version_key(doc: &str, seq: u32) -> String {
    format!("{doc}/{seq:08}")
}

fn checkpoint_key(run: &str, seq: u64) -> String {
    format!("{run}/{seq:012}")
}

/// Keys under `parent/`: `/` sorts just before `0`.
fn children(parent: &str) -> std::ops::Range<String> {
    format!("{parent}/")..format!("{parent}0")
}

impl Store {
    /// Open (and create or upgrade) the database.
    pub async fn open(name: &str) -> Result<Store, String> {
        let db = Database::open(name)
            .with_version(VERSION)
            .with_on_upgrade_needed(|_event, db| {
                let existing: Vec<String> = db.object_store_names().collect();
                for s in STORES {
                    if !existing.iter().any(|e| e == s) {
                        db.create_object_store(s).build()?;
                    }
                }
                Ok(())
            })
            .await
            .map_err(err)?;
        Ok(Store {
            db,
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delete a whole database (tests; "forget everything").
    pub async fn delete_database(name: &str) -> Result<(), String> {
        Database::delete_by_name(name)
            .map_err(err)?
            .await
            .map_err(err)
    }

    pub fn close(self) {
        self.db.close();
    }

    // The IndexedDB calls are not generic (one copy of each in the wasm);
    // records are (de)serialized around them.
    async fn get<T: DeserializeOwned>(&self, store: &str, key: &str) -> Result<Option<T>, String> {
        match self.get_text(store, key).await? {
            Some(text) => serde_json::from_str(&text).map(Some).map_err(err),
            None => Ok(None),
        }
    }

    async fn get_text(&self, store: &str, key: &str) -> Result<Option<String>, String> {
        let tx = self.db.transaction(store).build().map_err(err)?;
        let s = tx.object_store(store).map_err(err)?;
        s.get(key).primitive().map_err(err)?.await.map_err(err)
    }

    async fn all_texts(
        &self,
        store: &str,
        range: Option<std::ops::Range<String>>,
    ) -> Result<Vec<String>, String> {
        let tx = self.db.transaction(store).build().map_err(err)?;
        let s = tx.object_store(store).map_err(err)?;
        match range {
            Some(r) => s
                .get_all()
                .with_query(r)
                .primitive()
                .map_err(err)?
                .await
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err),
            None => s
                .get_all()
                .primitive()
                .map_err(err)?
                .await
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err),
        }
    }

    async fn all<T: DeserializeOwned>(
        &self,
        store: &str,
        range: Option<std::ops::Range<String>>,
    ) -> Result<Vec<T>, String> {
        let texts = self.all_texts(store, range).await?;
        Ok(texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect())
    }

    /// Write several records in one transaction: `(store, key, json)`.
    async fn put_all(&self, writes: &[(&str, String, String)]) -> Result<(), String> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = writes.iter().map(|(s, _, _)| *s).collect();
        ax_core::sort::sort_unstable(&mut names);
        names.dedup();
        let tx = self
            .db
            .transaction(names.as_slice())
            .with_mode(TransactionMode::Readwrite)
            .build()
            .map_err(err)?;
        for (store, key, value) in writes {
            let s = tx.object_store(store).map_err(err)?;
            s.put(value.as_str())
                .with_key(key.as_str())
                .without_key_type()
                .primitive()
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    async fn put<T: Serialize>(&self, store: &str, key: &str, value: &T) -> Result<(), String> {
        let json = serde_json::to_string(value).map_err(err)?;
        self.put_all(&[(store, key.to_owned(), json)]).await
    }

    async fn delete(&self, store: &str, key: &str) -> Result<(), String> {
        let tx = self
            .db
            .transaction(store)
            .with_mode(TransactionMode::Readwrite)
            .build()
            .map_err(err)?;
        let s = tx.object_store(store).map_err(err)?;
        s.delete(key).primitive().map_err(err)?;
        tx.commit().await.map_err(err)
    }

    async fn delete_children(&self, store: &str, parent: &str) -> Result<(), String> {
        let tx = self
            .db
            .transaction(store)
            .with_mode(TransactionMode::Readwrite)
            .build()
            .map_err(err)?;
        let s = tx.object_store(store).map_err(err)?;
        s.delete(children(parent)).primitive().map_err(err)?;
        tx.commit().await.map_err(err)
    }

    // ---- Documents ----

    /// Every document, most recently changed first.
    pub async fn list_docs(&self) -> Result<Vec<DocRecord>, String> {
        let mut docs: Vec<DocRecord> = self.all(DOCS, None).await?;
        ax_core::sort::sort_by(&mut docs, |a, b| b.updated_at.total_cmp(&a.updated_at));
        Ok(docs)
    }

    pub async fn get_doc(&self, id: &str) -> Result<Option<DocRecord>, String> {
        self.get(DOCS, id).await
    }

    pub async fn put_doc(&self, doc: &DocRecord) -> Result<(), String> {
        self.put(DOCS, &doc.id, doc).await
    }

    /// A new document, stored.
    pub async fn create_doc(&self, name: &str, text: &str) -> Result<DocRecord, String> {
        let t = now();
        let doc = DocRecord {
            id: new_id("d"),
            name: name.to_owned(),
            text: text.to_owned(),
            created_at: t,
            updated_at: t,
            saved_at: None,
            last_version_at: None,
            next_version: 1,
        };
        self.put_doc(&doc).await?;
        Ok(doc)
    }

    /// Delete a document and its versions.
    pub async fn delete_doc(&self, id: &str) -> Result<(), String> {
        self.delete_children(VERSIONS, id).await?;
        self.delete(DOCS, id).await
    }

    /// Snapshot the document's current text as a version (and store the document).
    pub async fn add_version(
        &self,
        doc: &mut DocRecord,
        kind: &str,
    ) -> Result<VersionRecord, String> {
        let t = now();
        let seq = doc.next_version.max(1);
        doc.next_version = seq + 1;
        doc.last_version_at = Some(t);
        let v = VersionRecord {
            doc_id: doc.id.clone(),
            seq,
            at: t,
            kind: kind.to_owned(),
            name: doc.name.clone(),
            text: doc.text.clone(),
        };
        let writes = [
            (
                VERSIONS,
                doc_version_key(&doc.id, seq),
                serde_json::to_string(&v).map_err(err)?,
            ),
            (
                DOCS,
                doc.id.clone(),
                serde_json::to_string(&*doc).map_err(err)?,
            ),
        ];
        self.put_all(&writes).await?;
        Ok(v)
    }

    /// A document's versions, newest first.
    pub async fn list_versions(&self, doc_id: &str) -> Result<Vec<VersionRecord>, String> {
        // Keys sort by the zero-padded sequence number.
        let mut v: Vec<VersionRecord> = self.all(VERSIONS, Some(children(doc_id))).await?;
        v.reverse();
        Ok(v)
    }

    // ---- Session ----

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, String> {
        self.get_text(META, key).await
    }

    pub async fn put_meta(&self, key: &str, value: &str) -> Result<(), String> {
        self.put_all(&[(META, key.to_owned(), value.to_owned())])
            .await
    }

    // ---- Runs ----

    pub async fn list_runs(&self) -> Result<Vec<RunRecord>, String> {
        let mut runs: Vec<RunRecord> = self.all(RUNS, None).await?;
        ax_core::sort::sort_by(&mut runs, |a, b| b.updated_at.total_cmp(&a.updated_at));
        Ok(runs)
    }

    pub async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, String> {
        self.get(RUNS, id).await
    }

    pub async fn put_run(&self, run: &RunRecord) -> Result<(), String> {
        self.put(RUNS, &run.id, run).await
    }

    /// Delete a run and its checkpoints (outputs stay: others may share them).
    pub async fn delete_run(&self, id: &str) -> Result<(), String> {
        self.delete_children(CHECKPOINTS, id).await?;
        self.delete(RUNS, id).await
    }

    /// Store a checkpoint, the outputs it adds, and the run's summary, atomically.
    pub async fn put_checkpoint(
        &self,
        cp: &CheckpointRecord,
        outputs: &[(String, Arc<str>)],
        run: &RunRecord,
    ) -> Result<(), String> {
        let mut writes: Vec<(&str, String, String)> = Vec::with_capacity(outputs.len() + 2);
        writes.push((
            CHECKPOINTS,
            checkpoint_key(&cp.run_id, cp.seq),
            serde_json::to_string(cp).map_err(err)?,
        ));
        for (hash, text) in outputs {
            writes.push((OUTPUTS, hash.clone(), text.to_string()));
        }
        writes.push((
            RUNS,
            run.id.clone(),
            serde_json::to_string(run).map_err(err)?,
        ));
        self.put_all(&writes).await
    }

    /// A run's checkpoints, oldest first.
    pub async fn list_checkpoints(&self, run_id: &str) -> Result<Vec<CheckpointRecord>, String> {
        // Keys sort by the zero-padded sequence number: oldest first already.
        self.all(CHECKPOINTS, Some(children(run_id))).await
    }

    /// Forget the checkpoints after `seq` (restoring rewinds the run's history).
    pub async fn truncate_checkpoints(&self, run_id: &str, after: u64) -> Result<(), String> {
        let tx = self
            .db
            .transaction(CHECKPOINTS)
            .with_mode(TransactionMode::Readwrite)
            .build()
            .map_err(err)?;
        let s = tx.object_store(CHECKPOINTS).map_err(err)?;
        let range = checkpoint_key(run_id, after + 1)..format!("{run_id}0");
        s.delete(range).primitive().map_err(err)?;
        tx.commit().await.map_err(err)
    }

    pub async fn get_output(&self, hash: &str) -> Result<Option<String>, String> {
        self.get_text(OUTPUTS, hash).await
    }

    pub async fn put_outputs(&self, outputs: &[(String, String)]) -> Result<(), String> {
        let writes: Vec<(&str, String, String)> = outputs
            .iter()
            .map(|(h, t)| (OUTPUTS, h.clone(), t.clone()))
            .collect();
        self.put_all(&writes).await
    }

    /// The texts of these output hashes (missing ones are left out).
    pub async fn get_outputs(
        &self,
        hashes: impl IntoIterator<Item = String>,
    ) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for h in hashes {
            if let Some(t) = self.get_output(&h).await? {
                out.push((h, t));
            }
        }
        Ok(out)
    }
}
