//! Documents kept in this browser (IndexedDB through [`Store`]): which one is
//! open, autosaving its draft, explicit saves with versions, opening and
//! creating documents, and the session restored after a reload.

use crate::editing::Editor;
use crate::notice::Notices;
use crate::store::{DocRecord, Store};
use leptos::prelude::*;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum StorageStatus {
    Opening,
    Ready,
    Unavailable(String),
}

/// The storage context; `Copy`, so that closures take it freely.
#[derive(Clone, Copy)]
pub struct Storage {
    pub store: StoredValue<Option<Store>, LocalStorage>,
    pub status: RwSignal<StorageStatus>,
    /// The open document's id (`None` until storage is ready, or without storage).
    pub doc_id: RwSignal<Option<String>>,
    /// The text as last saved explicitly (for the "unsaved" mark).
    pub saved_text: RwSignal<Option<String>>,
    /// Notified when stored documents or runs change (lists refetch).
    pub docs_changed: Trigger,
    pub runs_changed: Trigger,
    pending_autosave: StoredValue<Option<TimeoutHandle>>,
    editor: Editor,
    notices: Notices,
}

impl Storage {
    /// Storage for `editor`'s document; every change of the text is autosaved.
    pub fn new(editor: Editor, notices: Notices) -> Storage {
        let storage = Storage {
            store: StoredValue::new_local(None),
            status: RwSignal::new(StorageStatus::Opening),
            doc_id: RwSignal::new(None),
            saved_text: RwSignal::new(None),
            docs_changed: Trigger::new(),
            runs_changed: Trigger::new(),
            pending_autosave: StoredValue::new(None),
            editor,
            notices,
        };
        editor.on_change(move || storage.schedule_autosave());
        storage
    }

    /// Open the database and the session's document (`initial`: create this one
    /// instead, for tests and embedding).
    pub async fn open(&self, db_name: &str, initial: Option<(String, String)>) {
        match Store::open(db_name).await {
            Ok(store) => {
                self.store.set_value(Some(store));
                self.status.set(StorageStatus::Ready);
                self.restore_session(initial).await;
            }
            Err(e) => self.status.set(StorageStatus::Unavailable(e)),
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.status.get_untracked(), StorageStatus::Ready)
    }

    /// Store the draft 700 ms after the last change.
    pub fn schedule_autosave(&self) {
        if let Some(h) = self.pending_autosave.get_value() {
            h.clear();
        }
        let this = *self;
        let handle =
            set_timeout_with_handle(move || this.autosave_now(), Duration::from_millis(700)).ok();
        self.pending_autosave.set_value(handle);
    }

    pub fn autosave_now(&self) {
        if let Some(h) = self.pending_autosave.get_value() {
            h.clear();
            self.pending_autosave.set_value(None);
        }
        let this = *self;
        leptos::task::spawn_local(async move {
            if let Err(e) = this.store_draft(None).await {
                this.notices.error(format!("Autosave failed: {e}"));
            }
        });
    }

    /// Write the current text into its document; `version` adds a snapshot of
    /// that kind (explicit saves), and autosaves add one every five minutes.
    pub async fn store_draft(&self, version: Option<&str>) -> Result<Option<u32>, String> {
        let Some(store) = self.store.get_value() else {
            return Ok(None);
        };
        let Some(id) = self.doc_id.get_untracked() else {
            return Ok(None);
        };
        let text = self.editor.text.get_untracked();
        let name = self.editor.name.get_untracked();
        let t = js_sys::Date::now();
        let mut doc = store.get_doc(&id).await?.unwrap_or(DocRecord {
            id: id.clone(),
            name: name.clone(),
            text: String::new(),
            created_at: t,
            updated_at: t,
            saved_at: None,
            last_version_at: None,
            next_version: 1,
        });
        let changed = doc.text != text || doc.name != name;
        doc.text = text;
        doc.name = name;
        if changed {
            doc.updated_at = t;
        }
        let kind = match version {
            Some(k) => Some(k),
            None if changed && doc.last_version_at.is_none_or(|v| t - v > 5.0 * 60_000.0) => {
                Some("auto")
            }
            None => None,
        };
        let seq = match kind {
            Some(kind) => {
                if kind == "save" {
                    doc.saved_at = Some(t);
                }
                Some(store.add_version(&mut doc, kind).await?.seq)
            }
            None if changed => {
                store.put_doc(&doc).await?;
                None
            }
            None => None,
        };
        if changed || seq.is_some() {
            self.docs_changed.notify();
        }
        Ok(seq)
    }

