//! Server mode: the HTTP API of `ax serve` (docs/api.md) and live progress over
//! Server-Sent Events. Every call fails softly: the caller shows the error and
//! the local designer keeps working.

use crate::browser::{Answer, http};
use crate::run_view::{
    AttemptView, CheckpointMeta, ItemsView, Outcome, RunKind, RunView, Spend, StepView, Usage,
};
use ax_core::{ExecutionState, StepState};
use serde_json::Value;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// Where the API is and how to authenticate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Api {
    /// "" for the page's own origin.
    pub base: String,
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSummary {
    pub id: String,
    pub name: String,
    pub version: String,
    pub step_count: usize,
    pub created_at: f64,
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    pub total: usize,
    pub completed: usize,
    pub failed: usize,
    pub running: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionSummary {
    pub id: String,
    pub workflow_id: String,
    pub workflow: Value,
    pub state: String,
    pub created_at: f64,
    pub progress: Progress,
}

impl ExecutionSummary {
    pub fn workflow_name(&self) -> String {
        name_of(&self.workflow)
    }
}

fn name_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerStep {
    pub key: String,
    pub state: String,
    pub attempts: u32,
    pub output: Option<String>,
    pub error: Option<Value>,
    pub reason: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: Option<f64>,
    pub latency_ms: Option<u64>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// An approval step's request.
    pub request: Option<String>,
    /// A forEach step's (completed, total) items, once listed.
    pub items: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerExecution {
    pub id: String,
    pub workflow_id: String,
    pub workflow: Value,
    pub state: String,
    pub reason: Option<String>,
    pub created_at: Option<u64>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub inputs: Value,
    pub steps: Vec<ServerStep>,
    /// `spent` and `budget` (absent from older servers).
    pub spend: Option<Spend>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerCheckpoint {
    pub id: Value,
    pub created_at: f64,
    pub completed_steps: Vec<String>,
}

impl ServerCheckpoint {
    pub fn id_text(&self) -> String {
        match &self.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerEvent {
    pub kind: String,
    /// Epoch milliseconds.
    pub at: Option<u64>,
    pub step: Option<String>,
    pub state: Option<String>,
    pub attempt: Option<u32>,
    /// The event's message; a `step-delta` event's text.
    pub message: Option<String>,
    /// A `step-delta` event's offset: characters of the answer sent before.
    pub offset: Option<usize>,
}

/// The `type` given to a `step-delta` message (its data has none).
pub const STEP_DELTA: &str = "step-delta";
/// The `type` given to a `step-waiting` message; its `waitingFor` is the
/// event's message (`None`: the wait is over).
pub const STEP_WAITING: &str = "step-waiting";

/// Reading the API's JSON answers: fields are taken from a parsed `Value`
/// (one parser for every answer, instead of a serde visitor per type). A missing
/// required field is an error; a missing optional one takes its default.
pub trait FromJson: Sized {
    fn from_json(v: &Value) -> Result<Self, String>;

    /// Parse a JSON text.
    fn parse(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Self::from_json(&v)
    }
}

impl<T: FromJson> FromJson for Vec<T> {
    fn from_json(v: &Value) -> Result<Self, String> {
        v.as_array()
            .ok_or_else(|| "expected a list".to_owned())?
            .iter()
            .map(T::from_json)
            .collect()
    }
}

fn req_str(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("missing field `{key}`"))
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn opt_u64(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn any(v: &Value, key: &str) -> Value {
    v.get(key).cloned().unwrap_or(Value::Null)
}

impl FromJson for Health {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(Health {
            status: req_str(v, "status")?,
            version: opt_str(v, "version").unwrap_or_default(),
        })
    }
}

impl FromJson for WorkflowSummary {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(WorkflowSummary {
            id: req_str(v, "id")?,
            name: req_str(v, "name")?,
            version: opt_str(v, "version").unwrap_or_default(),
            step_count: count(v, "stepCount") as usize,
            created_at: num(v, "createdAt"),
            source: opt_str(v, "source"),
        })
    }
}

impl FromJson for Progress {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(Progress {
            total: count(v, "total") as usize,
            completed: count(v, "completed") as usize,
            failed: count(v, "failed") as usize,
            running: count(v, "running") as usize,
        })
    }
}

impl FromJson for ExecutionSummary {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(ExecutionSummary {
            id: req_str(v, "id")?,
            workflow_id: opt_str(v, "workflowId").unwrap_or_default(),
            workflow: any(v, "workflow"),
            state: req_str(v, "state")?,
            created_at: num(v, "createdAt"),
            progress: match v.get("progress") {
                Some(p) if !p.is_null() => Progress::from_json(p)?,
                _ => Progress::default(),
            },
        })
    }
}

impl FromJson for ServerStep {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(ServerStep {
            key: req_str(v, "key")?,
            state: req_str(v, "state")?,
            attempts: count(v, "attempts") as u32,
            output: opt_str(v, "output"),
            error: v.get("error").filter(|e| !e.is_null()).cloned(),
            reason: opt_str(v, "reason"),
            provider: opt_str(v, "provider"),
            model: opt_str(v, "model"),
            tokens_in: count(v, "tokensIn"),
            tokens_out: count(v, "tokensOut"),
            cost_usd: v.get("costUsd").and_then(Value::as_f64),
            latency_ms: opt_u64(v, "latencyMs"),
            started_at: opt_u64(v, "startedAt"),
            finished_at: opt_u64(v, "finishedAt"),
            request: opt_str(v, "request"),
            items: v
                .get("items")
                .filter(|i| i.is_object())
                .map(|i| (count(i, "completed") as usize, count(i, "total") as usize)),
        })
    }
}

impl FromJson for ServerExecution {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(ServerExecution {
            id: req_str(v, "id")?,
            workflow_id: opt_str(v, "workflowId").unwrap_or_default(),
            workflow: any(v, "workflow"),
            state: req_str(v, "state")?,
            reason: opt_str(v, "reason"),
            created_at: opt_u64(v, "createdAt"),
            started_at: opt_u64(v, "startedAt"),
            finished_at: opt_u64(v, "finishedAt"),
            inputs: any(v, "inputs"),
            steps: match v.get("steps") {
                Some(l) if !l.is_null() => Vec::from_json(l)?,
                _ => Vec::new(),
            },
            spend: v.get("spent").filter(|s| s.is_object()).map(|s| {
                let b = v.get("budget").unwrap_or(&Value::Null);
                Spend {
                    usd: num(s, "usd"),
                    tokens: count(s, "tokens"),
                    budget_usd: b.get("usd").and_then(Value::as_f64),
                    budget_tokens: opt_u64(b, "tokens"),
                }
            }),
        })
    }
}

