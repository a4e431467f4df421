//! The document being edited: its text (the source of truth for everything
//! else), its latest analysis, the graph's layout derived from it, and the
//! selection in the graph. Form and graph edits go through [`Editor`] methods
//! that splice the text with `ax_core::edit`; with the code editor mounted they
//! reach the text through it, so that its undo history covers them.

use crate::browser::perf_now;
use crate::editor_host::EditorHost;
use crate::layout::{self, Layout};
use crate::notice::Notices;
use crate::text;
use ax_core::model::Step;
use ax_core::parse::Format;
use ax_core::{Analysis, Options, analyze, edit};
use leptos::prelude::*;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

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

/// Undo and redo depths of the code editor's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    pub undo: u32,
    pub redo: u32,
}

/// The editor context; `Copy`, so that closures take it freely.
#[derive(Clone, Copy)]
pub struct Editor {
    pub text: RwSignal<String>,
    generation: StoredValue<u64>,
    /// The document's name: its extension decides YAML or JSON.
    pub name: RwSignal<String>,
    pub analyzed: RwSignal<Arc<Analyzed>>,
    pub layout: Memo<Arc<Layout>>,
    /// Levels as rows (top to bottom) instead of columns.
    pub vertical: RwSignal<bool>,
    pub selected: RwSignal<Option<String>>,
    /// The selected edge `(dependent, dependency)`.
    pub selected_edge: RwSignal<Option<(String, String)>>,
    /// Connect mode: `Some(None)` waits for a source, `Some(Some(k))` for a target.
    pub connect: RwSignal<Option<Option<String>>>,
    /// The code editor's cursor (UTF-16 offset), for the problem list.
    pub cursor: RwSignal<u32>,
    pub history: RwSignal<History>,
    /// The mounted code editor, if any.
    host: StoredValue<Option<EditorHost>, LocalStorage>,
    /// Called after every change of the text (autosave).
    after_change: StoredValue<Option<Rc<dyn Fn()>>, LocalStorage>,
    debounce_ms: StoredValue<u32>,
    pending_analysis: StoredValue<Option<TimeoutHandle>>,
    pub notices: Notices,
}

impl Editor {
    pub fn new(name: String, text: String, debounce_ms: u32, notices: Notices) -> Editor {
        let analyzed = RwSignal::new(Arc::new(run_analysis(&text, &name, 1)));
        let vertical = RwSignal::new(false);
        Editor {
            text: RwSignal::new(text),
            generation: StoredValue::new(1),
            name: RwSignal::new(name),
            analyzed,
            layout: layout_memo(analyzed, vertical),
            vertical,
            selected: RwSignal::new(None),
            selected_edge: RwSignal::new(None),
            connect: RwSignal::new(None),
            cursor: RwSignal::new(0),
            history: RwSignal::new(History::default()),
            host: StoredValue::new_local(None),
            after_change: StoredValue::new_local(None),
            debounce_ms: StoredValue::new(debounce_ms),
            pending_analysis: StoredValue::new(None),
            notices,
        }
    }

    /// The code editor now shows the text (or is gone, with `None`).
    pub fn attach(&self, host: Option<EditorHost>) {
        self.host.set_value(host);
    }

    pub fn with_host<R>(&self, f: impl FnOnce(&EditorHost) -> R) -> Option<R> {
        self.host.try_with_value(|h| h.as_ref().map(f)).flatten()
    }

    /// Run `f` after every change of the text.
    pub fn on_change(&self, f: impl Fn() + 'static) {
        self.after_change.set_value(Some(Rc::new(f)));
    }

    pub fn format(&self) -> Format {
        self.name
            .with_untracked(|n| self.text.with_untracked(|t| text::format_of(n, t)))
    }

    /// The text changed in the code editor (typing, undo, or an edit of ours
    /// passing through it): keep it, validate soon.
    pub fn user_edit(&self, new_text: String) {
        self.text.set(new_text);
        self.changed();
    }

    /// The code editor changed part of the text: `(from, to, inserted)` in UTF-16
    /// offsets of the text before the change, ascending and not overlapping.
    pub fn user_edits(&self, edits: &[(u32, u32, String)]) {
        self.text.update(|t| {
            // Back to front, so that earlier offsets stay valid.
            for (from, to, inserted) in edits.iter().rev() {
                let byte = |u: u32| {
                    if t.is_ascii() {
                        (u as usize).min(t.len())
                    } else {
                        text::byte_offset(t, u)
                    }
                };
                let (a, b) = (byte(*from), byte(*to));
                if a <= b && b <= t.len() {
                    t.replace_range(a..b, inserted);
                }
            }
        });
        self.changed();
    }