    /// Explicit save: the draft plus a version snapshot.
    pub fn save(&self) {
        let this = *self;
        if !self.is_ready() {
            self.notices.error("Cannot save: browser storage (IndexedDB) is not available here. Export the file instead.");
            return;
        }
        leptos::task::spawn_local(async move {
            match this.store_draft(Some("save")).await {
                Ok(Some(seq)) => {
                    this.saved_text.set(Some(this.editor.text.get_untracked()));
                    this.notices.info(format!(
                        "Saved {} (version {seq}).",
                        this.editor.name.get_untracked()
                    ));
                }
                Ok(None) => this
                    .notices
                    .error("Nothing to save to: no document is open."),
                Err(e) => this.notices.error(format!("Save failed: {e}")),
            }
        });
    }

    /// Show a stored document in the editor.
    pub fn open_doc(&self, doc: DocRecord) {
        self.doc_id.set(Some(doc.id.clone()));
        self.saved_text.set(doc.saved_at.map(|_| doc.text.clone()));
        self.editor.load(doc.name.clone(), doc.text);
        if let Some(store) = self.store.get_value() {
            let id = doc.id;
            leptos::task::spawn_local(async move {
                let _ = store.put_meta("current", &id).await;
            });
        }
    }

    /// Open the document a `type: workflow` step of the open document runs
    /// (`reference` as written, relative to this document's name), or say that
    /// this browser has none by that name.
    pub fn open_child(&self, reference: String) {
        let this = *self;
        let from = self.editor.name.get_untracked();
        let want = ax_core::subworkflow::join_path(&from, &reference);
        leptos::task::spawn_local(async move {
            let Some(store) = this.store.get_value() else {
                this.notices
                    .error("Storage is unavailable: no documents to open.");
                return;
            };
            let _ = this.store_draft(None).await;
            let docs = store.list_docs().await.unwrap_or_default();
            match docs
                .into_iter()
                .find(|d| ax_core::subworkflow::join_path("", &d.name) == want)
            {
                Some(doc) => this.open_doc(doc),
                None => this.notices.error(format!(
                    "No document named `{want}` in this browser (step's workflow: `{reference}`): create it with New or Import… under that name."
                )),
            }
        });
    }

    /// Store the current draft, then create and open a new document.
    pub fn new_doc(&self, name: String, text: String) {
        let this = *self;
        leptos::task::spawn_local(async move {
            let _ = this.store_draft(None).await;
            match this.store.get_value() {
                Some(store) => match store.create_doc(&name, &text).await {
                    Ok(doc) => {
                        this.open_doc(doc);
                        this.docs_changed.notify();
                    }
                    Err(e) => this
                        .notices
                        .error(format!("Could not create the document: {e}")),
                },
                None => {
                    this.doc_id.set(None);
                    this.editor.load(name, text);
                }
            }
        });
    }

    /// Open the session's document (or the newest, or a new starter).
    async fn restore_session(&self, initial: Option<(String, String)>) {
        let Some(store) = self.store.get_value() else {
            return;
        };
        if let Some((name, text)) = initial {
            if let Ok(doc) = store.create_doc(&name, &text).await {
                self.doc_id.set(Some(doc.id));
            }
            return;
        }
        let current = store.get_meta("current").await.ok().flatten();
        let doc = match current {
            Some(id) => store.get_doc(&id).await.ok().flatten(),
            None => None,
        };
        let doc = match doc {
            Some(d) => Some(d),
            None => store
                .list_docs()
                .await
                .ok()
                .and_then(|d| d.into_iter().next()),
        };
        match doc {
            Some(d) => self.open_doc(d),
            None => {
                let name = self.editor.name.get_untracked();
                let text = self.editor.text.get_untracked();
                if let Ok(doc) = store.create_doc(&name, &text).await {
                    let _ = store.put_meta("current", &doc.id).await;
                    self.doc_id.set(Some(doc.id));
                }
            }
        }
        self.docs_changed.notify();
    }

    /// Close the database connection (before deleting it, or on unmount).
    pub fn close(&self) {
        let mut taken = None;
        self.store.update_value(|s| taken = s.take());
        if let Some(s) = taken {
            s.close();
        }
    }
}

/// The storage from context.
pub fn use_storage() -> Storage {
    expect_context::<Storage>()
}
