//! The workflow file format as Rust types. Field names are the seed's (camelCase).
//!
//! These types serialize back to the file format (export, the API) and generate
//! the JSON Schema behind `ax workflow schema`. Reading a file does not go through
//! serde: `load` walks the spanned tree so that every problem is reported at once,
//! with its position; a test keeps the two in agreement.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A workflow: named steps, each sending a prompt to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workflow {
    /// Name of the workflow.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Version of the definition.
    #[serde(default = "default_version")]
    pub version: String,
    /// The steps, at least one. Declaration order breaks ties in scheduling.
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Config::is_default")]
    pub config: Config,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Declared run inputs, used in prompts as `{{name}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputSpec>,
    /// The run's result, by name: templates over its steps' results (what a parent
    /// workflow gets from this one). Without it, the result is an object of the
    /// final steps' results keyed by step key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

/// A declared run input.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Used when the run does not supply the input. Without a default the input is
    /// required. `default: null` is a default (the value null), not "no default".
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub default: Option<serde_json::Value>,
}

/// One step: a prompt sent to an agent once its dependencies are done; or a
/// person's decision (`type: approval`); or another workflow (`type: workflow`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Unique key: letters, digits, `_` and `-`.
    pub key: String,
    /// What the step does: `prompt` (the default) asks an agent, `approval` waits
    /// for a person's decision, `workflow` runs another workflow.
    #[serde(default, rename = "type", skip_serializing_if = "StepType::is_prompt")]
    pub kind: StepType,
    /// The agent that answers the prompt (mapped to a provider and model by the
    /// agents config). Prompt steps only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent: String,
    /// The prompt; `{{input}}`, `{{step.result}}` and `{{step.result.field}}` are
    /// filled in. For an approval step, what the approver reads.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prompt: String,
    /// The workflow a `type: workflow` step runs: a path relative to this file
    /// (on the server also a stored workflow's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The child workflow's inputs (`type: workflow`); text values are templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// Run the step once per item of a list: one placeholder that renders a JSON
    /// list (`"{{files.result.files}}"`), or a list written out. `{{item}}` and
    /// `{{index}}` name the item and its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
    /// Items of this step in flight at once, at most (within `config.parallelism`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// More items than this fail the step (default 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u32>,
    /// Keys of the steps that must finish first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// Declares that the step may run alongside its siblings (informational: the
    /// graph and `config.parallelism` decide what runs concurrently).
    #[serde(default, skip_serializing_if = "is_false")]
    pub parallel: bool,
    /// A failure of this step does not fail the run; it also runs when a
    /// dependency was skipped or failed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
    /// Time limit of one attempt (of one child run for `type: workflow`), in
    /// milliseconds; for an approval, how long to wait for the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The decision when an approval's `timeoutMs` passes (default `reject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// JSON Schema that the step's output must satisfy (the output is parsed as
    /// JSON); for an approval, what the `data` given with it must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
    /// Condition on upstream results; when false the step is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The model for this step, instead of the agent's (on the agent's first
    /// provider; fallbacks keep their own). Prompt steps only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sampling temperature for this step, 0 to 2, instead of the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The longest answer, in tokens, for this step, instead of the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The system prompt for this step, instead of the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Reuse an earlier identical answer (same provider, model, settings and
    /// prompt) instead of calling the model: `true`, `false` (never, even when
    /// `config.cache` is on) or `{ttlMs}` (only answers younger than that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
}

/// A response cache setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Cache {
    On(bool),
    Ttl(CacheTtl),
}

/// `{ttlMs}`: cached answers older than this are not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheTtl {
    pub ttl_ms: u64,
}

/// How an attempt uses the response cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheUse {
    /// Only answers younger than this many milliseconds (None: any age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl Cache {
    /// What the setting means for an attempt: None when caching is off.
    pub fn using(self) -> Option<CacheUse> {
        match self {
            Cache::On(false) => None,
            Cache::On(true) => Some(CacheUse { ttl_ms: None }),
            Cache::Ttl(t) => Some(CacheUse {
                ttl_ms: Some(t.ttl_ms),
            }),
        }
    }
}