impl FromJson for ServerCheckpoint {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(ServerCheckpoint {
            id: v
                .get("id")
                .cloned()
                .ok_or_else(|| "missing field `id`".to_owned())?,
            created_at: num(v, "createdAt"),
            completed_steps: v
                .get("completedSteps")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

impl FromJson for ServerEvent {
    fn from_json(v: &Value) -> Result<Self, String> {
        Ok(ServerEvent {
            kind: req_str(v, "type")?,
            at: opt_u64(v, "at"),
            step: opt_str(v, "step"),
            state: opt_str(v, "state"),
            attempt: v.get("attempt").and_then(Value::as_u64).map(|a| a as u32),
            message: opt_str(v, "message"),
            offset: None,
        })
    }
}

impl ServerEvent {
    /// A `step-delta` message's data: `{"execution", "step", "attempt", "offset", "text"}`.
    pub fn parse_delta(text: &str) -> Result<ServerEvent, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("step-delta: missing number `{k}`"))
        };
        Ok(ServerEvent {
            kind: STEP_DELTA.into(),
            at: None,
            step: Some(req_str(&v, "step")?),
            state: None,
            attempt: Some(num("attempt")? as u32),
            message: Some(req_str(&v, "text")?),
            offset: Some(num("offset")? as usize),
        })
    }

    /// A `step-waiting` message's data: `{"execution", "step", "attempt",
    /// "waitingFor": text | null}`.
    pub fn parse_waiting(text: &str) -> Result<ServerEvent, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let attempt = v
            .get("attempt")
            .and_then(Value::as_u64)
            .ok_or("step-waiting: missing number `attempt`")?;
        Ok(ServerEvent {
            kind: STEP_WAITING.into(),
            at: None,
            step: Some(req_str(&v, "step")?),
            state: None,
            attempt: Some(attempt as u32),
            message: opt_str(&v, "waitingFor"),
            offset: None,
        })
    }
}

/// The readable part of an error answer (the API's `{"error": {"message"}}`).
fn problem(a: &Answer) -> String {
    let v: Option<Value> = serde_json::from_str(&a.body).ok();
    match v
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
    {
        Some(msg) => format!("the server answered {}: {msg}", a.status),
        None => format!("the server answered {}", a.status),
    }
}

impl Api {
    /// With no base the URL is relative to the page, so that the designer also
    /// works from a static host's sub-folder (where `healthz` is a static file
    /// that says "no server").
    pub fn url(&self, path: &str) -> String {
        if self.base.is_empty() {
            path.trim_start_matches('/').to_owned()
        } else {
            format!("{}{path}", self.base.trim_end_matches('/'))
        }
    }

