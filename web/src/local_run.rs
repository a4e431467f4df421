//! The dry run's browser shell: carries out a [`Driver`]'s effects with real
//! timers (`set_timeout`) and IndexedDB. Events (simulated answers, timer ticks,
//! the user's pause/resume/cancel) go through one queue and are handled one at a
//! time: each handling stores its checkpoint before it starts any timer.

use crate::browser::now_ms;
use crate::dryrun::{Driver, Effect, PIECES, Persist, Record, SimSettings, fold_checkpoint};
use crate::run_view::{CheckpointMeta, RunKind, RunView};
use crate::store::{CheckpointRecord, RunRecord, Store, new_id};
use ax_core::checkpoint::{CheckpointFile, WorkflowSource};
use ax_core::{Event, ExecError, Execution, ExecutionState, Options, Plan};
use leptos::prelude::{TimeoutHandle, set_timeout_with_handle};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// Receives the run's view whenever it changed (throttled).
pub type OnView = Rc<dyn Fn(RunView)>;

enum Msg {
    Event(Event),
    Interrupt,
}

/// The run's queue: timers (answers, ticks) and the user's controls put
/// messages in, `pump` takes them out one at a time. (A `futures` channel did
/// the same with more code than the page needs.)
#[derive(Clone, Default)]
struct Queue(Rc<RefCell<QueueInner>>);

#[derive(Default)]
struct QueueInner {
    /// Taken from `head` on; cleared once all are taken.
    msgs: Vec<Option<Msg>>,
    head: usize,
    /// The pump waiting for a message.
    waker: Option<Waker>,
    closed: bool,
}

