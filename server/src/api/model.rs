//! The API's wire types: what handlers take and answer, and what the OpenAPI
//! document at `/api/openapi.json` is generated from. They are separate from the
//! store's records so that the API is a contract of its own: a new column or an
//! internal field does not change what clients see until it is added here.

use crate::store;
use ax_core::checkpoint::CheckpointFile;
use ax_core::{ExecutionState, StepState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema::SchemaType};
use utoipa::{IntoParams, PartialSchema, ToSchema};

fn string_enum<'a>(values: impl IntoIterator<Item = &'a str>, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .enum_values(Some(values.into_iter().map(str::to_owned)))
        .description(Some(description))
        .build()
}

/// The execution states, from the core's list.
pub fn execution_state() -> Object {
    string_enum(
        ExecutionState::ALL.iter().map(|s| s.as_str()),
        "The state of an execution",
    )
}

/// The step states, from the core's list.
pub fn step_state() -> Object {
    string_enum(
        StepState::ALL.iter().map(|s| s.as_str()),
        "The state of a step",
    )
}

fn problem_code() -> Object {
    string_enum(
        ax_core::Code::ALL.iter().map(|c| c.as_str()),
        "A stable problem code (docs/codes.md)",
    )
}

/// `{"error": {"code", "message"}}`, with the validation report for `422`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `bad-request`, `unauthorized`, `host-not-allowed`, `cross-origin`,
    /// `not-found`, `method-not-allowed`, `conflict`, `too-large`,
    /// `unsupported-media-type`, `invalid-workflow`, `unprocessable`, `internal`.
    pub code: String,
    /// What went wrong, where, and how to fix it.
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` once the database answers.
    #[schema(schema_with = health_status)]
    pub status: &'static str,
    pub version: &'static str,
}

fn health_status() -> Object {
    string_enum(["ok"], "Always `ok`")
}

/// One validation problem; `line`/`column` are 1-based.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[schema(schema_with = problem_code)]
    pub code: &'static str,
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_column: Option<u32>,
}

/// The validation report (`ax workflow validate --format json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Report {
    pub valid: bool,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// Topological order, when the graph is sound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<String>>,
    /// Execution levels: steps whose dependencies all lie in earlier levels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels: Option<Vec<Vec<String>>>,
}

impl From<&ax_core::Problem> for Problem {
    fn from(p: &ax_core::Problem) -> Problem {
        Problem {
            code: p.code.as_str(),
            message: p.message.clone(),
            line: p.line,
            column: p.column,
            step: p.step.clone(),
            end_line: p.end_line,
            end_column: p.end_column,
        }
    }
}

impl From<ax_core::Report> for Report {
    fn from(r: ax_core::Report) -> Report {
        Report {
            valid: r.valid,
            errors: r.errors.iter().map(Problem::from).collect(),
            warnings: r.warnings.iter().map(Problem::from).collect(),
            order: r.order,
            levels: r.levels,
        }
    }
}

/// A stored workflow.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    pub id: String,
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Content hash of the definition.
    pub hash: String,
    pub step_count: u64,
    /// Epoch milliseconds.
    pub created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// `yaml` or `json`.
    pub format: String,
    /// The text, when one workflow is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub total_executions: u64,
    pub successful_executions: u64,
    pub failed_executions: u64,
}