    /// The body of a successful answer (one copy of the fetch future in the wasm).
    async fn call_text(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<String, String> {
        let a = http(method, &self.url(path), body, self.token.as_deref()).await?;
        if !(200..300).contains(&a.status) {
            return Err(problem(&a));
        }
        Ok(a.body)
    }

    async fn call<T: FromJson>(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<T, String> {
        let text = self.call_text(method, path, body).await?;
        T::parse(&text).map_err(|_| format!("{path} did not answer with the expected JSON"))
    }

    /// `GET /healthz`: is an `ax serve` there?
    pub async fn health(&self) -> Result<Health, String> {
        let h: Health = self
            .call("GET", "/healthz", None)
            .await
            .map_err(|e| format!("GET /healthz: {e}"))?;
        match h.status.as_str() {
            "ok" => Ok(h),
            "static" => Err("this page is served as static files".into()),
            other => Err(format!("the server is not ready ({other})")),
        }
    }

    pub async fn workflows(&self) -> Result<Vec<WorkflowSummary>, String> {
        self.call("GET", "/api/workflows", None).await
    }

    pub async fn workflow(&self, id: &str) -> Result<WorkflowSummary, String> {
        self.call("GET", &format!("/api/workflows/{id}"), None)
            .await
    }

    pub async fn executions(&self) -> Result<Vec<ExecutionSummary>, String> {
        self.call("GET", "/api/executions?limit=50", None).await
    }

    pub async fn execution(&self, id: &str) -> Result<ServerExecution, String> {
        self.call("GET", &format!("/api/executions/{id}"), None)
            .await
    }

    /// Start a run of a workflow text on the server.
    pub async fn start(
        &self,
        source: &str,
        filename: &str,
        inputs: &Value,
    ) -> Result<ServerExecution, String> {
        let mut body = serde_json::Map::new();
        body.insert("source".into(), Value::String(source.into()));
        body.insert("filename".into(), Value::String(filename.into()));
        body.insert("inputs".into(), inputs.clone());
        let body = Value::Object(body).to_string();
        self.call("POST", "/api/executions", Some(&body)).await
    }

    /// `pause`, `resume` or `cancel`.
    pub async fn control(&self, id: &str, action: &str) -> Result<ServerExecution, String> {
        let body = (action == "pause").then_some("{\"now\": false}");
        self.call("POST", &format!("/api/executions/{id}/{action}"), body)
            .await
    }

    /// Approve (`approve: true`) or reject a waiting approval step, with an
    /// optional comment (`POST /api/executions/{id}/steps/{key}/approve|reject`).
    pub async fn decide(
        &self,
        id: &str,
        key: &str,
        approve: bool,
        comment: Option<&str>,
    ) -> Result<ServerExecution, String> {
        let mut body = serde_json::Map::new();
        if let Some(c) = comment {
            body.insert("comment".into(), Value::String(c.to_owned()));
        }
        let body = Value::Object(body).to_string();
        let action = if approve { "approve" } else { "reject" };
        let path = format!(
            "/api/executions/{id}/steps/{}/{action}",
            js_sys::encode_uri_component(key)
        );
        self.call("POST", &path, Some(&body)).await
    }

    pub async fn checkpoints(&self, id: &str) -> Result<Vec<ServerCheckpoint>, String> {
        self.call("GET", &format!("/api/executions/{id}/checkpoints"), None)
            .await
    }

    pub async fn restore(&self, checkpoint: &str) -> Result<ServerExecution, String> {
        self.call(
            "POST",
            &format!("/api/checkpoints/{checkpoint}/restore"),
            None,
        )
        .await
    }

    /// The checkpoint file of a server checkpoint (JSON text).
    pub async fn export(&self, checkpoint: &str) -> Result<String, String> {
        self.call_text(
            "GET",
            &format!("/api/checkpoints/{checkpoint}/export"),
            None,
        )
        .await
    }

    /// Send a checkpoint file to the server: a new execution continues it there.
    pub async fn import(&self, file_json: &str, resume: bool) -> Result<ServerExecution, String> {
        // Explicit both ways: the server leaves an imported run paused by default.
        let q = if resume {
            "?resume=true"
        } else {
            "?resume=false"
        };
        self.call(
            "POST",
            &format!("/api/checkpoints/import{q}"),
            Some(file_json),
        )
        .await
    }

    /// The execution's stored events, oldest first.
    pub async fn events(&self, id: &str) -> Result<Vec<ServerEvent>, String> {
        self.call("GET", &format!("/api/executions/{id}/events"), None)
            .await
    }

    /// Everything the page shows of a server run: the execution, its
    /// checkpoints, the prompts (rendered from the workflow's text) and every
    /// attempt (from the event log).
    pub async fn run_view(&self, id: &str) -> Result<RunView, String> {
        let exec = self.execution(id).await?;
        let checkpoints = self
            .checkpoints(id)
            .await
            .map(|l| checkpoint_metas(&l))
            .unwrap_or_default();
        let source = if exec.workflow_id.is_empty() {
            None
        } else {
            self.workflow(&exec.workflow_id)
                .await
                .ok()
                .and_then(|w| w.source)
        };
        let mut view = view_of(&exec, checkpoints, source.as_deref());
        if let Ok(events) = self.events(id).await {
            apply_attempts(&mut view, &events);
        }
        Ok(view)
    }

    fn events_url(&self, id: &str) -> String {
        let mut url = self.url(&format!("/api/executions/{id}/events"));
        if let Some(t) = &self.token {
            url.push_str(&format!("?token={}", js_sys::encode_uri_component(t)));
        }
        url
    }
}

fn step_state(s: &str) -> StepState {
    StepState::parse(s).unwrap_or_default()
}

fn exec_state(s: &str) -> ExecutionState {
    ExecutionState::parse(s).unwrap_or(ExecutionState::Running)
}

/// The text of a step error as the API sends it (an object with a class and a
/// message, or a string).
fn error_parts(e: &Value) -> (String, String) {
    match e {
        Value::String(s) => (String::new(), s.clone()),
        Value::Object(m) => (
            m.get("class")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            m.get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        ),
        other => (String::new(), other.to_string()),
    }
}

/// The run view of a server execution. `source` (the workflow's text, when the
/// page has it) lets the page render each step's prompt with the core's own
/// template code, from the run's inputs and the outputs of the steps before it:
/// the prompt the server sent.
pub fn view_of(
    e: &ServerExecution,
    checkpoints: Vec<CheckpointMeta>,
    source: Option<&str>,
) -> RunView {
    let prompts = source.map(|s| render_prompts(s, e)).unwrap_or_default();
    RunView {
        kind: RunKind::Server,
        id: e.id.clone(),
        name: name_of(&e.workflow),
        state: exec_state(&e.state),
        reason: e.reason.clone(),
        spend: e.spend,
        steps: e
            .steps
            .iter()
            .map(|s| {
                let state = step_state(&s.state);
                let error = s.error.as_ref().map(error_parts);
                // The API gives the latest attempt; earlier ones are counted.
                let attempts = if s.attempts == 0 {
                    Vec::new()
                } else {
                    vec![AttemptView {
                        attempt: s.attempts,
                        started_at: s
                            .finished_at
                            .zip(s.latency_ms)
                            .map(|(f, l)| f.saturating_sub(l))
                            .or(s.started_at),
                        finished_at: s.finished_at,
                        outcome: match (&error, state) {
                            (Some((class, message)), _) => Outcome::Failed {
                                class: class.clone(),
                                message: message.clone(),
                            },
                            (None, StepState::Completed) => Outcome::Succeeded,
                            _ => Outcome::Running,
                        },
                    }]
                };
                let view = StepView {
                    state,
                    attempt: s.attempts,
                    prompt: prompts
                        .iter()
                        .find(|(k, _)| *k == s.key)
                        .map(|(_, p)| p.clone()),
                    output: s.output.as_deref().map(Arc::from),
                    error: error.map(|(class, message)| {
                        if class.is_empty() {
                            message
                        } else {
                            format!("{class}: {message}")
                        }
                    }),
                    reason: s.reason.clone(),
                    usage: Usage {
                        tokens_in: s.tokens_in,
                        tokens_out: s.tokens_out,
                        cost_usd: s.cost_usd,
                        estimated: false,
                    },
                    latency_ms: s.latency_ms,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    provider: s.provider.clone(),
                    model: s.model.clone(),
                    attempts,
                    request: s.request.clone(),
                    items: s.items.map(|(completed, total)| ItemsView {
                        completed,
                        total,
                        items: Vec::new(),
                    }),
                    live: None,
                    waiting_for: None,
                };
                (s.key.clone(), view)
            })
            .collect(),
        checkpoints,
        source: source.map(str::to_owned),
        created_at: e.created_at,
        started_at: e.started_at,
        finished_at: e.finished_at,
    }
}

/// The prompts of the steps that started, rendered from the workflow text, the
/// run's inputs and the completed steps' outputs.
fn render_prompts(source: &str, e: &ServerExecution) -> Vec<(String, String)> {
    let Some(wf) = ax_core::analyze(source, &ax_core::Options::default())
        .workflow()
        .cloned()
    else {
        return Vec::new();
    };
    let ctx = Outputs(e);
    e.steps
        .iter()
        .filter(|s| s.attempts > 0)
        .filter_map(|s| {
            let step = wf.step(&s.key)?;
            let template = ax_core::template::Template::parse(&step.prompt).ok()?;
            Some((s.key.clone(), template.render(&ctx).ok()?))
        })
        .collect()
}

struct Outputs<'e>(&'e ServerExecution);

impl ax_core::template::Context for Outputs<'_> {
    fn input(&self, name: &str) -> Option<&Value> {
        self.0.inputs.get(name)
    }
    fn output(&self, key: &str) -> Option<&str> {
        self.0
            .steps
            .iter()
            .find(|s| s.key == key && s.state == "completed")?
            .output
            .as_deref()
    }
    fn is_step(&self, key: &str) -> bool {
        self.0.steps.iter().any(|s| s.key == key)
    }
}