    /// Replace the text (form and graph edits, restores): through the code
    /// editor when it is there, as one undoable step that keeps the cursor.
    pub fn set_text(&self, new_text: String) {
        if self.text.with_untracked(|t| *t == new_text) {
            return;
        }
        let through_editor = self.with_host(|h| h.replace_all(&new_text)).is_some();
        if !through_editor || self.text.with_untracked(|t| *t != new_text) {
            self.text.set(new_text);
            self.changed();
        }
        // Programmatic edits are validated at once: the form reads the result.
        self.analyze_now();
    }

    /// Show another document: its text with a history of its own.
    pub fn load(&self, name: String, new_text: String) {
        self.selected.set(None);
        self.selected_edge.set(None);
        self.name.set(name);
        let format = self.format_of_text(&new_text);
        if self.with_host(|h| h.reset(&new_text, format)).is_none()
            || self.text.with_untracked(|t| *t != new_text)
        {
            self.text.set(new_text);
            self.changed();
        }
        self.analyze_now();
    }

    fn format_of_text(&self, t: &str) -> Format {
        self.name.with_untracked(|n| text::format_of(n, t))
    }

    fn changed(&self) {
        self.generation.update_value(|g| *g += 1);
        self.schedule_analysis();
        if let Some(f) = self.after_change.get_value() {
            f();
        }
    }

    fn schedule_analysis(&self) {
        if let Some(h) = self.pending_analysis.get_value() {
            h.clear();
        }
        let this = *self;
        let len = self.text.with_untracked(String::len);
        let configured = self.debounce_ms.get_value();
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

    /// Whether the analysis is of the current text.
    pub fn is_current(&self, a: &Analyzed) -> bool {
        self.generation.get_value() == a.generation
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

    /// Rename the document (its extension may change the format).
    pub fn rename(&self, name: String) {
        self.name.set(name);
        self.generation.update_value(|g| *g += 1);
        self.analyze_now();
        if let Some(f) = self.after_change.get_value() {
            f();
        }
    }

    /// Select a range of the text (UTF-16 offsets) in the code editor and focus it.
    pub fn reveal(&self, start: u32, end: u32) {
        self.with_host(|h| h.select(start, end));
    }

    pub fn undo(&self) {
        self.with_host(EditorHost::undo);
    }

    pub fn redo(&self) {
        self.with_host(EditorHost::redo);
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
                self.notices.error(e.to_string());
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
            self.notices
                .error(format!("step `{key}` is no longer in the text"));
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
            self.notices.error(format!(
                "Refused: `{dependent}` cannot depend on `{dependency}`: {why}."
            ));
            return false;
        }
        let Some(i) = a.step_index(dependent) else {
            return false;
        };
        if wf.steps[i].dependencies.iter().any(|d| d == dependency) {
            self.notices
                .info(format!("`{dependent}` already depends on `{dependency}`."));
            return false;
        }
        let ok = self.apply_edit(|t, f| edit::add_dependency(t, f, i, dependency));
        if ok {
            self.notices
                .info(format!("`{dependent}` now depends on `{dependency}`."));
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
            self.notices.info(format!(
                "`{dependent}` no longer depends on `{dependency}`."
            ));
        }
        ok
    }

    /// Add a step (with the selected one's agent, depending on it) and select it.
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
            ..Step::default()
        };
        if self.apply_edit(|t, f| edit::add_step(t, f, &step)) {
            self.selected.set(Some(key.clone()));
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
            self.notices.info(format!("Removed step `{key}`."));
        }
        ok
    }
}

/// Typing in a prompt does not change the graph's shape: the layout (and the
/// SVG) is only recomputed when keys, agents or dependencies change.
fn layout_memo(analyzed: RwSignal<Arc<Analyzed>>, vertical: RwSignal<bool>) -> Memo<Arc<Layout>> {
    Memo::new_with_compare(
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
    )
}

/// The editor from context.
pub fn use_editor() -> Editor {
    expect_context::<Editor>()
}