impl From<store::WorkflowRecord> for Workflow {
    fn from(w: store::WorkflowRecord) -> Workflow {
        Workflow {
            id: w.id,
            name: w.name,
            version: w.version,
            description: w.description,
            hash: w.hash,
            step_count: w.step_count,
            created_at: w.created_at,
            filename: w.filename,
            format: w.format,
            source: w.source,
            total_executions: w.total_executions,
            successful_executions: w.successful_executions,
            failed_executions: w.failed_executions,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    pub running: u64,
    pub skipped: u64,
}

/// An execution without its steps (lists).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummary {
    pub id: String,
    pub workflow_id: String,
    /// The workflow's name.
    pub workflow: String,
    #[schema(schema_with = execution_state)]
    pub state: String,
    /// Why it is in this state (a failure, a pause, an import).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Epoch milliseconds.
    pub created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The run's inputs, by name.
    pub inputs: Map<String, Value>,
    /// The process driving it (`host:pid`), while one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the owner's lease runs out unless renewed (epoch milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<u64>,
    /// Since when it waits for a worker to drive it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<u64>,
    /// A pause or cancel request not yet taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    pub progress: Progress,
    /// The run's own budget (given at start or resume), over the file's
    /// `config.budget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetBody>,
    /// For a child execution (a `type: workflow` step's run): its parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
}

/// The execution, step and attempt (and `forEach` item) that a child
/// execution runs for.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentLink {
    /// The parent execution's id.
    pub id: String,
    /// The parent's `type: workflow` step.
    pub step: String,
    /// The step's attempt (unique across its items).
    pub attempt: u32,
    /// For a `forEach` step: the item (0-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

impl From<store::ParentLink> for ParentLink {
    fn from(p: store::ParentLink) -> ParentLink {
        ParentLink {
            id: p.id,
            step: p.step,
            attempt: p.attempt,
            item: p.item,
        }
    }
}

impl From<store::ExecutionRecord> for ExecutionSummary {
    fn from(e: store::ExecutionRecord) -> ExecutionSummary {
        ExecutionSummary {
            id: e.id,
            workflow_id: e.workflow_id,
            workflow: e.workflow,
            state: e.state,
            reason: e.reason,
            created_at: e.created_at,
            started_at: e.started_at,
            finished_at: e.finished_at,
            duration_ms: e.duration_ms,
            inputs: match e.inputs {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            owner: e.owner,
            lease_expires_at: e.lease_expires_at,
            queued_at: e.queued_at,
            control: e.control,
            progress: Progress {
                total: e.progress.total,
                completed: e.progress.completed,
                failed: e.progress.failed,
                running: e.progress.running,
                skipped: e.progress.skipped,
            },
            parent: e.parent.map(ParentLink::from),
            budget: (!e.budget.is_unlimited()).then_some(BudgetBody {
                usd: e.budget.usd,
                tokens: e.budget.tokens,
            }),
        }
    }
}

/// One step of an execution, with its latest attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub key: String,
    pub agent: String,
    #[schema(schema_with = step_state)]
    pub state: String,
    pub attempts: u64,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    /// `rate-limit`, `timeout`, `auth`, … (docs/providers.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    pub dependencies: Vec<String>,
    /// An approval step's request (what the approver reads), while it waits and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// A forEach step's items, once listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Items>,
    /// The step's own model settings, over its agent's (docs/format.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<StepSettings>,
}

/// A step's own `model`, `temperature`, `maxTokens` and `system`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

/// A forEach step's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct Items {
    pub completed: u32,
    pub total: u32,
}

impl From<store::StepRecord> for Step {
    fn from(s: store::StepRecord) -> Step {
        Step {
            key: s.key,
            agent: s.agent,
            state: s.state,
            attempts: s.attempts,
            provider: s.provider,
            model: s.model,
            output: s.output,
            error: s.error,
            error_class: s.error_class,
            reason: s.reason,
            tokens_in: s.tokens_in,
            tokens_out: s.tokens_out,
            cost_usd: s.cost_usd,
            latency_ms: s.latency_ms,
            started_at: s.started_at,
            finished_at: s.finished_at,
            dependencies: s.dependencies,
            request: s.request,
            items: s.items.map(|i| Items {
                completed: i.completed,
                total: i.total,
            }),
            settings: s.settings.map(|m| StepSettings {
                model: m.model,
                temperature: m.temperature,
                max_tokens: m.max_tokens,
                system: m.system,
            }),
        }
    }
}

/// An execution with its steps (outputs included).
#[derive(Debug, Serialize, ToSchema)]
pub struct Execution {
    #[serde(flatten)]
    pub summary: ExecutionSummary,
    pub steps: Vec<Step>,
    /// Its child executions (`type: workflow` steps' runs), newest first.
    pub children: Vec<ExecutionSummary>,
    /// What the run spent so far: the sum of its steps' `costUsd` and tokens,
    /// and of its sub-workflows' (what its budget counts).
    pub spent: Spent,
}

/// What a run spent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Spent {
    pub usd: f64,
    pub tokens: u64,
}

impl Spent {
    pub fn of(steps: &[Step]) -> Spent {
        Spent {
            usd: steps.iter().filter_map(|s| s.cost_usd).sum(),
            tokens: steps.iter().map(|s| s.tokens_in + s.tokens_out).sum(),
        }
    }
}