pub fn checkpoint_metas(list: &[ServerCheckpoint]) -> Vec<CheckpointMeta> {
    // The API lists them newest first.
    list.iter()
        .enumerate()
        .rev()
        .map(|(i, c)| CheckpointMeta {
            id: c.id_text(),
            seq: (list.len() - i) as u64,
            at: c.created_at,
            state: None,
            completed: c.completed_steps.len(),
        })
        .collect()
}

/// Live progress of a server execution.
pub struct Watch {
    source: web_sys::EventSource,
    _listeners: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.source.close();
    }
}

/// Apply one SSE event to the view; returns whether the stream is over.
pub fn apply_event(view: &mut RunView, ev: &ServerEvent) -> bool {
    match ev.kind.as_str() {
        "step" => {
            if let (Some(key), Some(state)) = (&ev.step, &ev.state) {
                match view.steps.iter_mut().find(|(k, _)| k == key) {
                    Some((_, s)) => {
                        s.state = step_state(state);
                        if ev.attempt.is_some_and(|a| a != s.attempt) {
                            s.waiting_for = None;
                        }
                        if let Some(a) = ev.attempt {
                            s.attempt = a;
                        }
                        if s.state != StepState::Running
                            || s.live.as_ref().is_some_and(|l| l.attempt != s.attempt)
                        {
                            s.live = None;
                        }
                        if s.state != StepState::Running {
                            s.waiting_for = None;
                        }
                        if ev.message.is_some() {
                            s.reason = ev.message.clone();
                        }
                    }
                    None => view.steps.push((
                        key.clone(),
                        StepView {
                            state: step_state(state),
                            attempt: ev.attempt.unwrap_or(0),
                            ..StepView::default()
                        },
                    )),
                }
            }
            false
        }
        "execution" => {
            if let Some(s) = &ev.state {
                view.state = exec_state(s);
            }
            if ev.message.is_some() {
                view.reason = ev.message.clone();
            }
            view.state.is_terminal()
        }
        STEP_DELTA => {
            let (Some(key), Some(a), Some(o), Some(t)) =
                (&ev.step, ev.attempt, ev.offset, &ev.message)
            else {
                return false;
            };
            if let Some((_, s)) = view.steps.iter_mut().find(|(k, _)| k == key)
                && s.state == StepState::Running
            {
                s.push_delta(a, o, t);
            }
            false
        }
        STEP_WAITING => {
            if let (Some(key), Some(a)) = (&ev.step, ev.attempt)
                && let Some((_, s)) = view.steps.iter_mut().find(|(k, _)| k == key)
                && s.state == StepState::Running
                && a >= s.attempt
            {
                s.waiting_for = ev.message.clone();
            }
            false
        }
        _ => false,
    }
}

