//! Everything the designer keeps in the browser, in IndexedDB (through `idb`):
//! documents with their autosaved drafts and version history, dry runs with
//! their checkpoints, and step outputs stored once by content hash.
//!
//! Values are JSON strings under string keys. Keys that belong to a parent sort
//! under it (`<doc id>/<seq>`, `<run id>/<seq>`), so a key range lists them.

use crate::dryrun::{Record, SimSettings};
use ax_core::ExecutionState;
use ax_core::checkpoint::{Checkpoint, CheckpointDelta};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use web_sys::IdbDatabase;

mod idb;

pub const DEFAULT_DB: &str = "ax-designer";
const VERSION: u32 = 1;
const DOCS: &str = "docs";
const VERSIONS: &str = "versions";
const RUNS: &str = "runs";
const CHECKPOINTS: &str = "checkpoints";
const OUTPUTS: &str = "outputs";
const META: &str = "meta";
const STORES: [&str; 6] = [DOCS, VERSIONS, RUNS, CHECKPOINTS, OUTPUTS, META];

/// A saved document: its current text is the autosaved draft.
///
/// The records are stored as JSON objects with camelCase keys, in field order
/// (`ToJson`/`FromJson` below are written by hand: serde derives would add a
/// serializer and a deserializer per record type to the wasm). Fields marked
/// "optional" may be missing (older records); unknown keys are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct DocRecord {
    pub id: String,
    pub name: String,
    pub text: String,
    pub created_at: f64,
    pub updated_at: f64,
    /// The last explicit save (optional).
    pub saved_at: Option<f64>,
    /// The newest version snapshot (optional).
    pub last_version_at: Option<f64>,
    /// Optional (0).
    pub next_version: u32,
}

/// A snapshot of a document's text.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub name: String,
    /// The workflow text the run was started from (runs survive edits).
    pub source: String,
    /// Optional.
    pub filename: Option<String>,
    /// Optional.
    pub doc_id: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
    pub state: ExecutionState,
    pub settings: SimSettings,
    pub last_seq: u64,
    pub completed: usize,
    pub total: usize,
    /// `browser`, or where an imported checkpoint came from (optional).
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

/// A record stored as JSON text.
pub trait Json: Sized {
    fn to_json(&self) -> Result<String, String>;
    fn from_json(text: &str) -> Result<Self, String>;
}

impl Json for CheckpointRecord {
    fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(err)
    }
    fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(err)
    }
}

/// A JSON object being written, keys in the order given (as serde's derive writes them).
struct Obj(String);

impl Obj {
    fn new() -> Obj {
        Obj(String::from("{"))
    }

    /// `"key":` and the value's JSON text.
    #[inline(never)]
    fn raw(mut self, key: &str, json: &str) -> Obj {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
        self.0.push_str(json);
        self
    }

    #[inline(never)]
    fn val(self, key: &str, v: Value) -> Obj {
        self.raw(key, &v.to_string())
    }

    fn str(self, key: &str, v: &str) -> Obj {
        self.val(key, Value::String(v.to_owned()))
    }

    fn opt_str(self, key: &str, v: &Option<String>) -> Obj {
        self.val(
            key,
            v.as_ref().map_or(Value::Null, |s| Value::String(s.clone())),
        )
    }

    fn f64(self, key: &str, v: f64) -> Obj {
        self.val(key, Value::from(v))
    }

    fn opt_f64(self, key: &str, v: Option<f64>) -> Obj {
        self.val(key, v.map_or(Value::Null, Value::from))
    }

    fn u64(self, key: &str, v: u64) -> Obj {
        self.val(key, Value::from(v))
    }

    fn obj(self, key: &str, o: Obj) -> Obj {
        self.raw(key, &o.end())
    }

    fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// The fields of a JSON object being read.
struct Fields(Map<String, Value>);

impl Fields {
    #[inline(never)]
    fn parse(text: &str) -> Result<Fields, String> {
        match serde_json::from_str(text).map_err(err)? {
            Value::Object(m) => Ok(Fields(m)),
            _ => Err("expected a JSON object".into()),
        }
    }