/// A restore point.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub id: String,
    pub execution_id: String,
    pub created_at: u64,
    #[schema(schema_with = execution_state)]
    pub state: String,
    pub completed_steps: Vec<String>,
}

impl From<store::CheckpointRecord> for Checkpoint {
    fn from(c: store::CheckpointRecord) -> Checkpoint {
        Checkpoint {
            id: c.id,
            execution_id: c.execution_id,
            created_at: c.created_at,
            state: c.state,
            completed_steps: c.completed_steps,
        }
    }
}

/// One event of an execution's history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Increasing: `Last-Event-ID` and `?after=` take it.
    pub id: i64,
    pub execution_id: String,
    pub at: u64,
    /// `execution` (a state change), `step` (a step's state change), `item` (a forEach
    /// item's), `decision` (an approval decided), `checkpoint`, `log`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl From<store::EventRecord> for Event {
    fn from(e: store::EventRecord) -> Event {
        Event {
            id: e.id,
            execution_id: e.execution_id,
            at: e.at,
            kind: e.kind,
            step: e.step,
            state: e.state,
            attempt: e.attempt,
            message: e.message,
            data: e.data,
        }
    }
}

// ---------------------------------------------------------------- request bodies

/// `{"source", "filename"?}`: a workflow text and the name its format is read from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The workflow file's text (YAML or JSON).
    pub source: String,
    /// The file name; its extension picks YAML or JSON.
    #[serde(default)]
    pub filename: Option<String>,
}

/// What `POST /api/workflows` and `POST /api/validate` take as `application/json`:
/// the `Source` envelope, or a JSON workflow itself (an object without `source`).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation only: `SourceText` reads these bodies
pub enum SourceJson {
    Source(Source),
    Workflow(WorkflowObject),
}

/// A workflow file in JSON: any object without `source` (an object with `source` is
/// the `Source` envelope). What it must hold is the workflow format's business
/// (docs/format.md, docs/workflow.schema.json): `validate` reports on it, storing
/// an invalid one is a 422.
#[derive(Deserialize)]
#[allow(dead_code)]
pub struct WorkflowObject(Map<String, Value>);

impl PartialSchema for WorkflowObject {
    fn schema() -> RefOr<Schema> {
        // utoipa has no `not`; the key goes in through the schema's extension map,
        // which is written as siblings of the other keywords.
        let not_source: Extensions = [("not", serde_json::json!({"required": ["source"]}))]
            .into_iter()
            .collect();
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .description(Some(
                "A workflow file in JSON (docs/workflow.schema.json); any object without `source`",
            ))
            .extensions(Some(not_source))
            .into()
    }
}

impl ToSchema for WorkflowObject {}

/// `POST /api/executions`: run a stored workflow, or store and run a text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StartExecution {
    Stored(StartStored),
    Text(StartText),
}

impl StartExecution {
    /// Read a body with errors that say which form was meant (serde's own for an
    /// untagged enum only says that no form fits).
    pub fn from_value(v: Value) -> Result<StartExecution, super::ApiError> {
        let bad = |e: serde_json::Error| {
            super::ApiError::bad_request(format!("the body is not what this route takes: {e}"))
        };
        let Value::Object(m) = &v else {
            return Err(super::ApiError::bad_request(
                "send an object: `{\"workflowId\", \"inputs\"?}` or `{\"source\", \"filename\"?, \"inputs\"?}`",
            ));
        };
        match (m.contains_key("workflowId"), m.contains_key("source")) {
            (true, true) => Err(super::ApiError::bad_request(
                "give either `workflowId` (a stored workflow) or `source` (a text to store and run), not both",
            )),
            (true, false) => serde_json::from_value(v)
                .map(StartExecution::Stored)
                .map_err(bad),
            (false, true) => serde_json::from_value(v)
                .map(StartExecution::Text)
                .map_err(bad),
            (false, false) => Err(super::ApiError::bad_request(
                "give either `workflowId` (a stored workflow) or `source` (a text to store and run)",
            )),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartStored {
    pub workflow_id: String,
    /// The run's inputs by name (`inputs:` of the workflow).
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    /// The run's own budget, over the file's `config.budget`.
    #[serde(default)]
    pub budget: Option<BudgetBody>,
    /// Steps without their own `cache` answer from the response cache (in
    /// the run's sub-workflows too).
    #[serde(default)]
    pub cache: bool,
}

/// What a run may spend: each limit given replaces the file's (docs/format.md,
/// "Budgets"). A run about to exceed it pauses with a reason starting `budget:`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    /// US dollars, at the agents file's prices; zero or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0)]
    pub usd: Option<f64>,
    /// Tokens, in and out; a whole number (`1000` or `1000.0`), zero or more.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    #[schema(minimum = 0)]
    pub tokens: Option<u64>,
}

/// A whole number however JSON writes it: JSON Schema's `integer` takes `5.0`
/// as well as `5`, and so must the API that publishes that schema.
fn whole_number<'de, D>(d: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        // 2^64 itself does not fit; every whole f64 below it does.
        Some(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
            Ok(Some(f as u64))
        }
        _ => Err(D::Error::custom(format!(
            "expected a whole number of tokens, zero or more, not {n}"
        ))),
    }
}