impl Queue {
    /// Add a message (dropped once the queue is closed).
    fn send(&self, msg: Msg) {
        let waker = {
            let mut q = self.0.borrow_mut();
            if q.closed {
                return;
            }
            q.msgs.push(Some(msg));
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Take no more messages: `next` gives those queued, then `None`.
    fn close(&self) {
        let waker = {
            let mut q = self.0.borrow_mut();
            q.closed = true;
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next message, when there is one; `None` once closed and empty.
    async fn next(&self) -> Option<Msg> {
        std::future::poll_fn(|cx| {
            let mut q = self.0.borrow_mut();
            if q.head < q.msgs.len() {
                let i = q.head;
                let msg = q.msgs[i].take();
                q.head += 1;
                if q.head == q.msgs.len() {
                    q.msgs.clear();
                    q.head = 0;
                }
                return Poll::Ready(msg);
            }
            if q.closed {
                return Poll::Ready(None);
            }
            q.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

struct Inner {
    driver: Driver,
    record: RunRecord,
    store: Option<Store>,
    /// Pending replies by (step, attempt): a few at a time, a list is enough.
    replies: Vec<((String, u32), TimeoutHandle)>,
    wake: Option<TimeoutHandle>,
    refresh: Option<TimeoutHandle>,
    checkpoints: Vec<CheckpointMeta>,
    on_view: OnView,
    stopped: bool,
    /// The last error of a control event, for the panel.
    last_error: Option<String>,
}

impl Inner {
    /// A run's state before its first event: no pending replies or timers.
    fn new(
        driver: Driver,
        record: RunRecord,
        store: Option<Store>,
        checkpoints: Vec<CheckpointMeta>,
        on_view: OnView,
    ) -> Inner {
        Inner {
            driver,
            record,
            store,
            replies: Vec::new(),
            wake: None,
            refresh: None,
            checkpoints,
            on_view,
            stopped: false,
            last_error: None,
        }
    }
}

/// A dry run in this page.
#[derive(Clone)]
pub struct LocalRun {
    inner: Rc<RefCell<Inner>>,
    queue: Queue,
}

/// The browser's documents as (name, text): where a dry run finds the
/// sub-workflows its `type: workflow` steps run (by name, relative to the
/// run's own document name).
pub async fn documents(store: Option<&Store>) -> Result<Vec<(String, String)>, String> {
    match store {
        Some(s) => Ok(s
            .list_docs()
            .await?
            .into_iter()
            .map(|d| (d.name, d.text))
            .collect()),
        None => Ok(Vec::new()),
    }
}

/// Parse a run's workflow text into a plan, with the sub-workflows it runs
/// taken from `docs` (a missing one is a `missing-workflow` problem).
pub fn plan_of(
    source: &str,
    filename: Option<&str>,
    docs: Vec<(String, String)>,
) -> Result<Arc<Plan>, String> {
    let format = filename.and_then(ax_core::parse::Format::from_filename);
    let mut loader = ax_core::subworkflow::DocumentLoader::new(docs);
    let a = ax_core::subworkflow::analyze_tree(
        source,
        &Options {
            format,
            ..Options::default()
        },
        filename.unwrap_or(""),
        &mut loader,
    );
    a.plan.ok_or_else(|| {
        let first = a
            .report
            .errors
            .first()
            .map(|p| format!("{} at line {}", p.message, p.line.unwrap_or(0)))
            .unwrap_or_default();
        format!("the workflow is not valid: {first}")
    })
}

fn meta(c: &CheckpointRecord) -> CheckpointMeta {
    CheckpointMeta {
        id: c.seq.to_string(),
        seq: c.seq,
        at: c.at as f64,
        state: Some(c.state),
        completed: c.completed,
    }
}

impl LocalRun {
    fn spawn(inner: Inner) -> LocalRun {
        let run = LocalRun {
            inner: Rc::new(RefCell::new(inner)),
            queue: Queue::default(),
        };
        let pump = run.clone();
        leptos::task::spawn_local(async move { pump.pump().await });
        run
    }

    /// Start a new dry run of a valid workflow.
    pub async fn start(
        store: Option<Store>,
        source: String,
        filename: Option<String>,
        doc_id: Option<String>,
        settings: SimSettings,
        inputs: BTreeMap<String, serde_json::Value>,
        on_view: OnView,
    ) -> Result<LocalRun, String> {
        let docs = documents(store.as_ref()).await?;
        let plan = plan_of(&source, filename.as_deref(), docs)?;
        let exec =
            Execution::new(plan.clone(), inputs, settings.seed).map_err(|e| e.to_string())?;
        let t = js_sys::Date::now();
        let record = RunRecord {
            id: new_id("r"),
            name: plan.workflow.name.clone(),
            source,
            filename,
            doc_id,
            created_at: t,
            updated_at: t,
            state: ExecutionState::Idle,
            settings,
            last_seq: 0,
            completed: 0,
            total: plan.len(),
            origin: Some("browser".into()),
        };
        if let Some(s) = &store {
            s.put_run(&record).await?;
        }
        let driver = Driver::new(exec, settings);
        let run = LocalRun::spawn(Inner::new(driver, record, store, Vec::new(), on_view));
        run.send(Event::Start);
        Ok(run)
    }

    /// Reopen a stored run at its newest checkpoint (or at `upto`, forgetting
    /// the later ones). Attempts that were in flight are lost with the page:
    /// the run is interrupted, and `Resume` re-runs them.
    pub async fn open(
        store: Store,
        mut record: RunRecord,
        upto: Option<u64>,
        on_view: OnView,
    ) -> Result<LocalRun, String> {
        let stored = store.list_checkpoints(&record.id).await?;
        let records: Vec<(u64, Record)> = stored
            .iter()
            .filter_map(|c| c.record().map(|r| (c.seq, r)))
            .collect();
        let last = records
            .last()
            .map(|(s, _)| *s)
            .ok_or("the run has no checkpoint yet")?;
        let target = upto.unwrap_or(last).min(last);
        let cp = fold_checkpoint(&records, target).ok_or("no snapshot precedes that checkpoint")?;
        // A map type the page has anyway (not one more `HashMap` type).
        let outputs = ax_core::sort::btree_map(store.get_outputs(cp.output_hashes()).await?);
        let docs = documents(Some(&store)).await?;
        let plan = plan_of(&record.source, record.filename.as_deref(), docs)?;
        let (exec, _) = Execution::restore(plan, &cp, &|h| {
            outputs.get(h).map(|t| Arc::from(t.as_str()))
        })
        .map_err(|e| e.to_string())?;
        let mut checkpoints: Vec<CheckpointMeta> = stored
            .iter()
            .filter(|c| c.seq <= target)
            .map(meta)
            .collect();
        let mut driver = Driver::restored(exec, record.settings);
        if target < last {
            // The later history goes; the restored state becomes the newest.
            store.truncate_checkpoints(&record.id, target).await?;
            let p = driver.checkpoint();
            checkpoints.push(CheckpointMeta {
                id: p.seq.to_string(),
                seq: p.seq,
                at: p.taken_at as f64,
                state: Some(p.state),
                completed: p.completed,
            });
            record.last_seq = p.seq;
            Self::store_persist(&store, &mut record, &p).await?;
        }
        record.state = driver.state();
        let run = LocalRun::spawn(Inner::new(
            driver,
            record,
            Some(store),
            checkpoints,
            on_view,
        ));
        run.queue.send(Msg::Interrupt);
        Ok(run)
    }

    /// A stored run as it stands at its newest checkpoint, without driving it
    /// (the runs list and comparisons). Attempts before that checkpoint are
    /// known only as the latest of each step.
    pub async fn stored_view(store: &Store, record: &RunRecord) -> Result<RunView, String> {
        let stored = store.list_checkpoints(&record.id).await?;
        let records: Vec<(u64, Record)> = stored
            .iter()
            .filter_map(|c| c.record().map(|r| (c.seq, r)))
            .collect();
        let last = records
            .last()
            .map(|(s, _)| *s)
            .ok_or("the run has no checkpoint yet")?;
        let cp =
            fold_checkpoint(&records, last).ok_or("no snapshot precedes the newest checkpoint")?;
        let outputs = ax_core::sort::btree_map(store.get_outputs(cp.output_hashes()).await?);
        let docs = documents(Some(store)).await?;
        let plan = plan_of(&record.source, record.filename.as_deref(), docs)?;
        let (exec, _) = Execution::restore(plan, &cp, &|h| {
            outputs.get(h).map(|t| Arc::from(t.as_str()))
        })
        .map_err(|e| e.to_string())?;
        let driver = Driver::restored(exec, record.settings);
        Ok(RunView {
            kind: RunKind::Local,
            id: record.id.clone(),
            name: record.name.clone(),
            state: record.state,
            reason: driver.exec.reason().map(str::to_owned),
            spend: None,
            steps: driver.view(),
            checkpoints: stored.iter().map(meta).collect(),
            source: Some(record.source.clone()),
            created_at: Some(record.created_at as u64),
            started_at: driver.exec.started_at(),
            finished_at: driver.exec.finished_at(),
        })
    }

    /// Open a checkpoint file (from the server or another browser) as a new run.
    pub async fn import(
        store: Option<Store>,
        file: CheckpointFile,
        on_view: OnView,
    ) -> Result<(LocalRun, String), String> {
        let docs = documents(store.as_ref()).await?;
        let plan = plan_of(
            &file.workflow.source,
            file.workflow.filename.as_deref(),
            docs,
        )?;
        let outputs = &file.outputs;
        let (exec, compat) = Execution::restore(plan.clone(), &file.checkpoint, &|h| {
            outputs.get(h).map(|t| Arc::from(t.as_str()))
        })
        .map_err(|e| e.to_string())?;
        let mut note = format!(
            "{} of {} steps completed",
            file.checkpoint.completed_steps().len(),
            plan.len()
        );
        if !compat.same_definition {
            note.push_str(&format!("; {} must run again", compat.rerun.len()));
        }
        let t = js_sys::Date::now();
        let settings = SimSettings::default();
        let mut record = RunRecord {
            id: new_id("r"),
            name: file.workflow.name.clone(),
            source: file.workflow.source.clone(),
            filename: file.workflow.filename.clone(),
            doc_id: None,
            created_at: t,
            updated_at: t,
            state: exec.state(),
            settings,
            last_seq: file.checkpoint.seq,
            completed: 0,
            total: plan.len(),
            origin: file.origin.clone().or(Some("import".into())),
        };
        let mut driver = Driver::new(exec, settings);
        let p = driver.checkpoint();
        record.last_seq = p.seq;
        let checkpoints = vec![CheckpointMeta {
            id: p.seq.to_string(),
            seq: p.seq,
            at: p.taken_at as f64,
            state: Some(p.state),
            completed: p.completed,
        }];
        if let Some(s) = &store {
            let all: Vec<(String, String)> = file.outputs.into_iter().collect();
            s.put_outputs(&all).await?;
            Self::store_persist(s, &mut record, &p).await?;
        }
        let run = LocalRun::spawn(Inner::new(driver, record, store, checkpoints, on_view));
        run.queue.send(Msg::Interrupt);
        Ok((run, note))
    }

    async fn store_persist(
        store: &Store,
        record: &mut RunRecord,
        p: &Persist,
    ) -> Result<(), String> {
        let (snapshot, delta) = match &p.record {
            Record::Snapshot(c) => (Some(c.clone()), None),
            Record::Delta(d) => (None, Some(d.clone())),
        };
        let cp = CheckpointRecord {
            run_id: record.id.clone(),
            seq: p.seq,
            at: p.taken_at,
            state: p.state,
            completed: p.completed,
            snapshot,
            delta,
        };
        record.last_seq = p.seq;
        record.state = p.state;
        record.completed = p.completed;
        record.updated_at = js_sys::Date::now();
        store.put_checkpoint(&cp, &p.outputs, record).await
    }

    pub fn id(&self) -> String {
        self.inner.borrow().record.id.clone()
    }

    pub fn state(&self) -> ExecutionState {
        self.inner.borrow().driver.state()
    }

    pub fn last_error(&self) -> Option<String> {
        self.inner.borrow().last_error.clone()
    }

    /// Queue a control event (pause, resume, cancel) or a decision (approve,
    /// reject).
    pub fn send(&self, event: Event) {
        self.queue.send(Msg::Event(event));
    }

    /// Stop driving this run in this page (another run takes the graph). Its
    /// stored state stays as it is.
    pub fn stop(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.stopped = true;
        for (_, h) in inner.replies.drain(..) {
            h.clear();
        }
        if let Some(h) = inner.wake.take() {
            h.clear();
        }
        if let Some(h) = inner.refresh.take() {
            h.clear();
        }
        self.queue.close();
    }

    /// The run as a checkpoint file (what `POST /api/checkpoints/import` takes).
    pub fn export(&self) -> CheckpointFile {
        let inner = self.inner.borrow();
        let exec = &inner.driver.exec;
        let outputs = ax_core::sort::btree_map(
            exec.output_list()
                .into_iter()
                .map(|(h, t)| (h, t.to_string())),
        );
        let mut file = CheckpointFile::new(
            WorkflowSource {
                name: inner.record.name.clone(),
                source: inner.record.source.clone(),
                filename: inner.record.filename.clone(),
            },
            exec.peek_snapshot(),
            outputs,
        );
        file.origin = Some("browser".into());
        file.execution_id = Some(inner.record.id.clone());
        file
    }

    pub fn view(&self) -> RunView {
        let inner = self.inner.borrow();
        let mut steps = inner.driver.view();
        inner.driver.stream_at(&mut steps, now_ms());
        RunView {
            kind: RunKind::Local,
            id: inner.record.id.clone(),
            name: inner.record.name.clone(),
            state: inner.driver.state(),
            reason: inner
                .driver
                .exec
                .reason()
                .map(str::to_owned)
                .or_else(|| inner.last_error.clone()),
            spend: None,
            steps,
            checkpoints: inner.checkpoints.clone(),
            source: Some(inner.record.source.clone()),
            created_at: Some(inner.record.created_at as u64),
            started_at: inner.driver.exec.started_at(),
            finished_at: inner.driver.exec.finished_at(),
        }
    }

    async fn pump(self) {
        while let Some(msg) = self.queue.next().await {
            if self.inner.borrow().stopped {
                break;
            }
            let now = now_ms();
            let result = {
                let mut inner = self.inner.borrow_mut();
                match msg {
                    Msg::Event(ev) => {
                        let control = matches!(
                            ev,
                            Event::Pause { .. }
                                | Event::Resume
                                | Event::Cancel { .. }
                                | Event::Approve { .. }
                                | Event::Reject { .. }
                        );
                        match inner.driver.feed(ev, now) {
                            Ok(effects) => {
                                if control {
                                    inner.last_error = None;
                                }
                                Ok(effects)
                            }
                            // An answer for an attempt that was aborted: drop it.
                            Err(ExecError::Stale { .. }) => Ok(Vec::new()),
                            Err(e) => Err(e),
                        }
                    }
                    Msg::Interrupt => match inner.driver.state() {
                        ExecutionState::Running | ExecutionState::Paused => {
                            inner.driver.interrupt(now)
                        }
                        _ => Ok(Vec::new()),
                    },
                }
            };
            let effects = match result {
                Ok(e) => e,
                Err(e) => {
                    self.inner.borrow_mut().last_error = Some(e.to_string());
                    self.refresh_view(true);
                    continue;
                }
            };
            // Records first (awaited), then effects.
            let mut rest = Vec::new();
            for effect in effects {
                match effect {
                    Effect::Persist(p) => self.persist(p).await,
                    other => rest.push(other),
                }
            }
            let mut urgent = false;
            for effect in rest {
                urgent |= self.carry_out(effect, now);
            }
            let quiet = self.inner.borrow().driver.exec.is_quiescent();
            self.refresh_view(urgent || quiet);
        }
    }

    async fn persist(&self, p: Persist) {
        let (store, mut record) = {
            let mut inner = self.inner.borrow_mut();
            inner.checkpoints.push(CheckpointMeta {
                id: p.seq.to_string(),
                seq: p.seq,
                at: p.taken_at as f64,
                state: Some(p.state),
                completed: p.completed,
            });
            (inner.store.clone(), inner.record.clone())
        };
        if let Some(store) = store {
            if let Err(e) = Self::store_persist(&store, &mut record, &p).await {
                self.inner.borrow_mut().last_error =
                    Some(format!("could not store checkpoint {}: {e}", p.seq));
            }
        } else {
            record.last_seq = p.seq;
            record.state = p.state;
            record.completed = p.completed;
        }
        self.inner.borrow_mut().record = record;
    }

    /// Returns whether the view should refresh at once.
    fn carry_out(&self, effect: Effect, now: u64) -> bool {
        let mut inner = self.inner.borrow_mut();
        match effect {
            Effect::Persist(_) => false,
            Effect::Reply {
                key,
                attempt,
                after_ms,
                event,
            } => {
                let queue = self.queue.clone();
                let h = set_timeout_with_handle(
                    move || queue.send(Msg::Event(event)),
                    Duration::from_millis(after_ms),
                )
                .ok();
                // The answer streams in: show each piece when it is due.
                for i in (1..PIECES).filter(|_| after_ms > 0) {
                    let this = self.clone();
                    let at = Duration::from_millis(after_ms * i / PIECES);
                    let _ = set_timeout_with_handle(move || this.refresh_view(false), at);
                }
                if let Some(h) = h {
                    let id = (key, attempt);
                    inner.replies.retain(|(k, _)| *k != id);
                    inner.replies.push((id, h));
                }
                false
            }
            Effect::Cancel { key, attempt } => {
                let id = (key, attempt);
                if let Some(i) = inner.replies.iter().position(|(k, _)| *k == id) {
                    inner.replies.swap_remove(i).1.clear();
                }
                false
            }
            Effect::Wake { at } => {
                if let Some(h) = inner.wake.take() {
                    h.clear();
                }
                let queue = self.queue.clone();
                let delay = Duration::from_millis(at.saturating_sub(now));
                inner.wake =
                    set_timeout_with_handle(move || queue.send(Msg::Event(Event::Tick)), delay)
                        .ok();
                false
            }
            Effect::Finished { state, .. } => {
                inner.record.state = state;
                for (_, h) in inner.replies.drain(..) {
                    h.clear();
                }
                if let Some(h) = inner.wake.take() {
                    h.clear();
                }
                true
            }
        }
    }

    /// Tell the UI, at most every 50 ms (a fast run changes thousands of times).
    fn refresh_view(&self, now: bool) {
        let pending = self.inner.borrow().refresh.is_some();
        if now {
            if let Some(h) = self.inner.borrow_mut().refresh.take() {
                h.clear();
            }
            let (view, cb) = (self.view(), self.inner.borrow().on_view.clone());
            cb(view);
            return;
        }
        if pending {
            return;
        }
        let this = self.clone();
        let h = set_timeout_with_handle(
            move || {
                this.inner.borrow_mut().refresh = None;
                if this.inner.borrow().stopped {
                    return;
                }
                let (view, cb) = (this.view(), this.inner.borrow().on_view.clone());
                cb(view);
            },
            Duration::from_millis(50),
        )
        .ok();
        self.inner.borrow_mut().refresh = h;
    }
}