/// Every attempt of every step, from the execution's `step` events: an attempt
/// starts with `running` and ends with the next state of the same attempt (its
/// message is the error of a failed one).
pub fn apply_attempts(view: &mut RunView, events: &[ServerEvent]) {
    let mut by_step: Vec<(String, Vec<AttemptView>)> = Vec::new();
    for ev in events.iter().filter(|e| e.kind == "step") {
        let (Some(key), Some(state), Some(attempt)) = (&ev.step, &ev.state, ev.attempt) else {
            continue;
        };
        let list = match by_step.iter().position(|(k, _)| k == key) {
            Some(i) => &mut by_step[i].1,
            None => {
                by_step.push((key.clone(), Vec::new()));
                &mut by_step.last_mut().expect("just pushed").1
            }
        };
        let open = list
            .iter_mut()
            .rev()
            .find(|a| a.attempt == attempt && a.outcome == Outcome::Running);
        match (state.as_str(), open) {
            ("running", _) => list.push(AttemptView {
                attempt,
                started_at: ev.at,
                finished_at: None,
                outcome: Outcome::Running,
            }),
            ("completed", Some(a)) => {
                a.finished_at = ev.at;
                a.outcome = Outcome::Succeeded;
            }
            ("failed" | "waiting-retry", Some(a)) => {
                a.finished_at = ev.at;
                a.outcome = Outcome::Failed {
                    class: String::new(),
                    message: ev.message.clone().unwrap_or_else(|| "failed".into()),
                };
            }
            ("cancelled" | "skipped" | "pending", Some(a)) => {
                a.finished_at = ev.at;
                a.outcome = Outcome::Aborted(ev.message.clone().unwrap_or_else(|| state.clone()));
            }
            _ => {}
        }
    }
    for (key, attempts) in by_step {
        if let Some((_, s)) = view.steps.iter_mut().find(|(k, _)| *k == key)
            && !attempts.is_empty()
        {
            s.attempts = attempts;
        }
    }
}