    #[inline(never)]
    fn get(&self, key: &str) -> Result<&Value, String> {
        self.0
            .get(key)
            .ok_or_else(|| format!("missing field `{key}`"))
    }

    /// A present, non-null value (`Option` fields: missing or `null` is `None`).
    fn opt(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    #[inline(never)]
    fn bad(key: &str) -> String {
        format!("invalid type for field `{key}`")
    }

    fn str(&self, key: &str) -> Result<String, String> {
        as_string(self.get(key)?).ok_or_else(|| Fields::bad(key))
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>, String> {
        self.opt(key)
            .map(|v| as_string(v).ok_or_else(|| Fields::bad(key)))
            .transpose()
    }

    fn f64(&self, key: &str) -> Result<f64, String> {
        self.get(key)?.as_f64().ok_or_else(|| Fields::bad(key))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, String> {
        self.opt(key)
            .map(|v| v.as_f64().ok_or_else(|| Fields::bad(key)))
            .transpose()
    }

    /// An unsigned integer no larger than `max`.
    #[inline(never)]
    fn uint(v: &Value, key: &str, max: u64) -> Result<u64, String> {
        v.as_u64()
            .filter(|n| *n <= max)
            .ok_or_else(|| Fields::bad(key))
    }

    fn u64(&self, key: &str) -> Result<u64, String> {
        Fields::uint(self.get(key)?, key, u64::MAX)
    }

    fn u32(&self, key: &str) -> Result<u32, String> {
        Fields::uint(self.get(key)?, key, u32::MAX.into()).map(|n| n as u32)
    }

    fn usize(&self, key: &str) -> Result<usize, String> {
        Fields::uint(self.get(key)?, key, usize::MAX as u64).map(|n| n as usize)
    }

    /// A `u32` field that may be missing (then 0).
    fn u32_or_0(&self, key: &str) -> Result<u32, String> {
        match self.0.get(key) {
            None => Ok(0),
            Some(v) => Fields::uint(v, key, u32::MAX.into()).map(|n| n as u32),
        }
    }

    fn state(&self, key: &str) -> Result<ExecutionState, String> {
        self.get(key)?
            .as_str()
            .and_then(ExecutionState::parse)
            .ok_or_else(|| Fields::bad(key))
    }

    fn obj(&self, key: &str) -> Result<Fields, String> {
        match self.get(key)? {
            Value::Object(m) => Ok(Fields(m.clone())),
            _ => Err(Fields::bad(key)),
        }
    }
}

fn as_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

impl Json for DocRecord {
    fn to_json(&self) -> Result<String, String> {
        Ok(Obj::new()
            .str("id", &self.id)
            .str("name", &self.name)
            .str("text", &self.text)
            .f64("createdAt", self.created_at)
            .f64("updatedAt", self.updated_at)
            .opt_f64("savedAt", self.saved_at)
            .opt_f64("lastVersionAt", self.last_version_at)
            .u64("nextVersion", self.next_version.into())
            .end())
    }

    fn from_json(text: &str) -> Result<Self, String> {
        let f = Fields::parse(text)?;
        Ok(DocRecord {
            id: f.str("id")?,
            name: f.str("name")?,
            text: f.str("text")?,
            created_at: f.f64("createdAt")?,
            updated_at: f.f64("updatedAt")?,
            saved_at: f.opt_f64("savedAt")?,
            last_version_at: f.opt_f64("lastVersionAt")?,
            next_version: f.u32_or_0("nextVersion")?,
        })
    }
}

impl Json for VersionRecord {
    fn to_json(&self) -> Result<String, String> {
        Ok(Obj::new()
            .str("docId", &self.doc_id)
            .u64("seq", self.seq.into())
            .f64("at", self.at)
            .str("kind", &self.kind)
            .str("name", &self.name)
            .str("text", &self.text)
            .end())
    }

    fn from_json(text: &str) -> Result<Self, String> {
        let f = Fields::parse(text)?;
        Ok(VersionRecord {
            doc_id: f.str("docId")?,
            seq: f.u32("seq")?,
            at: f.f64("at")?,
            kind: f.str("kind")?,
            name: f.str("name")?,
            text: f.str("text")?,
        })
    }
}

impl Json for RunRecord {
    fn to_json(&self) -> Result<String, String> {
        let s = &self.settings;
        let settings = Obj::new()
            .u64("latencyMs", s.latency_ms.into())
            .f64("failureRate", s.failure_rate)
            .u64("seed", s.seed);
        Ok(Obj::new()
            .str("id", &self.id)
            .str("name", &self.name)
            .str("source", &self.source)
            .opt_str("filename", &self.filename)
            .opt_str("docId", &self.doc_id)
            .f64("createdAt", self.created_at)
            .f64("updatedAt", self.updated_at)
            .str("state", self.state.as_str())
            .obj("settings", settings)
            .u64("lastSeq", self.last_seq)
            .u64("completed", self.completed as u64)
            .u64("total", self.total as u64)
            .opt_str("origin", &self.origin)
            .end())
    }

    fn from_json(text: &str) -> Result<Self, String> {
        let f = Fields::parse(text)?;
        let s = f.obj("settings")?;
        Ok(RunRecord {
            id: f.str("id")?,
            name: f.str("name")?,
            source: f.str("source")?,
            filename: f.opt_str("filename")?,
            doc_id: f.opt_str("docId")?,
            created_at: f.f64("createdAt")?,
            updated_at: f.f64("updatedAt")?,
            state: f.state("state")?,
            settings: SimSettings {
                latency_ms: s.u32("latencyMs")?,
                failure_rate: s.f64("failureRate")?,
                seed: s.u64("seed")?,
            },
            last_seq: f.u64("lastSeq")?,
            completed: f.usize("completed")?,
            total: f.usize("total")?,
            origin: f.opt_str("origin")?,
        })
    }
}

/// The IndexedDB database (a cheap handle).
#[derive(Debug, Clone)]
pub struct Store {
    db: IdbDatabase,
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
        let db = idb::open(name, VERSION, &STORES).await?;
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
        idb::delete_database(name).await
    }

    pub fn close(self) {
        self.db.close();
    }

    // The IndexedDB calls are not generic (one copy of each in the wasm);
    // records are (de)serialized around them.
    async fn get<T: Json>(&self, store: &str, key: &str) -> Result<Option<T>, String> {
        match self.get_text(store, key).await? {
            Some(text) => T::from_json(&text).map(Some),
            None => Ok(None),
        }
    }

    async fn get_text(&self, store: &str, key: &str) -> Result<Option<String>, String> {
        idb::get(&self.db, store, key).await
    }

    async fn all<T: Json>(
        &self,
        store: &str,
        range: Option<std::ops::Range<String>>,
    ) -> Result<Vec<T>, String> {
        let texts = idb::get_all(&self.db, store, range).await?;
        Ok(texts.iter().filter_map(|t| T::from_json(t).ok()).collect())
    }

    /// Write several records in one transaction: `(store, key, json)`.
    async fn put_all(&self, writes: &[(&str, String, String)]) -> Result<(), String> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = writes.iter().map(|(s, _, _)| *s).collect();
        ax_core::sort::sort_unstable(&mut names);
        names.dedup();
        idb::put_all(&self.db, &names, writes).await
    }

    async fn put<T: Json>(&self, store: &str, key: &str, value: &T) -> Result<(), String> {
        let json = value.to_json()?;
        self.put_all(&[(store, key.to_owned(), json)]).await
    }

    async fn delete(&self, store: &str, key: &str) -> Result<(), String> {
        idb::delete(&self.db, store, Some(key), None).await
    }

    async fn delete_children(&self, store: &str, parent: &str) -> Result<(), String> {
        idb::delete(&self.db, store, None, Some(children(parent))).await
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
            (VERSIONS, doc_version_key(&doc.id, seq), v.to_json()?),
            (DOCS, doc.id.clone(), doc.to_json()?),
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
            cp.to_json()?,
        ));
        for (hash, text) in outputs {
            writes.push((OUTPUTS, hash.clone(), text.to_string()));
        }
        writes.push((RUNS, run.id.clone(), run.to_json()?));
        self.put_all(&writes).await
    }