/// A step's own model settings (each overrides the agent's when set).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

impl ModelSettings {
    pub fn is_empty(&self) -> bool {
        *self == ModelSettings::default()
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum StepType {
    /// Send the prompt to the agent.
    #[default]
    Prompt,
    /// Wait for a person to approve or reject.
    Approval,
    /// Run another workflow as a child execution.
    Workflow,
}

impl StepType {
    pub const ALL: [StepType; 3] = [StepType::Prompt, StepType::Approval, StepType::Workflow];

    pub fn as_str(self) -> &'static str {
        match self {
            StepType::Prompt => "prompt",
            StepType::Approval => "approval",
            StepType::Workflow => "workflow",
        }
    }

    pub fn parse(s: &str) -> Option<StepType> {
        StepType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn is_prompt(&self) -> bool {
        *self == StepType::Prompt
    }
}

impl std::fmt::Display for StepType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision an approval takes when nobody decided within its `timeoutMs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    #[default]
    Reject,
    Approve,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Reject => "reject",
            OnTimeout::Approve => "approve",
        }
    }
}

/// The list a `forEach` step runs over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum ForEach {
    /// One placeholder that renders a JSON list: `"{{parse.result.files}}"`.
    Template(String),
    /// The items written out; text items are templates.
    List(Vec<serde_json::Value>),
}

/// `maxItems` when a forEach step does not set it.
pub const DEFAULT_MAX_ITEMS: u32 = 1000;

/// How a step is retried after a retryable failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Delay before the first retry, in milliseconds.
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: u64,
    /// Each further retry waits this many times longer (at least 1).
    #[serde(default = "default_multiplier")]
    pub retry_backoff_multiplier: f64,
    /// Error classes that are retried; by default rate-limit, timeout, network,
    /// server-error, overloaded and output-invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable_errors: Option<Vec<ErrorClass>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: default_max_retries(),
            retry_delay_ms: default_retry_delay(),
            retry_backoff_multiplier: default_multiplier(),
            retryable_errors: None,
        }
    }
}

/// Run-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Time limit of the whole run in milliseconds (paused time does not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Retries for steps without their own `retryPolicy`. Transient provider
    /// failures (rate-limit, overloaded, server-error, timeout, network) also get
    /// the provider's own retries (2 by default, set in the agents file); the
    /// larger count applies.
    #[serde(default)]
    pub max_retries: u32,
    /// At most one checkpoint per this many milliseconds (default: after every step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<u64>,
    /// Steps running at the same time, at most.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// Keep running independent steps after a required step fails.
    #[serde(default)]
    pub continue_on_error: bool,
    /// What a run may spend; a run about to exceed it pauses (overridable per run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The response cache for every prompt step without its own `cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
}

/// What a run may spend at most: US dollars (at the agents file's prices) and
/// tokens (in and out). Either or both.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
}

impl Budget {
    /// Nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.usd.is_none() && self.tokens.is_none()
    }

    /// `over`'s limits where it sets them, else this one's.
    pub fn or(self, over: Budget) -> Budget {
        Budget {
            usd: over.usd.or(self.usd),
            tokens: over.tokens.or(self.tokens),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: None,
            max_retries: 0,
            checkpoint_interval: None,
            parallelism: default_parallelism(),
            continue_on_error: false,
            budget: None,
            cache: None,
        }
    }
}

impl Config {
    pub fn is_default(&self) -> bool {
        *self == Config::default()
    }
}