/// The event `watch` sends when the server has ended the stream after the
/// execution's final events (the last checkpoint comes after the final
/// `execution` event).
pub const STREAM_END: &str = "end";

/// Watch an execution: `on_event` gets every parsed event, then [`STREAM_END`];
/// `on_lost` is called when the stream fails for good.
pub fn watch(
    api: &Api,
    id: &str,
    on_event: Rc<dyn Fn(ServerEvent)>,
    on_lost: Rc<dyn Fn()>,
) -> Result<Watch, String> {
    let source = web_sys::EventSource::new(&api.events_url(id)).map_err(|e| format!("{e:?}"))?;
    let mut listeners = Vec::new();
    let done = Rc::new(Cell::new(false));
    for kind in [
        "execution",
        "step",
        "item",
        "decision",
        "checkpoint",
        "log",
        "message",
        STEP_DELTA,
        STEP_WAITING,
    ] {
        let on_event = on_event.clone();
        let done = done.clone();
        let cb = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
            let Some(m) = e.dyn_ref::<web_sys::MessageEvent>() else {
                return;
            };
            let Some(data) = m.data().as_string() else {
                return;
            };
            let parsed = match e.type_().as_str() {
                STEP_DELTA => ServerEvent::parse_delta(&data),
                STEP_WAITING => ServerEvent::parse_waiting(&data),
                _ => ServerEvent::parse(&data),
            };
            let Ok(ev) = parsed else {
                return;
            };
            let terminal = ev.kind == "execution"
                && ev
                    .state
                    .as_deref()
                    .and_then(ExecutionState::parse)
                    .is_some_and(ExecutionState::is_terminal);
            on_event(ev);
            if terminal {
                // The final checkpoint follows; then the server ends the stream.
                done.set(true);
            }
        });
        source
            .add_event_listener_with_callback(kind, cb.as_ref().unchecked_ref())
            .map_err(|e| format!("{e:?}"))?;
        listeners.push(cb);
    }
    let source2 = source.clone();
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_e: web_sys::Event| {
        if done.get() {
            // The server ended the stream after the final events: stop EventSource
            // from reconnecting, and say so.
            done.set(false);
            source2.close();
            on_event(ServerEvent {
                kind: STREAM_END.into(),
                at: None,
                step: None,
                state: None,
                attempt: None,
                message: None,
                offset: None,
            });
        } else if source2.ready_state() == web_sys::EventSource::CLOSED {
            on_lost();
        }
    });
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    listeners.push(on_error);
    Ok(Watch {
        source,
        _listeners: listeners,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn approvals_and_items_come_from_the_api() {
        let e = ServerExecution::parse(r#"{"id":"e","workflowId":"w","workflow":"demo","state":"waiting","createdAt":1,"inputs":{},"steps":[{"key":"ok","agent":"","state":"waiting","attempts":0,"request":"Ship it?","tokensIn":0,"tokensOut":0,"dependencies":[]},{"key":"each","agent":"x","state":"completed","attempts":2,"output":"[\"first\",{\"a\":1}]","items":{"completed":2,"total":2},"tokensIn":0,"tokensOut":0,"dependencies":[]}]}"#).expect("execution");
        let v = view_of(&e, Vec::new(), None);
        assert_eq!(v.state, ExecutionState::Waiting);
        let ok = v.step("ok").expect("ok");
        assert_eq!(ok.state, StepState::Waiting);
        assert_eq!(ok.request.as_deref(), Some("Ship it?"));
        assert!(ok.items.is_none());
        let each = v.step("each").expect("each");
        assert_eq!(
            each.items.as_ref().map(|i| (i.completed, i.total)),
            Some((2, 2))
        );
        // The items' results: the elements of the step's output list.
        let rows = each.item_rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], (StepState::Completed, "first".to_owned()));
        assert!(rows[1].1.contains("\"a\": 1"), "{:?}", rows[1]);
    }

    #[test]
    fn events_update_the_view() {
        let e = ServerExecution::parse(r#"{"id":"e1","workflowId":"w","workflow":"demo","state":"running","createdAt":1,"inputs":{},"steps":[{"key":"a","agent":"x","state":"running","attempts":1,"tokensIn":0,"tokensOut":0,"dependencies":[]},{"key":"b","agent":"x","state":"pending","attempts":0,"error":{"class":"timeout","message":"slow"},"tokensIn":0,"tokensOut":0,"dependencies":["a"]}]}"#).expect("execution");
        let mut v = view_of(&e, Vec::new(), None);
        assert_eq!(v.name, "demo");
        assert_eq!(v.steps[1].1.error.as_deref(), Some("timeout: slow"));
        let ev = ServerEvent::parse(r#"{"id":3,"executionId":"e1","at":5,"type":"step","step":"a","state":"completed","attempt":1}"#).expect("event");
        assert!(!apply_event(&mut v, &ev));
        assert_eq!(v.steps[0].1.state, StepState::Completed);
        let ev = ServerEvent::parse(
            r#"{"id":4,"executionId":"e1","at":6,"type":"execution","state":"completed"}"#,
        )
        .expect("event");
        assert!(apply_event(&mut v, &ev));
        assert_eq!(v.state, ExecutionState::Completed);
    }

    #[test]
    fn step_deltas_grow_the_running_steps_text_until_it_completes() {
        let e = ServerExecution::parse(r#"{"id":"e1","workflowId":"w","workflow":"demo","state":"running","createdAt":1,"inputs":{},"steps":[{"key":"a","agent":"x","state":"running","attempts":1,"tokensIn":0,"tokensOut":0,"dependencies":[]}]}"#).expect("execution");
        let mut v = view_of(&e, Vec::new(), None);
        let delta = |attempt: u32, offset: usize, text: &str| {
            let data = serde_json::json!({"execution": "e1", "step": "a", "attempt": attempt, "offset": offset, "text": text});
            ServerEvent::parse_delta(&data.to_string()).expect("delta")
        };
        let live = |v: &RunView| v.steps[0].1.live.as_ref().map(|l| l.text.clone());
        assert!(!apply_event(&mut v, &delta(1, 0, "The ans")));
        apply_event(&mut v, &delta(1, 7, "wer is"));
        assert_eq!(live(&v).as_deref(), Some("The answer is"));
        // A retry starts the text anew.
        let step = |state: &str, attempt: u32| {
            ServerEvent::parse(&format!(r#"{{"id":1,"executionId":"e1","at":5,"type":"step","step":"a","state":"{state}","attempt":{attempt}}}"#)).expect("event")
        };
        apply_event(&mut v, &step("waiting-retry", 1));
        assert_eq!(live(&v), None);
        apply_event(&mut v, &step("running", 2));
        apply_event(&mut v, &delta(1, 13, " late"));
        apply_event(&mut v, &delta(2, 0, "Second"));
        assert_eq!(live(&v).as_deref(), Some("Second"));
        // A fresh view from the API keeps the live text of the running attempt.
        let mut fresh = view_of(&e, Vec::new(), None);
        fresh.steps[0].1.attempt = 2;
        fresh.keep_live(&v);
        assert_eq!(live(&fresh).as_deref(), Some("Second"));
        // The committed output replaces it.
        apply_event(&mut v, &step("completed", 2));
        assert_eq!(live(&v), None);
        assert!(ServerEvent::parse_delta(r#"{"step":"a","attempt":1}"#).is_err());
    }

    #[test]
    fn attempts_come_from_the_event_log() {
        let e = ServerExecution::parse(r#"{"id":"e1","workflowId":"w","workflow":"demo","state":"completed","createdAt":1,"inputs":{"topic":"bees"},"steps":[{"key":"a","agent":"x","state":"completed","attempts":2,"output":"{\"n\": 1}","tokensIn":10,"tokensOut":4,"costUsd":0.25,"latencyMs":40,"dependencies":[]},{"key":"b","agent":"x","state":"completed","attempts":1,"output":"ok","tokensIn":3,"tokensOut":1,"dependencies":["a"]}]}"#).expect("execution");
        let source = "name: demo\ninputs: {topic: {}}\nsteps:\n  - {key: a, agent: x, prompt: \"About {{topic}}\"}\n  - {key: b, agent: x, prompt: \"n is {{a.result.n}}\", dependencies: [a]}\n";
        let mut v = view_of(&e, Vec::new(), Some(source));
        assert_eq!(v.steps[0].1.prompt.as_deref(), Some("About bees"));
        assert_eq!(v.steps[1].1.prompt.as_deref(), Some("n is 1"));
        assert_eq!(v.steps[0].1.usage.cost_usd, Some(0.25));
        assert_eq!(v.usage().tokens_in, 13);
        let events = Vec::<ServerEvent>::parse(r#"[
            {"id":1,"executionId":"e1","at":100,"type":"step","step":"a","state":"running","attempt":1},
            {"id":2,"executionId":"e1","at":150,"type":"step","step":"a","state":"waiting-retry","attempt":1,"message":"rate-limit: slow down"},
            {"id":3,"executionId":"e1","at":300,"type":"step","step":"a","state":"running","attempt":2},
            {"id":4,"executionId":"e1","at":340,"type":"step","step":"a","state":"completed","attempt":2},
            {"id":5,"executionId":"e1","at":340,"type":"checkpoint"}
        ]"#).expect("events");
        apply_attempts(&mut v, &events);
        let a = &v.steps[0].1.attempts;
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].millis(), Some(50));
        assert!(
            matches!(&a[0].outcome, Outcome::Failed { message, .. } if message == "rate-limit: slow down")
        );
        assert_eq!(
            (a[1].outcome.clone(), a[1].millis()),
            (Outcome::Succeeded, Some(40))
        );
        // Steps without events keep what the execution said.
        assert_eq!(v.steps[1].1.attempts.len(), 1);
    }

    #[test]
    fn spend_budget_cache_and_capacity_waits_reach_the_view() {
        let e = ServerExecution::parse(r#"{"id":"e1","workflowId":"w","workflow":"demo","state":"paused","reason":"budget: the next attempt of b may cost $0.40; spent $2.30 of $2.50","createdAt":1,"inputs":{},"budget":{"usd":2.5},"spent":{"usd":0.0123,"tokens":1234},"steps":[{"key":"a","agent":"x","state":"completed","attempts":1,"provider":"cache","model":"m","output":"hi","tokensIn":10,"tokensOut":4,"costUsd":0,"dependencies":[]},{"key":"b","agent":"x","state":"running","attempts":1,"provider":"openai","tokensIn":0,"tokensOut":0,"dependencies":["a"]}]}"#).expect("execution");
        let mut v = view_of(&e, Vec::new(), None);
        let spend = v.spend.expect("spend");
        assert_eq!(spend.text(), "Spent $0.0123 · 1,234 tokens (budget $2.50)");
        let hint = crate::run_view::budget_hint(v.reason.as_deref(), &v.id).expect("hint");
        assert!(
            hint.contains("ax workflow resume e1 --budget-usd"),
            "{hint}"
        );
        assert!(v.step("a").expect("a").cached());
        assert!(!v.step("b").expect("b").cached());
        let waiting = |w: &str| {
            let data = format!(r#"{{"execution":"e1","step":"b","attempt":1,"waitingFor":{w}}}"#);
            ServerEvent::parse_waiting(&data).expect("step-waiting")
        };
        let waits = |v: &RunView| v.step("b").and_then(|s| s.waiting_for.clone());
        assert!(!apply_event(
            &mut v,
            &waiting(r#""capacity of provider openai""#)
        ));
        assert_eq!(waits(&v).as_deref(), Some("capacity of provider openai"));
        // A fresh view from the API keeps it while the same attempt runs.
        let mut fresh = view_of(&e, Vec::new(), None);
        fresh.keep_live(&v);
        assert_eq!(waits(&fresh), waits(&v));
        apply_event(&mut v, &waiting("null"));
        assert_eq!(waits(&v), None);
        // The step settling ends the wait too.
        apply_event(&mut v, &waiting(r#""capacity of provider openai""#));
        let done = ServerEvent::parse(r#"{"id":9,"executionId":"e1","at":5,"type":"step","step":"b","state":"completed","attempt":1}"#).expect("event");
        apply_event(&mut v, &done);
        assert_eq!(waits(&v), None);
        assert!(ServerEvent::parse_waiting(r#"{"step":"b"}"#).is_err());
        // Without a budget only the spend; an older server sends neither.
        let e2 = ServerExecution::parse(
            r#"{"id":"e2","state":"completed","spent":{"usd":0,"tokens":0}}"#,
        )
        .expect("execution");
        assert_eq!(
            e2.spend.map(|s| s.text()).as_deref(),
            Some("Spent $0 · 0 tokens")
        );
        let e3 = ServerExecution::parse(r#"{"id":"e3","state":"completed"}"#).expect("execution");
        assert_eq!(e3.spend, None);
        assert_eq!(
            crate::run_view::budget_hint(Some("paused by a user"), "e3"),
            None
        );
    }

    #[test]
    fn checkpoints_are_numbered_oldest_first() {
        let list = Vec::<ServerCheckpoint>::parse(r#"[{"id":"c2","executionId":"e","createdAt":2,"completedSteps":["a","b"]},{"id":"c1","executionId":"e","createdAt":1,"completedSteps":["a"]}]"#).expect("list");
        let m = checkpoint_metas(&list);
        assert_eq!((m[0].id.as_str(), m[0].seq, m[0].completed), ("c1", 1, 1));
        assert_eq!((m[1].id.as_str(), m[1].seq), ("c2", 2));
    }
}