    /// A run's checkpoints, oldest first.
    pub async fn list_checkpoints(&self, run_id: &str) -> Result<Vec<CheckpointRecord>, String> {
        // Keys sort by the zero-padded sequence number: oldest first already.
        self.all(CHECKPOINTS, Some(children(run_id))).await
    }

    /// Forget the checkpoints after `seq` (restoring rewinds the run's history).
    pub async fn truncate_checkpoints(&self, run_id: &str, after: u64) -> Result<(), String> {
        let range = checkpoint_key(run_id, after + 1)..format!("{run_id}0");
        idb::delete(&self.db, CHECKPOINTS, None, Some(range)).await
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

#[cfg(test)]
mod tests {
    //! The hand-written JSON of the records against what serde's derive wrote
    //! (and reads): the records stored by earlier versions must still load.
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OldDoc {
        id: String,
        name: String,
        text: String,
        created_at: f64,
        updated_at: f64,
        #[serde(default)]
        saved_at: Option<f64>,
        #[serde(default)]
        last_version_at: Option<f64>,
        #[serde(default)]
        next_version: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OldVersion {
        doc_id: String,
        seq: u32,
        at: f64,
        kind: String,
        name: String,
        text: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OldSettings {
        latency_ms: u32,
        failure_rate: f64,
        seed: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OldRun {
        id: String,
        name: String,
        source: String,
        #[serde(default)]
        filename: Option<String>,
        #[serde(default)]
        doc_id: Option<String>,
        created_at: f64,
        updated_at: f64,
        state: ExecutionState,
        settings: OldSettings,
        last_seq: u64,
        completed: usize,
        total: usize,
        #[serde(default)]
        origin: Option<String>,
    }

    fn docs() -> Vec<DocRecord> {
        let base = DocRecord {
            id: "d-18f3a2b4c5d6e7".into(),
            name: "review \"draft\" ✓.yaml".into(),
            text: "name: x\nsteps:\n  - key: a\t# \\ \u{1} ü 😀\n".into(),
            created_at: 1_732_000_000_123.0,
            updated_at: 1_732_000_000_456.5,
            saved_at: None,
            last_version_at: None,
            next_version: 0,
        };
        vec![
            base.clone(),
            DocRecord {
                saved_at: Some(1_732_000_001_000.25),
                last_version_at: Some(0.1 + 0.2),
                next_version: u32::MAX,
                created_at: 0.0,
                updated_at: -1.5e-7,
                ..base
            },
        ]
    }

    fn old_doc(d: &DocRecord) -> OldDoc {
        OldDoc {
            id: d.id.clone(),
            name: d.name.clone(),
            text: d.text.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            saved_at: d.saved_at,
            last_version_at: d.last_version_at,
            next_version: d.next_version,
        }
    }

    fn runs() -> Vec<RunRecord> {
        let base = RunRecord {
            id: "r-1".into(),
            name: "release notes".into(),
            source: "name: w\n".into(),
            filename: None,
            doc_id: None,
            created_at: 1.0,
            updated_at: 2.5,
            state: ExecutionState::Paused,
            settings: SimSettings::default(),
            last_seq: 0,
            completed: 0,
            total: 3,
            origin: None,
        };
        let mut all = vec![base.clone()];
        for (i, state) in ExecutionState::ALL.into_iter().enumerate() {
            all.push(RunRecord {
                filename: Some(format!("w{i}.yaml")),
                doc_id: Some("d-1".into()),
                state,
                settings: SimSettings {
                    latency_ms: 17 * i as u32,
                    failure_rate: 12.5 * i as f64 / 3.0,
                    seed: u64::MAX - i as u64,
                },
                last_seq: 1 << 40,
                completed: i,
                origin: Some("server http://x/".into()),
                ..base.clone()
            });
        }
        all
    }

    fn old_run(r: &RunRecord) -> OldRun {
        OldRun {
            id: r.id.clone(),
            name: r.name.clone(),
            source: r.source.clone(),
            filename: r.filename.clone(),
            doc_id: r.doc_id.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            state: r.state,
            settings: OldSettings {
                latency_ms: r.settings.latency_ms,
                failure_rate: r.settings.failure_rate,
                seed: r.settings.seed,
            },
            last_seq: r.last_seq,
            completed: r.completed,
            total: r.total,
            origin: r.origin.clone(),
        }
    }

    #[test]
    fn docs_are_stored_as_before() {
        for d in docs() {
            let old = serde_json::to_string(&old_doc(&d)).unwrap();
            assert_eq!(d.to_json().unwrap(), old);
            assert_eq!(DocRecord::from_json(&old).unwrap(), d);
            let back: OldDoc = serde_json::from_str(&d.to_json().unwrap()).unwrap();
            assert_eq!(back, old_doc(&d));
        }
        // Written before the optional fields existed; unknown keys are ignored.
        let short = r#"{"id":"d","name":"n","text":"t","createdAt":1,"updatedAt":2.0,"extra":[1]}"#;
        let d = DocRecord::from_json(short).unwrap();
        let old: OldDoc = serde_json::from_str(short).unwrap();
        assert_eq!(old_doc(&d), old);
        assert_eq!((d.saved_at, d.next_version), (None, 0));
        let nulls =
            r#"{"id":"d","name":"n","text":"t","createdAt":1,"updatedAt":2,"savedAt":null}"#;
        assert_eq!(DocRecord::from_json(nulls).unwrap().saved_at, None);
        // What serde refused is refused.
        for bad in [
            r#"{"name":"n","text":"t","createdAt":1,"updatedAt":2}"#,
            r#"{"id":1,"name":"n","text":"t","createdAt":1,"updatedAt":2}"#,
            r#"{"id":"d","name":"n","text":"t","createdAt":"1","updatedAt":2}"#,
            r#"{"id":"d","name":"n","text":"t","createdAt":1,"updatedAt":2,"nextVersion":-1}"#,
            r#"{"id":"d","name":"n","text":"t","createdAt":1,"updatedAt":2,"nextVersion":1.5}"#,
            r#"{"id":"d","name":"n","text":"t","createdAt":1,"updatedAt":2,"nextVersion":4294967296}"#,
            r#"[1]"#,
            r#"{"id":"d""#,
        ] {
            assert!(DocRecord::from_json(bad).is_err(), "{bad}");
            assert!(serde_json::from_str::<OldDoc>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_are_stored_as_before() {
        let v = VersionRecord {
            doc_id: "d-1".into(),
            seq: 7,
            at: 1_732_000_000_123.0,
            kind: "before-restore".into(),
            name: "a.json".into(),
            text: "{\"name\": \"x\"}\n".into(),
        };
        let old = OldVersion {
            doc_id: v.doc_id.clone(),
            seq: v.seq,
            at: v.at,
            kind: v.kind.clone(),
            name: v.name.clone(),
            text: v.text.clone(),
        };
        let old_json = serde_json::to_string(&old).unwrap();
        assert_eq!(v.to_json().unwrap(), old_json);
        assert_eq!(VersionRecord::from_json(&old_json).unwrap(), v);
    }

    #[test]
    fn runs_are_stored_as_before() {
        for r in runs() {
            let old = serde_json::to_string(&old_run(&r)).unwrap();
            assert_eq!(r.to_json().unwrap(), old);
            assert_eq!(RunRecord::from_json(&old).unwrap(), r);
            let back: OldRun = serde_json::from_str(&r.to_json().unwrap()).unwrap();
            assert_eq!(back, old_run(&r));
        }
        let bad_state = runs()[0].to_json().unwrap().replace("paused", "sleeping");
        assert!(RunRecord::from_json(&bad_state).is_err());
        assert!(serde_json::from_str::<OldRun>(&bad_state).is_err());
        let no_settings = r#"{"id":"r","name":"n","source":"s","createdAt":1,"updatedAt":2,"state":"idle","lastSeq":0,"completed":0,"total":0}"#;
        assert!(RunRecord::from_json(no_settings).is_err());
        assert!(serde_json::from_str::<OldRun>(no_settings).is_err());
    }
}
