//! The designer's state, shared by every component through context: the
//! document text (the one source of truth), its latest analysis, the layout
//! derived from it, the selection, the run shown on the graph, storage and
//! server status. Edits from the form and the graph go through [`Designer`]
//! methods that splice the text with `ax_core::edit`.

use crate::browser::{now_ms, perf_now};
use crate::dryrun::StepView;
use crate::layout::{self, Layout};
use crate::store::{DocRecord, Store};
use crate::text;
use ax_core::model::Step;
use ax_core::parse::Format;
use ax_core::{Analysis, ExecutionState, Options, StepState, analyze, edit};
use leptos::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// How the app is set up (tests use their own database and no server probe).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub db_name: String,
    /// Probe `/healthz` for an `ax serve` next to the page.
    pub probe_server: bool,
    /// Base URL of the server API ("" = the page's origin).
    pub server_base: String,
    /// Open this text instead of the stored session (tests).
    pub initial: Option<(String, String)>,
    /// Delay before validating after a keystroke, in milliseconds.
    pub debounce_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db_name: crate::store::DEFAULT_DB.into(),
            probe_server: true,
            server_base: String::new(),
            initial: None,
            debounce_ms: 0,
        }
    }
}

/// The text's analysis, and how long it took.
#[derive(Debug)]
pub struct Analyzed {
    /// The text generation it was made from.
    pub generation: u64,
    pub analysis: Analysis,
    pub format: Format,
    pub millis: f64,
}

impl Analyzed {
    pub fn workflow(&self) -> Option<&ax_core::Workflow> {
        self.analysis.workflow()
    }
    pub fn step_index(&self, key: &str) -> Option<usize> {
        self.workflow()?.steps.iter().position(|s| s.key == key)
    }
}

/// A message for the user (errors stay until dismissed).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub error: bool,
    pub text: String,
}

/// The side panel's tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Step,
    Run,
    Documents,
    Server,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StorageStatus {
    Opening,
    Ready,
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ServerStatus {
    /// Not probed (yet, or disabled).
    Unknown,
    Connected {
        version: String,
    },
    Unreachable(String),
}

/// Where the run on the graph runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Local,
    Server,
}

/// A stored checkpoint as lists show it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    /// The local sequence number or the server's checkpoint id.
    pub id: String,
    pub seq: u64,
    pub at: f64,
    pub state: Option<ExecutionState>,
    pub completed: usize,
}

/// The run shown on the graph and in the run panel.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub kind: RunKind,
    pub id: String,
    pub name: String,
    pub state: ExecutionState,
    pub reason: Option<String>,
    pub steps: Vec<(String, StepView)>,
    pub checkpoints: Vec<CheckpointMeta>,
    /// The workflow text it runs (may differ from the editor's).
    pub source: Option<String>,
}

impl RunView {
    pub fn completed(&self) -> usize {
        self.steps
            .iter()
            .filter(|(_, s)| s.state == StepState::Completed)
            .count()
    }
}

/// Shared state; `Copy` so that closures take it freely.
#[derive(Clone, Copy)]
pub struct Designer {
    pub config: StoredValue<Config>,
    pub text: RwSignal<String>,
    generation: StoredValue<u64>,
    pub name: RwSignal<String>,
    pub doc_id: RwSignal<Option<String>>,
    /// The text as last saved explicitly (for the "unsaved" mark).
    pub saved_text: RwSignal<Option<String>>,
    pub analyzed: RwSignal<Arc<Analyzed>>,
    pub layout: Memo<Arc<Layout>>,
    /// Levels as rows (top to bottom) instead of columns.
    pub vertical: RwSignal<bool>,
    pub selected: RwSignal<Option<String>>,
    /// The selected edge `(dependent, dependency)`.
    pub selected_edge: RwSignal<Option<(String, String)>>,
    /// Connect mode: `Some(None)` waits for a source, `Some(Some(k))` for a target.
    pub connect: RwSignal<Option<Option<String>>>,
    pub notice: RwSignal<Option<Notice>>,
    pub panel: RwSignal<Panel>,
    pub run: RwSignal<Option<RunView>>,
    pub states: Memo<Vec<(String, StepState)>>,
    pub store: StoredValue<Option<Store>, LocalStorage>,
    pub storage: RwSignal<StorageStatus>,
    pub server: RwSignal<ServerStatus>,
    /// Notified when stored documents or runs change (lists refetch). Triggers
    /// carry no value, so no signal type of their own.
    pub docs_changed: Trigger,
    pub runs_changed: Trigger,
    pending_analysis: StoredValue<Option<TimeoutHandle>>,
    pending_autosave: StoredValue<Option<TimeoutHandle>>,
    pub editor: crate::ui::ElRef,
}

