//! The run shown on the graph: a dry run in this page ([`LocalRun`]) or an
//! execution on the server (watched over SSE). The run panel's buttons and the
//! toolbar call these; each reports problems through the designer's notice.

use crate::browser;
use crate::documents::Storage;
use crate::dryrun::{SimSettings, sample_inputs};
use crate::editing::Editor;
use crate::local_run::{LocalRun, OnView};
use crate::notice::Notices;
use crate::run_view::{RunKind, RunView};
use crate::server::{self, Api, Watch};
use crate::store::RunRecord;
use crate::text;
use ax_core::StepState;
use ax_core::checkpoint::CheckpointFile;
use ax_core::{Event, ExecutionState};
use leptos::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

enum Active {
    Local(LocalRun),
    Server { id: String, _watch: Option<Watch> },
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

/// The run context: the run on the graph and its controls, dry-run settings,
/// and the connection to an `ax serve` next to the page. `Copy`.
#[derive(Clone, Copy)]
pub struct Runs {
    editor: Editor,
    storage: Storage,
    notices: Notices,
    /// The run shown on the graph and in the run panel.
    pub run: RwSignal<Option<RunView>>,
    /// Each step's state in `run`, sorted by key (see [`state_of`]).
    pub states: Memo<Vec<(String, StepState)>>,
    /// The forEach steps of `run` whose items are listed: (key, completed, total).
    pub items: Memo<Vec<(String, usize, usize)>>,
    pub server: RwSignal<ServerStatus>,
    active: StoredValue<Option<Active>, LocalStorage>,
    pub settings: RwSignal<SimSettings>,
    /// The run inputs as JSON text (filled from the workflow's inputs).
    pub inputs: RwSignal<String>,
    /// An unfinished stored run found at start-up.
    pub resume_offer: RwSignal<Option<RunRecord>>,
    pub busy: RwSignal<bool>,
    pub api: StoredValue<Api>,
}

pub fn use_runs() -> Runs {
    expect_context::<Runs>()
}

impl Runs {
    pub fn new(editor: Editor, storage: Storage, notices: Notices, api: Api) -> Runs {
        let run: RwSignal<Option<RunView>> = RwSignal::new(None);
        let states = Memo::new(move |_| {
            let mut v: Vec<(String, StepState)> = run.with(|r| {
                r.as_ref()
                    .map(|r| r.steps.iter().map(|(k, v)| (k.clone(), v.state)).collect())
                    .unwrap_or_default()
            });
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        });
        let items = Memo::new(move |_| {
            run.with(|r| {
                r.as_ref()
                    .map(|r| {
                        r.steps
                            .iter()
                            .filter_map(|(k, v)| {
                                v.items.as_ref().map(|i| (k.clone(), i.completed, i.total))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
        });
        Runs {
            editor,
            storage,
            notices,
            run,
            states,
            items,
            server: RwSignal::new(ServerStatus::Unknown),
            active: StoredValue::new_local(None),
            settings: RwSignal::new(SimSettings::default()),
            inputs: RwSignal::new(String::new()),
            resume_offer: RwSignal::new(None),
            busy: RwSignal::new(false),
            api: StoredValue::new(api),
        }
    }

    /// Probe `/healthz`; the page says when no server answers.
    pub fn probe_server(&self) {
        let api = self.api.get_value();
        let server = self.server;
        leptos::task::spawn_local(async move {
            match api.health().await {
                Ok(h) => server.set(ServerStatus::Connected { version: h.version }),
                Err(e) => server.set(ServerStatus::Unreachable(e)),
            }
        });
    }

    pub fn server_connected(&self) -> bool {
        matches!(self.server.get(), ServerStatus::Connected { .. })
    }

    fn on_view(&self) -> OnView {
        let runs = *self;
        Rc::new(move |view: RunView| {
            if view.state.is_terminal() {
                // A timer of the run may fire after the page's state is gone:
                // `notify` and `try_set` do nothing then.
                runs.storage.runs_changed.notify();
            }
            runs.run.try_set(Some(view));
        })
    }

    fn set_active(&self, a: Option<Active>) {
        self.active.update_value(|cur| {
            if let Some(Active::Local(r)) = cur.take() {
                r.stop();
            }
            *cur = a;
        });
    }

    pub fn kind(&self) -> Option<RunKind> {
        self.active.with_value(|a| match a {
            Some(Active::Local(_)) => Some(RunKind::Local),
            Some(Active::Server { .. }) => Some(RunKind::Server),
            None => None,
        })
    }

    fn local(&self) -> Option<LocalRun> {
        self.active.with_value(|a| match a {
            Some(Active::Local(r)) => Some(r.clone()),
            _ => None,
        })
    }

    /// The inputs to run with: the panel's JSON, or sample values.
    fn run_inputs(
        &self,
        plan: &ax_core::Plan,
    ) -> Result<BTreeMap<String, serde_json::Value>, String> {
        let raw = self.inputs.get_untracked();
        if raw.trim().is_empty() {
            return Ok(sample_inputs(plan));
        }
        let mut given = match serde_json::from_str(&raw) {
            Ok(serde_json::Value::Object(o)) => into_map(o),
            Ok(_) => return Err("the run inputs are not a JSON object".into()),
            Err(e) => return Err(format!("the run inputs are not a JSON object: {e}")),
        };
        given.retain(|k, _| plan.input_names().contains(k));
        for (k, v) in sample_inputs(plan) {
            given.entry(k).or_insert(v);
        }
        Ok(given)
    }

    /// Fill the inputs box for the current workflow (keeping what the user typed).
    pub fn refresh_inputs(&self) {
        let a = self.editor.analyze_now();
        let Some(plan) = a.analysis.plan.clone() else {
            return;
        };
        let current = match serde_json::from_str(&self.inputs.get_untracked()) {
            Ok(serde_json::Value::Object(o)) => into_map(o),
            _ => BTreeMap::new(),
        };
        let mut next = sample_inputs(&plan);
        for (k, v) in current {
            if next.contains_key(&k) {
                next.insert(k, v);
            }
        }
        let text = if next.is_empty() {
            String::new()
        } else {
            serde_json::to_string_pretty(&to_object(next)).unwrap_or_default()
        };
        self.inputs.set(text);
    }

    /// Dry-run the editor's workflow in this page.
    pub fn start_local(&self) {
        let d = *self;
        let a = d.editor.analyze_now();
        let Some(plan) = a.analysis.plan.clone() else {
            let n = a.analysis.report.errors.len();
            d.notices.error(format!(
                "Fix the {n} problem{} first: only a valid workflow can run.",
                if n == 1 { "" } else { "s" }
            ));
            return;
        };
        let inputs = match self.run_inputs(&plan) {
            Ok(i) => i,
            Err(e) => {
                d.notices.error(e);
                return;
            }
        };
        let mut settings = self.settings.get_untracked();
        settings.seed = (js_sys::Math::random() * 1e15) as u64;
        let store = d.storage.store.get_value();
        let source = d.editor.text.get_untracked();
        let filename = Some(d.editor.name.get_untracked());
        let doc_id = d.storage.doc_id.get_untracked();
        let this = *self;
        self.busy.set(true);
        leptos::task::spawn_local(async move {
            let result = LocalRun::start(
                store,
                source,
                filename,
                doc_id,
                settings,
                inputs,
                this.on_view(),
            )
            .await;
            this.busy.set(false);
            match result {
                Ok(run) => {
                    d.run.set(Some(run.view()));
                    this.set_active(Some(Active::Local(run)));
                    this.resume_offer.set(None);
                    d.storage.runs_changed.notify();
                }
                Err(e) => d.notices.error(format!("Could not start the dry run: {e}")),
            }
        });
    }

    /// Reopen a stored dry run (optionally rewound to a checkpoint) and, with
    /// `resume`, continue it.
    pub fn open_local(&self, record: RunRecord, upto: Option<u64>, resume: bool) {
        let d = *self;
        let Some(store) = d.storage.store.get_value() else {
            d.notices
                .error("Browser storage is not available: stored runs cannot be opened.");
            return;
        };
        let this = *self;
        self.busy.set(true);
        leptos::task::spawn_local(async move {
            this.set_active(None);
            let result = LocalRun::open(store, record, upto, this.on_view()).await;
            this.busy.set(false);
            match result {
                Ok(run) => {
                    // A waiting run goes on with a decision, not with Resume.
                    if resume && run.state() != ExecutionState::Waiting {
                        run.send(Event::Resume);
                    }
                    d.run.set(Some(run.view()));
                    this.set_active(Some(Active::Local(run)));
                    this.resume_offer.set(None);
                    d.storage.runs_changed.notify();
                    if let Some(seq) = upto {
                        d.notices.info(format!("Restored the run to checkpoint {seq}; later checkpoints were discarded. Resume to continue."));
                    }
                }
                Err(e) => d.notices.error(format!("Could not open the run: {e}")),
            }
        });
    }

    pub fn pause(&self) {
        self.control("pause");
    }
    pub fn resume(&self) {
        self.control("resume");
    }
    pub fn cancel(&self) {
        self.control("cancel");
    }

    fn control(&self, action: &'static str) {
        let d = *self;
        let server_id = self.active.with_value(|a| match a {
            Some(Active::Server { id, .. }) => Some(id.clone()),
            _ => None,
        });
        if let Some(run) = self.local() {
            run.send(match action {
                "pause" => Event::Pause { immediate: false },
                "resume" => Event::Resume,
                _ => Event::Cancel {
                    reason: Some("cancelled in the designer".into()),
                },
            });
            // Interrupted runs that are resumed after a reload: the pump refreshes the view.
            return;
        }
        if let Some(id) = server_id {
            let api = self.api.get_value();
            leptos::task::spawn_local(async move {
                match api.control(&id, action).await {
                    Ok(e) => d.run.update(|v| {
                        if let Some(v) = v {
                            v.state = ExecutionState::parse(&e.state).unwrap_or(v.state);
                        }
                    }),
                    Err(e) => d
                        .notices
                        .error(format!("Could not {action} the execution: {e}")),
                }
            });
            return;
        }
        d.notices.error("No run is active.");
    }

    /// Approve or reject the approval step `key` of the run on the graph, with
    /// an optional comment: a dry run takes it as an event of its executor (so it
    /// is checkpointed like the rest), a server run through the API.
    pub fn decide(&self, key: String, approve: bool, comment: Option<String>) {
        let d = *self;
        if let Some(run) = self.local() {
            run.send(if approve {
                Event::Approve {
                    key,
                    comment,
                    data: None,
                    by: None,
                }
            } else {
                Event::Reject {
                    key,
                    comment,
                    by: None,
                }
            });
            return;
        }
        let server_id = self.active.with_value(|a| match a {
            Some(Active::Server { id, .. }) => Some(id.clone()),
            _ => None,
        });
        let Some(id) = server_id else {
            d.notices.error("No run is active.");
            return;
        };
        let api = self.api.get_value();
        leptos::task::spawn_local(async move {
            if let Err(e) = api.decide(&id, &key, approve, comment.as_deref()).await {
                let what = if approve { "approve" } else { "reject" };
                d.notices
                    .error(format!("Could not {what} step `{key}`: {e}"));
                return;
            }
            if let Ok(view) = api.run_view(&id).await {
                d.run.update(|v| {
                    if v.as_ref().is_some_and(|v| v.id == id) {
                        *v = Some(view);
                    }
                });
            }
        });
    }

    /// Rewind to a checkpoint of the run on the graph.
    pub fn restore(&self, id: String, seq: u64) {
        let d = *self;
        match self.kind() {
            Some(RunKind::Local) => {
                let Some(run) = self.local() else { return };
                let Some(store) = d.storage.store.get_value() else {
                    return;
                };
                let run_id = run.id();
                let this = *self;
                run.stop();
                leptos::task::spawn_local(async move {
                    match store.get_run(&run_id).await {
                        Ok(Some(record)) => this.open_local(record, Some(seq), false),
                        _ => d.notices.error("The run is no longer stored."),
                    }
                });
            }
            Some(RunKind::Server) => {
                let api = self.api.get_value();
                let this = *self;
                leptos::task::spawn_local(async move {
                    match api.restore(&id).await {
                        Ok(e) => {
                            d.notices.info(format!(
                                "The server restored checkpoint {id} and continues."
                            ));
                            this.watch_server(e.id);
                        }
                        Err(e) => d.notices.error(format!("Could not restore: {e}")),
                    }
                });
            }
            None => {}
        }
    }

    /// Download the run on the graph as a checkpoint file.
    pub fn export_checkpoint(&self) {
        let d = *self;
        if let Some(run) = self.local() {
            let file = run.export();
            let name = format!(
                "{}-{}-checkpoint.json",
                text::stem(&file.workflow.name),
                file.checkpoint.seq
            );
            if let Err(e) = browser::download(&name, "application/json", &file.to_json()) {
                d.notices.error(e);
            }
            return;
        }
        let cp = d.run.with_untracked(|r| {
            r.as_ref()
                .and_then(|r| r.checkpoints.last().map(|c| c.id.clone()))
        });
        match (self.kind(), cp) {
            (Some(RunKind::Server), Some(id)) => self.export_server_checkpoint(id),
            _ => d.notices.error("There is no checkpoint to export yet."),
        }
    }

    pub fn export_server_checkpoint(&self, id: String) {
        let d = *self;
        let api = self.api.get_value();
        leptos::task::spawn_local(async move {
            match api.export(&id).await {
                Ok(json) => {
                    if let Err(e) = browser::download(
                        &format!("server-checkpoint-{id}.json"),
                        "application/json",
                        &json,
                    ) {
                        d.notices.error(e);
                    }
                }
                Err(e) => d.notices.error(format!("Could not export: {e}")),
            }
        });
    }

    /// Open a checkpoint file (JSON text) as a local run to inspect or continue.
    pub fn import_checkpoint(&self, json: String) {
        let d = *self;
        let file = match CheckpointFile::from_json(&json) {
            Ok(f) => f,
            Err(e) => {
                d.notices.error(format!("Not a checkpoint file: {e}"));
                return;
            }
        };
        let store = d.storage.store.get_value();
        let this = *self;
        leptos::task::spawn_local(async move {
            this.set_active(None);
            match LocalRun::import(store, file, this.on_view()).await {
                Ok((run, note)) => {
                    d.run.set(Some(run.view()));
                    this.set_active(Some(Active::Local(run)));
                    d.storage.runs_changed.notify();
                    d.notices.info(format!("Imported the checkpoint ({note}). Resume to continue it here with the simulated provider."));
                }
                Err(e) => d
                    .notices
                    .error(format!("Could not import the checkpoint: {e}")),
            }
        });
    }

    /// Send the local run's checkpoint to the server, which continues it.
    pub fn send_to_server(&self) {
        let d = *self;
        let Some(run) = self.local() else {
            d.notices.error("Start or open a dry run first.");
            return;
        };
        let json = run.export().to_json();
        let api = self.api.get_value();
        let this = *self;
        leptos::task::spawn_local(async move {
            match api.import(&json, true).await {
                Ok(e) => {
                    d.notices.info(format!(
                        "The server continues the run as execution {}.",
                        e.id
                    ));
                    this.watch_server(e.id);
                }
                Err(e) => d
                    .notices
                    .error(format!("Could not send the checkpoint: {e}")),
            }
        });
    }

    /// Run the editor's text on the server.
    pub fn start_server(&self) {
        let d = *self;
        if !matches!(d.server.get_untracked(), ServerStatus::Connected { .. }) {
            d.notices.error("No ax server is connected: serve this page with `ax serve` to run with real providers.");
            return;
        }
        let a = d.editor.analyze_now();
        let Some(plan) = a.analysis.plan.clone() else {
            d.notices
                .error("Fix the problems first: only a valid workflow can run.");
            return;
        };
        let inputs = match self.run_inputs(&plan) {
            Ok(i) => to_object(i),
            Err(e) => {
                d.notices.error(e);
                return;
            }
        };
        let api = self.api.get_value();
        let source = d.editor.text.get_untracked();
        let filename = d.editor.name.get_untracked();
        let this = *self;
        self.busy.set(true);
        leptos::task::spawn_local(async move {
            let r = api.start(&source, &filename, &inputs).await;
            this.busy.set(false);
            match r {
                Ok(e) => this.watch_server(e.id),
                Err(e) => d
                    .notices
                    .error(format!("The server did not start the run: {e}")),
            }
        });
    }

    /// Show a server execution on the graph, live.
    pub fn watch_server(&self, id: String) {
        let d = *self;
        let api = self.api.get_value();
        let this = *self;
        leptos::task::spawn_local(async move {
            let view = match api.run_view(&id).await {
                Ok(v) => v,
                Err(e) => {
                    d.notices
                        .error(format!("Could not load execution {id}: {e}"));
                    return;
                }
            };
            let over = view.state.is_terminal();
            d.run.set(Some(view));
            let refresh_due = Rc::new(RefCell::new(false));
            let (api2, id2) = (api.clone(), id.clone());
            let on_event: Rc<dyn Fn(server::ServerEvent)> = Rc::new(move |ev| {
                let mut terminal = false;
                d.run.update(|v| {
                    if let Some(v) = v.as_mut().filter(|v| v.id == id2) {
                        server::apply_event(v, &ev);
                        terminal = v.state.is_terminal();
                    }
                });
                // Outputs and checkpoints come from the API, fetched at most twice a
                // second, and once more when the stream has ended (after the final
                // checkpoint).
                let wants = matches!(
                    ev.kind.as_str(),
                    "checkpoint" | "execution" | server::STREAM_END
                ) || matches!(ev.kind.as_str(), "item" | "decision")
                    || matches!(ev.state.as_deref(), Some("completed" | "waiting"));
                if wants && !*refresh_due.borrow() {
                    *refresh_due.borrow_mut() = true;
                    let (api, id, due) = (api2.clone(), id2.clone(), refresh_due.clone());
                    leptos::task::spawn_local(async move {
                        browser::sleep(if terminal { 0 } else { 500 }).await;
                        *due.borrow_mut() = false;
                        if let Ok(mut view) = api.run_view(&id).await {
                            d.run.update(|v| {
                                if let Some(old) = v.as_ref().filter(|v| v.id == id) {
                                    view.keep_live(old);
                                    *v = Some(view);
                                }
                            });
                        }
                    });
                }
            });
            let on_lost: Rc<dyn Fn()> = Rc::new(move || {
                d.server.set(ServerStatus::Unreachable(
                    "the live connection to the server was lost".into(),
                ));
            });
            let watch = if over {
                None
            } else {
                server::watch(&api, &id, on_event, on_lost)
                    .map_err(|e| d.notices.error(e))
                    .ok()
            };
            this.set_active(Some(Active::Server { id, _watch: watch }));
        });
    }

    /// At start-up: offer to resume an unfinished dry run.
    pub async fn find_unfinished(&self) {
        let d = *self;
        if !d.storage.is_ready() {
            return;
        }
        let Some(store) = d.storage.store.get_value() else {
            return;
        };
        if let Ok(runs) = store.list_runs().await {
            let open = runs.into_iter().find(|r| {
                matches!(
                    r.state,
                    ExecutionState::Running
                        | ExecutionState::Paused
                        | ExecutionState::Interrupted
                        | ExecutionState::Waiting
                ) && r.last_seq > 0
            });
            self.resume_offer.set(open);
        }
    }
}

// The inputs go through `serde_json::Value` (whose code the page has anyway)
// rather than serde's map (de)serializers for `BTreeMap`.

fn into_map(o: serde_json::Map<String, serde_json::Value>) -> BTreeMap<String, serde_json::Value> {
    let mut m = BTreeMap::new();
    for (k, v) in o {
        m.insert(k, v);
    }
    m
}

fn to_object(m: BTreeMap<String, serde_json::Value>) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    for (k, v) in m {
        o.insert(k, v);
    }
    serde_json::Value::Object(o)
}

/// A step's state in `Runs::states` (sorted by key); pending if it has none.
pub fn state_of(states: &[(String, StepState)], key: &str) -> StepState {
    match states.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
        Ok(i) => states[i].1,
        Err(_) => StepState::default(),
    }
}