impl BudgetBody {
    /// The budget, or why it is not one.
    pub fn budget(self) -> Result<ax_core::Budget, super::ApiError> {
        if let Some(u) = self.usd
            && !(u.is_finite() && u >= 0.0)
        {
            return Err(super::ApiError::bad_request(format!(
                "`budget.usd` must be zero or more, not {u}"
            )));
        }
        Ok(ax_core::Budget {
            usd: self.usd,
            tokens: self.tokens,
        })
    }
}

/// `POST /api/executions/{id}/resume` (optional body).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    /// Raise (or set) the run's budget before it continues.
    #[serde(default)]
    pub budget: Option<BudgetBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartText {
    /// The workflow text, stored first.
    pub source: String,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    /// The run's own budget, over the file's `config.budget`.
    #[serde(default)]
    pub budget: Option<BudgetBody>,
    /// Steps without their own `cache` answer from the response cache (in
    /// the run's sub-workflows too).
    #[serde(default)]
    pub cache: bool,
}

/// `POST /api/executions/{id}/steps/{key}/approve` (optional body).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Shown to later steps as `{{step.result.comment}}`.
    #[serde(default)]
    pub comment: Option<String>,
    /// Must satisfy the step's `outputSchema` when it has one (else 422);
    /// `{{step.result.data.x}}` downstream.
    #[serde(default)]
    pub data: Option<Value>,
    /// Who decided, for the audit trail.
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /api/executions/{id}/steps/{key}/reject` (optional body).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// The reason: the step fails with class `rejected` and this in its message.
    #[serde(default)]
    pub comment: Option<String>,
    /// Who decided, for the audit trail.
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /api/executions/{id}/pause` (optional body).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Abort in-flight steps too (they run again on resume).
    #[serde(default)]
    pub now: bool,
}

/// A checkpoint file (`ax_core::checkpoint::CheckpointFile`): the workflow text,
/// the run's state and every output, as the designer and the export write it.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct CheckpointFileBody(pub CheckpointFile);

impl PartialSchema for CheckpointFileBody {
    fn schema() -> RefOr<Schema> {
        CheckpointFileSchema::schema()
    }
}

impl ToSchema for CheckpointFileBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "CheckpointFile".into()
    }
}

/// The documented shape of a checkpoint file; `import` checks a body against it
/// before the core reads it, so that a body of the wrong shape is a 400 and a
/// well-formed file the core cannot use is a 422.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read only to check the shape
struct CheckpointFileSchema {
    /// Always `ax-checkpoint`.
    #[schema(schema_with = checkpoint_format)]
    format: String,
    /// `1`.
    #[schema(value_type = u32)]
    version: serde_json::Number,
    #[schema(inline)]
    workflow: CheckpointWorkflow,
    /// The run's state (the core's `Checkpoint`).
    checkpoint: Map<String, Value>,
    /// Output texts by content hash.
    outputs: BTreeMap<String, String>,
    /// `browser` or `server`.
    origin: Option<String>,
    execution_id: Option<String>,
}