fn run_analysis(text: &str, name: &str, generation: u64) -> Analyzed {
    let t0 = perf_now();
    let format = text::format_of(name, text);
    let analysis = analyze(
        text,
        &Options {
            format: Some(format),
            ..Options::default()
        },
    );
    Analyzed {
        generation,
        analysis,
        format,
        millis: perf_now() - t0,
    }
}

impl Designer {
    pub fn new(config: Config) -> Designer {
        let (name, text) = config
            .initial
            .clone()
            .unwrap_or_else(|| ("release-notes.yaml".into(), text::STARTER.into()));
        let analyzed = RwSignal::new(Arc::new(run_analysis(&text, &name, 1)));
        let vertical = RwSignal::new(false);
        // Typing in a prompt does not change the graph's shape: the layout (and
        // the SVG) is only recomputed when keys, agents or dependencies change.
        let layout = Memo::new_with_compare(
            move |prev: Option<&Arc<Layout>>| {
                let v = vertical.get();
                analyzed.with(|a| match a.analysis.workflow() {
                    Some(wf) if !wf.steps.is_empty() => {
                        let shape = layout::shape_of(wf, a.analysis.graph().is_some(), v);
                        match prev {
                            Some(p) if p.shape == shape => p.clone(),
                            _ => Arc::new(layout::layout_oriented(wf, a.analysis.graph(), v)),
                        }
                    }
                    Some(_) => Arc::new(Layout::default()),
                    // Unparsable text: keep the last picture.
                    None => prev.cloned().unwrap_or_default(),
                })
            },
            |a, b| match (a, b) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                _ => true,
            },
        );
        let run: RwSignal<Option<RunView>> = RwSignal::new(None);
        // Sorted by key (see `state_of`): no `HashMap` type of its own in the wasm.
        let states = Memo::new(move |_| {
            let mut v: Vec<(String, StepState)> = run.with(|r| {
                r.as_ref()
                    .map(|r| r.steps.iter().map(|(k, v)| (k.clone(), v.state)).collect())
                    .unwrap_or_default()
            });
            ax_core::sort::sort_by(&mut v, |a, b| a.0.cmp(&b.0));
            v
        });
        Designer {
            config: StoredValue::new(config),
            text: RwSignal::new(text),
            generation: StoredValue::new(1),
            name: RwSignal::new(name),
            doc_id: RwSignal::new(None),
            saved_text: RwSignal::new(None),
            analyzed,
            layout,
            vertical,
            selected: RwSignal::new(None),
            selected_edge: RwSignal::new(None),
            connect: RwSignal::new(None),
            notice: RwSignal::new(None),
            panel: RwSignal::new(Panel::Step),
            run,
            states,
            store: StoredValue::new_local(None),
            storage: RwSignal::new(StorageStatus::Opening),
            server: RwSignal::new(ServerStatus::Unknown),
            docs_changed: Trigger::new(),
            runs_changed: Trigger::new(),
            pending_analysis: StoredValue::new(None),
            pending_autosave: StoredValue::new(None),
            editor: NodeRef::new(),
        }
    }

    pub fn info(&self, text: impl Into<String>) {
        self.notice.set(Some(Notice {
            error: false,
            text: text.into(),
        }));
    }

    pub fn error(&self, text: impl Into<String>) {
        self.notice.set(Some(Notice {
            error: true,
            text: text.into(),
        }));
    }

    pub fn format(&self) -> Format {
        self.name
            .with_untracked(|n| self.text.with_untracked(|t| text::format_of(n, t)))
    }

    /// The user typed: keep the text, validate soon, autosave later.
    pub fn user_edit(&self, new_text: String) {
        self.text.set(new_text);
        self.changed();
    }

    /// Replace the text (form and graph edits, restores, opening documents).
    pub fn set_text(&self, new_text: String) {
        if self.text.with_untracked(|t| *t == new_text) {
            return;
        }
        self.text.set(new_text);
        self.changed();
        // Programmatic edits are validated at once: the form reads the result.
        self.analyze_now();
    }

    fn changed(&self) {
        self.generation.update_value(|g| *g += 1);
        self.schedule_analysis();
        self.schedule_autosave();
    }

    fn schedule_analysis(&self) {
        if let Some(h) = self.pending_analysis.get_value() {
            h.clear();
        }
        let this = *self;
        let len = self.text.with_untracked(String::len);
        let configured = self.config.with_value(|c| c.debounce_ms);
        // Big documents wait for a pause in typing; small ones are checked on the next tick.
        let delay = if len > 60_000 {
            configured.max(60)
        } else {
            configured
        };
        let handle = set_timeout_with_handle(
            move || drop(this.analyze_now()),
            Duration::from_millis(u64::from(delay)),
        )
        .ok();
        self.pending_analysis.set_value(handle);
    }

    /// The analysis of the current text, computed now if it is out of date.
    pub fn analyze_now(&self) -> Arc<Analyzed> {
        let generation = self.generation.get_value();
        let current = self.analyzed.get_untracked();
        if current.generation == generation {
            return current;
        }
        if let Some(h) = self.pending_analysis.get_value() {
            h.clear();
            self.pending_analysis.set_value(None);
        }
        let name = self.name.get_untracked();
        let a = Arc::new(
            self.text
                .with_untracked(|t| run_analysis(t, &name, generation)),
        );
        self.analyzed.set(a.clone());
        a
    }

    /// Rename the current document (its extension may change the format).
    pub fn rename(&self, name: String) {
        self.name.set(name);
        self.generation.update_value(|g| *g += 1);
        self.analyze_now();
        self.schedule_autosave();
    }

    // ---- Edits through ax_core::edit ----

    fn apply_edit(
        &self,
        edit: impl FnOnce(&str, Option<Format>) -> Result<String, edit::EditError>,
    ) -> bool {
        let format = Some(self.format());
        let result = self.text.with_untracked(|t| edit(t, format));
        match result {
            Ok(t) => {
                self.set_text(t);
                true
            }
            Err(e) => {
                self.error(e.to_string());
                false
            }
        }
    }

    /// The step with this key in the current analysis: (index, step).
    pub fn step(&self, key: &str) -> Option<(usize, Step)> {
        let a = self.analyze_now();
        let i = a.step_index(key)?;
        Some((i, a.workflow()?.steps[i].clone()))
    }

    /// Write a changed step back into the text.
    pub fn update_step(&self, key: &str, new: Step) -> bool {
        let Some((i, _)) = self.step(key) else {
            self.error(format!("step `{key}` is no longer in the text"));
            return false;
        };
        let renamed = new.key != key;
        let new_key = new.key.clone();
        let ok = self.apply_edit(|t, f| edit::update_step(t, f, i, &new));
        if ok && renamed && self.selected.get_untracked().as_deref() == Some(key) {
            self.selected.set(Some(new_key));
        }
        ok
    }

    /// Make `dependent` depend on `dependency`, unless that closes a cycle.
    pub fn connect(&self, dependency: &str, dependent: &str) -> bool {
        let a = self.analyze_now();
        let Some(wf) = a.workflow() else { return false };
        if let Some(cycle) = layout::cycle_if_added(wf, dependent, dependency) {
            let why = if cycle.len() == 2 {
                format!("a step cannot depend on itself (`{dependent}`)")
            } else {
                format!("it would close the cycle {}", cycle.join(" → "))
            };
            self.error(format!(
                "Refused: `{dependent}` cannot depend on `{dependency}`: {why}."
            ));
            return false;
        }
        let Some(i) = a.step_index(dependent) else {
            return false;
        };
        if wf.steps[i].dependencies.iter().any(|d| d == dependency) {
            self.info(format!("`{dependent}` already depends on `{dependency}`."));
            return false;
        }
        let ok = self.apply_edit(|t, f| edit::add_dependency(t, f, i, dependency));
        if ok {
            self.info(format!("`{dependent}` now depends on `{dependency}`."));
        }
        ok
    }

    pub fn disconnect(&self, dependent: &str, dependency: &str) -> bool {
        let Some((i, _)) = self.step(dependent) else {
            return false;
        };
        let ok = self.apply_edit(|t, f| edit::remove_dependency(t, f, i, dependency));
        if ok {
            self.selected_edge.set(None);
            self.info(format!(
                "`{dependent}` no longer depends on `{dependency}`."
            ));
        }
        ok
    }

    /// Add a step (after the selected one's agent, depending on it) and select it.
    pub fn add_step(&self) -> Option<String> {
        let a = self.analyze_now();
        let wf = a.workflow();
        let key = text::unique_key(wf, "step");
        let after = self
            .selected
            .get_untracked()
            .filter(|k| a.step_index(k).is_some());
        let agent = after
            .as_deref()
            .and_then(|k| wf.and_then(|w| w.step(k)).map(|s| s.agent.clone()))
            .or_else(|| wf.and_then(|w| w.steps.last()).map(|s| s.agent.clone()))
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| "assistant".into());
        let step = Step {
            key: key.clone(),
            agent,
            prompt: "Describe what this step should do.".into(),
            dependencies: after.into_iter().collect(),
            parallel: false,
            optional: false,
            timeout_ms: None,
            retry_policy: None,
            output_schema: None,
            when: None,
            ..Step::default()
        };
        if self.apply_edit(|t, f| edit::add_step(t, f, &step)) {
            self.selected.set(Some(key.clone()));
            self.panel.set(Panel::Step);
            Some(key)
        } else {
            None
        }
    }

    pub fn remove_step(&self, key: &str) -> bool {
        let Some((i, _)) = self.step(key) else {
            return false;
        };
        let ok = self.apply_edit(|t, f| edit::remove_step(t, f, i));
        if ok {
            self.selected.set(None);
            self.info(format!("Removed step `{key}`."));
        }
        ok
    }

    /// Put the textarea's cursor on a range (UTF-16 offsets) and focus it.
    pub fn reveal(&self, start: u32, end: u32) {
        let Some(ta) = self.editor.get_untracked().map(crate::ui::textarea) else {
            return;
        };
        let line = self.text.with_untracked(|t| text::line_of_utf16(t, start));
        let _ = ta.focus();
        let _ = ta.set_selection_range(start, end);
        // Scroll so that the line sits a few lines from the top.
        let line_height = 20.0;
        let top = ((f64::from(line) - 4.0) * line_height).max(0.0);
        ta.set_scroll_top(top as i32);
    }

    // ---- Documents ----

    /// Store the draft now (autosave), with a version snapshot if the last one
    /// is older than five minutes.
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
                this.error(format!("Autosave failed: {e}"));
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
        let text = self.text.get_untracked();
        let name = self.name.get_untracked();
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
        if !matches!(self.storage.get_untracked(), StorageStatus::Ready) {
            self.error("Cannot save: browser storage (IndexedDB) is not available here. Export the file instead.");
            return;
        }
        leptos::task::spawn_local(async move {
            match this.store_draft(Some("save")).await {
                Ok(Some(seq)) => {
                    this.saved_text.set(Some(this.text.get_untracked()));
                    this.info(format!(
                        "Saved {} (version {seq}).",
                        this.name.get_untracked()
                    ));
                }
                Ok(None) => this.error("Nothing to save to: no document is open."),
                Err(e) => this.error(format!("Save failed: {e}")),
            }
        });
    }

    /// Show a stored document in the editor.
    pub fn open_doc(&self, doc: DocRecord) {
        self.selected.set(None);
        self.selected_edge.set(None);
        self.name.set(doc.name.clone());
        self.doc_id.set(Some(doc.id.clone()));
        self.saved_text.set(doc.saved_at.map(|_| doc.text.clone()));
        self.text.set(doc.text);
        self.generation.update_value(|g| *g += 1);
        self.analyze_now();
        if let Some(store) = self.store.get_value() {
            let id = doc.id;
            leptos::task::spawn_local(async move {
                let _ = store.put_meta("current", &id).await;
            });
        }
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
                    Err(e) => this.error(format!("Could not create the document: {e}")),
                },
                None => {
                    this.doc_id.set(None);
                    this.name.set(name);
                    this.set_text(text);
                }
            }
        });
    }

    /// Open the session's document (or the newest, or a new starter).
    pub async fn restore_session(&self) {
        let Some(store) = self.store.get_value() else {
            return;
        };
        if let Some((name, text)) = self.config.with_value(|c| c.initial.clone()) {
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
                let name = self.name.get_untracked();
                let text = self.text.get_untracked();
                if let Ok(doc) = store.create_doc(&name, &text).await {
                    let _ = store.put_meta("current", &doc.id).await;
                    self.doc_id.set(Some(doc.id));
                }
            }
        }
        self.docs_changed.notify();
    }

    /// Close the database connection (before deleting it, or on unmount).
    pub fn close_storage(&self) {
        let mut taken = None;
        self.store.update_value(|s| taken = s.take());
        if let Some(s) = taken {
            s.close();
        }
    }

    /// Milliseconds since the epoch (for records).
    pub fn now(&self) -> u64 {
        now_ms()
    }
}

/// The designer from context.
pub fn use_designer() -> Designer {
    expect_context::<Designer>()
}

/// A step's state in `Designer::states` (sorted by key); pending if it has none.
pub fn state_of(states: &[(String, StepState)], key: &str) -> StepState {
    match states.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
        Ok(i) => states[i].1,
        Err(_) => StepState::default(),
    }
}