/// Why an attempt failed. The driver classifies provider errors; the executor
/// decides from the class whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// 429 or a provider's rate-limit error.
    RateLimit,
    /// The attempt ran past its time limit.
    Timeout,
    /// Connection refused, reset, DNS failure.
    Network,
    /// A 5xx answer.
    ServerError,
    /// The provider says it is overloaded (529, "overloaded").
    Overloaded,
    /// The output did not satisfy `outputSchema`.
    OutputInvalid,
    /// The answer was cut off at the output token limit (`max_tokens`): half an
    /// answer is not an answer. Not retried by default: the same request stops
    /// at the same limit again.
    Truncated,
    /// Bad or missing credentials.
    Auth,
    /// The provider rejected the request as malformed.
    InvalidRequest,
    /// No provider is configured for the agent.
    Unavailable,
    /// A placeholder or condition could not be evaluated.
    Template,
    /// A person rejected an approval step.
    Rejected,
    /// Anything else.
    Other,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 13] = [
        ErrorClass::RateLimit,
        ErrorClass::Timeout,
        ErrorClass::Network,
        ErrorClass::ServerError,
        ErrorClass::Overloaded,
        ErrorClass::OutputInvalid,
        ErrorClass::Truncated,
        ErrorClass::Auth,
        ErrorClass::InvalidRequest,
        ErrorClass::Unavailable,
        ErrorClass::Template,
        ErrorClass::Rejected,
        ErrorClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::RateLimit => "rate-limit",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Network => "network",
            ErrorClass::ServerError => "server-error",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::OutputInvalid => "output-invalid",
            ErrorClass::Truncated => "truncated",
            ErrorClass::Auth => "auth",
            ErrorClass::InvalidRequest => "invalid-request",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Template => "template",
            ErrorClass::Rejected => "rejected",
            ErrorClass::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorClass> {
        ErrorClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Retried unless a policy lists its own classes.
    pub fn retryable_by_default(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimit
                | ErrorClass::Timeout
                | ErrorClass::Network
                | ErrorClass::ServerError
                | ErrorClass::Overloaded
                | ErrorClass::OutputInvalid
        )
    }

    /// A passing condition of the provider or the network, which the official
    /// SDKs retry on their own: retried by the provider's defaults when a step
    /// has no `retryPolicy`, and a reason to fall back to the next provider.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimit
                | ErrorClass::Timeout
                | ErrorClass::Network
                | ErrorClass::ServerError
                | ErrorClass::Overloaded
        )
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field that is present deserializes to `Some`, even when it is `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

pub(crate) fn default_version() -> String {
    "1.0.0".to_owned()
}
pub(crate) fn default_max_retries() -> u32 {
    3
}
pub(crate) fn default_retry_delay() -> u64 {
    1000
}
pub(crate) fn default_multiplier() -> f64 {
    2.0
}
pub(crate) fn default_parallelism() -> u32 {
    5
}
fn is_false(b: &bool) -> bool {
    !*b
}

impl Workflow {
    pub fn step(&self, key: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.key == key)
    }
}

impl Step {
    /// `maxItems`, or its default.
    pub fn max_items(&self) -> u32 {
        self.max_items.unwrap_or(DEFAULT_MAX_ITEMS)
    }

    /// How the step's attempts use the response cache (its own `cache`, else
    /// `config.cache`); None when off.
    pub fn cache_use(&self, config: &Config) -> Option<CacheUse> {
        self.cache.or(config.cache).and_then(Cache::using)
    }

    /// The step's own model settings.
    pub fn settings(&self) -> ModelSettings {
        ModelSettings {
            model: self.model.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            system: self.system.clone(),
        }
    }
}

/// The JSON Schema of the file format, generated from these types.
#[cfg(feature = "schema")]
pub fn json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Workflow)).unwrap_or_default();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$id".into(),
            serde_json::Value::String("https://ax.invalid/schema/workflow.json".into()),
        );
        obj.insert(
            "title".into(),
            serde_json::Value::String("ax workflow".into()),
        );
    }
    // What the loader accepts beyond the serde shapes, and the value rules the
    // validator enforces, so editors flag the same things.
    let mut set = |pointer: &str, key: &str, value: serde_json::Value| {
        if let Some(serde_json::Value::Object(m)) = schema.pointer_mut(pointer) {
            m.insert(key.to_owned(), value);
        }
    };
    use serde_json::json;
    set("/properties/steps", "minItems", json!(1));
    set("/properties/version", "type", json!(["string", "number"]));
    set(
        "/properties/inputs",
        "additionalProperties",
        json!({"anyOf": [{"type": "string", "description": "Shorthand for the description."}, {"type": "null"}, {"$ref": "#/$defs/InputSpec"}]}),
    );
    set(
        "/properties/inputs",
        "propertyNames",
        json!({"pattern": "^[A-Za-z0-9_-]{1,128}$"}),
    );
    set(
        "/$defs/Step/properties/key",
        "pattern",
        json!("^[A-Za-z0-9_-]{1,128}$"),
    );
    set("/$defs/Step/properties/prompt", "minLength", json!(1));
    set("/$defs/Step/properties/agent", "minLength", json!(1));
    set(
        "/$defs/Step/properties/outputSchema",
        "type",
        json!(["object", "boolean", "null"]),
    );
    set(
        "/properties/outputs",
        "propertyNames",
        json!({"pattern": "^[A-Za-z0-9_-]{1,128}$"}),
    );
    set(
        "/$defs/Step/properties/inputs",
        "propertyNames",
        json!({"pattern": "^[A-Za-z0-9_-]{1,128}$"}),
    );
    set("/$defs/Step/properties/workflow", "minLength", json!(1));
    set("/$defs/Step/properties/model", "minLength", json!(1));
    set("/$defs/Step/properties/temperature", "minimum", json!(0));
    set("/$defs/Step/properties/temperature", "maximum", json!(2));
    set("/$defs/Budget/properties/usd", "minimum", json!(0));
    set("/$defs/Budget/properties/tokens", "minimum", json!(0));
    set("/$defs/Budget", "minProperties", json!(1));
    set("/$defs/CacheTtl/properties/ttlMs", "minimum", json!(1));
    // What each step type needs and refuses (the validator says the same, with
    // positions): a prompt step needs `agent` and `prompt`, an approval a
    // `prompt` and no `agent`, a workflow step a `workflow` and no prompt.
    let refuse = |fields: &[&str]| json!({"not": {"anyOf": fields.iter().map(|f| json!({"required": [f]})).collect::<Vec<_>>()}});
    let mut approval = refuse(&[
        "agent",
        "workflow",
        "inputs",
        "forEach",
        "retryPolicy",
        "model",
        "temperature",
        "maxTokens",
        "system",
        "cache",
    ]);
    approval["required"] = json!(["prompt"]);
    let mut workflow = refuse(&[
        "agent",
        "prompt",
        "onTimeout",
        "outputSchema",
        "model",
        "temperature",
        "maxTokens",
        "system",
        "cache",
    ]);
    workflow["required"] = json!(["workflow"]);
    set(
        "/$defs/Step",
        "allOf",
        json!([
            {
                "if": {"required": ["type"], "properties": {"type": {"enum": ["approval", "workflow"]}}},
                "else": {"required": ["agent", "prompt"], "not": {"anyOf": [{"required": ["workflow"]}, {"required": ["inputs"]}, {"required": ["onTimeout"]}]}}
            },
            {"if": {"required": ["type"], "properties": {"type": {"const": "approval"}}}, "then": approval},
            {"if": {"required": ["type"], "properties": {"type": {"const": "workflow"}}}, "then": workflow}
        ]),
    );
    set(
        "/$defs/Step",
        "dependentRequired",
        json!({"maxConcurrency": ["forEach"], "maxItems": ["forEach"]}),
    );
    for p in [
        "/$defs/Step/properties/maxConcurrency",
        "/$defs/Step/properties/maxItems",
        "/$defs/Step/properties/timeoutMs",
        "/$defs/Step/properties/maxTokens",
        "/$defs/Config/properties/timeout",
        "/$defs/Config/properties/checkpointInterval",
        "/$defs/Config/properties/parallelism",
        "/$defs/RetryPolicy/properties/retryBackoffMultiplier",
    ] {
        set(p, "minimum", json!(1));
    }
    schema
}