fn checkpoint_format() -> Object {
    string_enum(["ax-checkpoint"], "The file format")
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
struct CheckpointWorkflow {
    name: String,
    source: String,
    filename: Option<String>,
}

/// Whether `value` has the documented shape of a checkpoint file.
pub fn check_checkpoint_file_shape(value: &Value) -> Result<(), super::ApiError> {
    let file = CheckpointFileSchema::deserialize(value).map_err(|e| {
        super::ApiError::bad_request(format!(
            "the body is not a checkpoint file (see CheckpointFile in /api/openapi.json): {e}"
        ))
    })?;
    // JSON Schema counts 1.0 as an integer too.
    let whole = file.version.as_u64().is_some()
        || file
            .version
            .as_f64()
            .is_some_and(|v| v >= 0.0 && v.fract() == 0.0);
    if !whole {
        return Err(super::ApiError::bad_request(format!(
            "`version` is {}: a checkpoint file's version is a whole number (1)",
            file.version
        )));
    }
    if file.format != ax_core::checkpoint::CHECKPOINT_FILE_FORMAT {
        return Err(super::ApiError::bad_request(format!(
            "`format` is `{}`: a checkpoint file says `{}`",
            file.format,
            ax_core::checkpoint::CHECKPOINT_FILE_FORMAT
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- query strings

/// `?limit=` of the lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// How many, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// `GET /api/executions` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionsQuery {
    /// Only executions in this state.
    #[param(schema_with = execution_state)]
    pub state: Option<String>,
    /// Only executions of this workflow.
    pub workflow_id: Option<String>,
    /// Only the children of this execution (its `type: workflow` steps' runs).
    pub parent_id: Option<String>,
    /// How many, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// `?filename=` when the body is the workflow file itself.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilenameQuery {
    /// The file name (its extension picks YAML or JSON).
    pub filename: Option<String>,
}

/// `GET /api/executions/{id}/events` paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this id (`Last-Event-ID` takes precedence).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// How many (JSON only; default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

/// `GET /api/executions/{id}/events` headers (documentation: the handler reads them
/// from the header map, where a malformed one is a 400 of its own).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct EventsHeaders {
    /// Resume a stream after this event (what `EventSource` sends on reconnecting).
    #[param(rename = "last-event-id", value_type = i64, required = false, minimum = 0)]
    pub last_event_id: Option<i64>,
}

/// `POST /api/checkpoints/import?resume=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Continue the imported run right away with real providers (default: leave
    /// it stopped, to resume explicitly).
    pub resume: Option<bool>,
}

/// `GET /api/stats` filter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Only the workflow of this name (every stored version of it), or the
    /// stored workflow of this id.
    pub workflow: Option<String>,
}

/// Statistics of every workflow that matched.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// One entry per workflow name, names in order.
    pub workflows: Vec<WorkflowStats>,
}

/// What the runs of one workflow name (all its stored versions) came to.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStats {
    pub name: String,
    /// The stored versions counted, the most recently run first.
    pub workflow_ids: Vec<String>,
    /// Every run (execution) of it.
    pub runs: u64,
    /// Runs by execution state (states without runs are left out).
    pub by_state: BTreeMap<String, u64>,
    /// Runs not finished yet (idle, running, paused, waiting, interrupted).
    pub active: u64,
    /// Percent of the finished runs (completed or failed) that completed, to
    /// 0.1; absent before any run finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Median duration of the completed runs, ms (nearest rank).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_duration_ms: Option<u64>,
    /// 95th percentile duration of the completed runs, ms (nearest rank).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_duration_ms: Option<u64>,
    /// Tokens of every attempt, retries included.
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Cost of every attempt, USD (0 when no price is known).
    pub cost_usd: f64,
    /// When the newest run was created (epoch ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<u64>,
}

impl From<store::WorkflowStats> for WorkflowStats {
    fn from(s: store::WorkflowStats) -> WorkflowStats {
        WorkflowStats {
            name: s.name,
            workflow_ids: s.workflow_ids,
            runs: s.runs,
            by_state: s.by_state,
            active: s.active,
            success_rate: s.success_rate,
            p50_duration_ms: s.p50_duration_ms,
            p95_duration_ms: s.p95_duration_ms,
            tokens_in: s.tokens_in,
            tokens_out: s.tokens_out,
            cost_usd: s.cost_usd,
            last_run_at: s.last_run_at,
        }
    }
}
