//! LLM providers behind one trait, and the `Router` that turns "agent X, this
//! prompt" into a call on the agent's provider, falling back along its chain.
//!
//! Four kinds: Anthropic Messages, OpenAI Chat Completions (and every server that
//! speaks it: Ollama, vLLM, llama.cpp, LM Studio), Google Gemini
//! `generateContent`, and `echo`, the offline provider that is the default when no
//! key is set. Errors carry an `ErrorClass` that the core executor retries on.
//! Keys stay in this module: they are read from the environment, sent only in
//! request headers marked sensitive, and scrubbed from every message, note and
//! answer that leaves it.

pub mod anthropic;
pub mod echo;
pub mod gemini;
mod http;
pub mod openai;

pub use anthropic::Anthropic;
pub use echo::Echo;
pub use gemini::Gemini;
pub use http::{parse_retry_after, parse_retry_after_ms, retry_after};
pub use openai::OpenAi;

use crate::config::{AUTO_ORDER, AgentsConfig, ProviderKind};
use ax_core::ErrorClass;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request limit when neither the provider nor `[defaults]` sets one.
pub const DEFAULT_TIMEOUT_MS: u64 = 120_000;
/// `max_tokens` when neither the agent nor `[defaults]` sets one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// One call to one model.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub prompt: String,
    pub system: Option<String>,
    pub model: String,
    pub temperature: Option<f64>,
    pub max_tokens: u32,
    /// The whole exchange must finish within this.
    pub timeout: Duration,
    /// The step's `outputSchema`: real providers are asked for JSON that fits it,
    /// `echo` synthesizes such JSON.
    pub output_schema: Option<Arc<serde_json::Value>>,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// Why a call failed: a class the executor can act on, one line for people
/// (provider, model, status, what happened; never a key), and the delay the
/// server asked for.
#[derive(Debug, Clone)]
pub struct ProviderError {
    pub class: ErrorClass,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    pub status: Option<u16>,
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

impl std::error::Error for ProviderError {}

pub type ProviderFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Completion, ProviderError>> + Send + 'a>>;

/// A model endpoint. Dropping the future cancels the call.
pub trait Provider: Send + Sync {
    fn kind(&self) -> &'static str;
    fn complete<'a>(&'a self, req: &'a CompletionRequest) -> ProviderFuture<'a>;
}

/// The outcome of one step attempt, after fallbacks.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub result: Result<Completion, ProviderError>,
    /// The provider that answered, or the last one tried.
    pub provider: String,
    pub model: String,
    /// From `[prices]`; 0 for echo; `None` when the model has no price or the call failed.
    pub cost_usd: Option<f64>,
    pub latency_ms: u64,
    /// One line per fallback taken.
    pub notes: Vec<String>,
}

/// One stop of an agent's route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    pub provider: String,
    pub model: String,
}

/// What the router knows about one provider, for display (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderStatus {
    pub name: String,
    pub kind: String,
    pub model: String,
    /// Where requests go (without credentials); `None` for echo.
    pub base_url: Option<String>,
    pub available: bool,
    /// Why it is unavailable, or which variable holds its key.
    pub detail: String,
}

/// Replace every secret in `text` with `[redacted]`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

struct Slot {
    name: String,
    kind: ProviderKind,
    model: String,
    timeout: Duration,
    /// `None` when the provider cannot be called (no key).
    provider: Option<Arc<dyn Provider>>,
    base_url: Option<String>,
    /// Why it is unavailable, or where its key comes from.
    detail: String,
}

/// Maps agents to providers; cheap to share (`Arc<Router>`).
pub struct Router {
    config: AgentsConfig,
    slots: BTreeMap<String, Slot>,
    default_provider: String,
    secrets: Vec<String>,
}

struct Plan {
    chain: Vec<RouteEntry>,
    system: Option<String>,
    temperature: Option<f64>,
    max_tokens: u32,
}

impl Router {
    /// Build from config and an environment lookup (keys and base URLs come from
    /// env: ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY, ANTHROPIC_BASE_URL,
    /// OPENAI_BASE_URL, GEMINI_BASE_URL; the config may set base URLs and
    /// `api_key_env` names too).
    pub fn new(
        mut config: AgentsConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Router> {
        // The four built-in providers always exist, whatever the config holds.
        let builtin = AgentsConfig::builtin();
        for (name, p) in builtin.providers {
            config.providers.entry(name).or_insert(p);
        }
        config
            .check()
            .map_err(|problems| anyhow::anyhow!(problems.join("\n")))?;
        let builtin_models: BTreeMap<ProviderKind, String> = AgentsConfig::builtin()
            .providers
            .iter()
            .filter_map(|(n, p)| Some((ProviderKind::parse(n)?, p.model.clone()?)))
            .collect();
        let lookup = |var: &str| {
            env(var)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let client = http::client();
        let default_timeout = config.defaults.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        let mut slots = BTreeMap::new();
        let mut secrets = Vec::new();
        for (name, p) in &config.providers {
            let kind = config
                .kind_of(name)
                .ok_or_else(|| anyhow::anyhow!("[providers.{name}] has no kind"))?;
            let timeout = Duration::from_millis(p.timeout_ms.unwrap_or(default_timeout));
            if kind == ProviderKind::Echo {
                let latency = Duration::from_millis(p.latency_ms.unwrap_or(0));
                slots.insert(
                    name.clone(),
                    Slot {
                        name: name.clone(),
                        kind,
                        model: echo::MODEL.to_string(),
                        timeout,
                        provider: Some(Arc::new(Echo::new(name, latency))),
                        base_url: None,
                        detail: "offline, no key needed".into(),
                    },
                );
                continue;
            }
            let builtin_name = name == kind.as_str();
            // A provider with its own name never borrows the built-in key: that
            // would send the OpenAI key to, say, a local Ollama server.
            let key_var = p.api_key_env.clone().or_else(|| {
                builtin_name
                    .then(|| kind.key_env().map(str::to_string))
                    .flatten()
            });
            let key = key_var.as_deref().and_then(lookup);
            let base = p.base_url.clone().or_else(|| {
                builtin_name
                    .then(|| kind.base_url_env().and_then(lookup))
                    .flatten()
            });
            // A server at an address of your choosing may need no key (local
            // OpenAI-compatible servers, proxies), unless you named a key variable.
            let keyless_ok = base.is_some() && p.api_key_env.is_none();
            let base_url = base
                .clone()
                .unwrap_or_else(|| kind.default_base_url().unwrap_or_default().to_string());
            let model = p
                .model
                .clone()
                .or_else(|| builtin_models.get(&kind).cloned())
                .unwrap_or_default();
            let (provider, detail): (Option<Arc<dyn Provider>>, String) = if key.is_some()
                || keyless_ok
            {
                let detail = match (&key_var, &key) {
                    (Some(var), Some(_)) => format!("key from {var}"),
                    _ => "no key".to_string(),
                };
                let k = key.clone();
                let c = client.clone();
                let provider: Arc<dyn Provider> = match kind {
                    ProviderKind::Anthropic => Arc::new(Anthropic::new(name, &base_url, k, c)),
                    ProviderKind::Openai => Arc::new(OpenAi::new(name, &base_url, k, c)),
                    ProviderKind::Gemini => Arc::new(Gemini::new(name, &base_url, k, c)),
                    ProviderKind::Echo => unreachable!("echo is handled above"),
                };
                (Some(provider), detail)
            } else {
                let why = match &key_var {
                    Some(var) => format!("no API key: set {var}"),
                    None => format!(
                        "not configured: set base_url (and api_key_env if the server needs a key) in [providers.{name}]"
                    ),
                };
                (None, why)
            };
            if let Some(k) = key {
                // Too short to be a real key, and scrubbing it would mangle text.
                if k.len() >= 4 && !secrets.contains(&k) {
                    secrets.push(k);
                }
            }
            slots.insert(
                name.clone(),
                Slot {
                    name: name.clone(),
                    kind,
                    model,
                    timeout,
                    provider,
                    base_url: Some(base_url),
                    detail,
                },
            );
        }
        let default_provider = match config.defaults.provider.as_deref() {
            Some(p) if p != "auto" => p.to_string(),
            _ => AUTO_ORDER
                .iter()
                .find(|n| slots.get(**n).is_some_and(|s| s.provider.is_some()))
                .map_or("echo", |n| *n)
                .to_string(),
        };
        Ok(Router {
            config,
            slots,
            default_provider,
            secrets,
        })
    }

    /// `new` with the process environment.
    pub fn from_env(config: AgentsConfig) -> anyhow::Result<Router> {
        Router::new(config, &|name| std::env::var(name).ok())
    }

    /// Replace (or add) a provider by name, e.g. a fake in tests. Agents reach it
    /// by naming it as `provider` or in `fallback` (declare it in the config, with
    /// any kind, so the config check accepts the name).
    pub fn with_provider(mut self, name: &str, model: &str, provider: Arc<dyn Provider>) -> Router {
        let kind = ProviderKind::parse(provider.kind()).unwrap_or(ProviderKind::Echo);
        let timeout = self
            .slots
            .get(name)
            .map(|s| s.timeout)
            .unwrap_or(Duration::from_millis(
                self.config
                    .defaults
                    .timeout_ms
                    .unwrap_or(DEFAULT_TIMEOUT_MS),
            ));
        self.slots.insert(
            name.to_string(),
            Slot {
                name: name.to_string(),
                kind,
                model: model.to_string(),
                timeout,
                provider: Some(provider),
                base_url: None,
                detail: "provided in code".into(),
            },
        );
        self
    }

    /// The configuration the router was built from.
    pub fn config(&self) -> &AgentsConfig {
        &self.config
    }

    /// Where an agent's calls go: provider names and models in fallback order
    /// (for display; never includes keys).
    pub fn route(&self, agent: &str) -> Vec<RouteEntry> {
        self.plan(agent).chain
    }

    /// Every provider, available or not.
    pub fn status(&self) -> Vec<ProviderStatus> {
        self.slots
            .values()
            .map(|s| ProviderStatus {
                name: s.name.clone(),
                kind: s.kind.as_str().to_string(),
                model: s.model.clone(),
                base_url: s.base_url.as_deref().map(crate::config::redact_url),
                available: s.provider.is_some(),
                detail: s.detail.clone(),
            })
            .collect()
    }

    /// Every secret value the router knows (API keys), so callers can scrub text
    /// before storing it.
    pub fn secrets(&self) -> Vec<String> {
        self.secrets.clone()
    }

    /// The provider for agents without an explicit one: `[defaults] provider`, or
    /// the first of anthropic, gemini, openai that can be called, else "echo".
    pub fn default_provider(&self) -> String {
        self.default_provider.clone()
    }

    fn plan(&self, agent: &str) -> Plan {
        let a = self.config.agents.get(agent);
        let primary = a
            .and_then(|a| a.provider.clone())
            .unwrap_or_else(|| self.default_provider.clone());
        let mut names = vec![primary];
        for f in a.and_then(|a| a.fallback.as_ref()).into_iter().flatten() {
            if !names.contains(f) {
                names.push(f.clone());
            }
        }
        let chain = names
            .into_iter()
            .enumerate()
            .map(|(i, provider)| {
                let slot = self.slots.get(&provider);
                let model = match slot {
                    Some(s) if s.kind == ProviderKind::Echo => s.model.clone(),
                    _ => {
                        let own = (i == 0).then(|| a.and_then(|a| a.model.clone())).flatten();
                        own.or_else(|| slot.map(|s| s.model.clone()))
                            .unwrap_or_default()
                    }
                };
                RouteEntry { provider, model }
            })
            .collect();
        let d = &self.config.defaults;
        Plan {
            chain,
            system: a.and_then(|a| a.system.clone()),
            temperature: a.and_then(|a| a.temperature).or(d.temperature),
            max_tokens: a
                .and_then(|a| a.max_tokens)
                .or(d.max_tokens)
                .unwrap_or(DEFAULT_MAX_TOKENS),
        }
    }

    fn cost(&self, requested: &str, c: &Completion, offline: bool) -> Option<f64> {
        if offline {
            return Some(0.0);
        }
        self.config
            .prices
            .get(requested)
            .or_else(|| self.config.prices.get(&c.model))
            .map(|p| p.cost(c.tokens_in, c.tokens_out))
    }

    /// Call the agent's provider, falling back along its chain on retryable or
    /// `unavailable` errors (never on invalid-request or auth). `deadline_ms` is a
    /// remaining time budget for the whole attempt (the step's timeoutMs), if any.
    pub async fn complete(
        &self,
        agent: &str,
        prompt: &str,
        output_schema: Option<Arc<serde_json::Value>>,
        deadline_ms: Option<u64>,
    ) -> CallOutcome {
        let started = Instant::now();
        let budget = deadline_ms.map(Duration::from_millis);
        let plan = self.plan(agent);
        let mut notes = Vec::new();
        let elapsed_ms =
            |started: Instant| started.elapsed().as_millis().min(u64::MAX as u128) as u64;
        for (i, stop) in plan.chain.iter().enumerate() {
            let slot = self.slots.get(&stop.provider);
            let remaining = budget.map(|b| b.saturating_sub(started.elapsed()));
            let result = match (slot, slot.and_then(|s| s.provider.as_ref())) {
                _ if remaining.is_some_and(|r| r.is_zero()) => Err(ProviderError {
                    class: ErrorClass::Timeout,
                    message: format!(
                        "{} ({}): not called: the step's time budget of {} ms is used up",
                        stop.provider,
                        stop.model,
                        deadline_ms.unwrap_or(0)
                    ),
                    retry_after_ms: None,
                    status: None,
                }),
                (None, _) => Err(ProviderError {
                    class: ErrorClass::Unavailable,
                    message: format!("{}: no such provider", stop.provider),
                    retry_after_ms: None,
                    status: None,
                }),
                (Some(slot), None) => Err(ProviderError {
                    class: ErrorClass::Unavailable,
                    message: format!(
                        "{} ({}): unavailable: {}",
                        slot.name, stop.model, slot.detail
                    ),
                    retry_after_ms: None,
                    status: None,
                }),
                (Some(slot), Some(provider)) => {
                    let (timeout, by_budget) = match remaining {
                        Some(r) if r < slot.timeout => (r, true),
                        _ => (slot.timeout, false),
                    };
                    let req = CompletionRequest {
                        prompt: prompt.to_string(),
                        system: plan.system.clone(),
                        model: stop.model.clone(),
                        temperature: plan.temperature,
                        max_tokens: plan.max_tokens,
                        timeout,
                        output_schema: output_schema.clone(),
                    };
                    tracing::debug!(agent, provider = %slot.name, model = %stop.model, "calling the model");
                    let mut r = provider.complete(&req).await;
                    if let Err(e) = &mut r
                        && e.class == ErrorClass::Timeout
                        && by_budget
                    {
                        e.message.push_str(" (the step's remaining time budget)");
                    }
                    r
                }
            };
            match result {
                Ok(mut c) => {
                    c.text = scrub(&c.text, &self.secrets);
                    let offline = slot
                        .and_then(|s| s.provider.as_ref())
                        .is_some_and(|p| p.kind() == "echo");
                    let cost_usd = self.cost(&stop.model, &c, offline);
                    let model = if c.model.is_empty() {
                        stop.model.clone()
                    } else {
                        c.model.clone()
                    };
                    return CallOutcome {
                        result: Ok(c),
                        provider: stop.provider.clone(),
                        model,
                        cost_usd,
                        latency_ms: elapsed_ms(started),
                        notes,
                    };
                }
                Err(mut e) => {
                    e.message = scrub(&e.message, &self.secrets);
                    let out_of_time = budget.is_some_and(|b| started.elapsed() >= b);
                    if let Some(next) = plan.chain.get(i + 1)
                        && falls_back(e.class)
                        && !out_of_time
                    {
                        let status = e.status.map(|s| format!(" ({s})")).unwrap_or_default();
                        notes.push(scrub(
                            &format!(
                                "{}: {}{status}, falling back to {}",
                                stop.provider, e.class, next.provider
                            ),
                            &self.secrets,
                        ));
                        tracing::info!(agent, "{}", notes.last().map(String::as_str).unwrap_or(""));
                        continue;
                    }
                    return CallOutcome {
                        result: Err(e),
                        provider: stop.provider.clone(),
                        model: stop.model.clone(),
                        cost_usd: None,
                        latency_ms: elapsed_ms(started),
                        notes,
                    };
                }
            }
        }
        // The chain always has at least the primary provider.
        CallOutcome {
            result: Err(ProviderError {
                class: ErrorClass::Unavailable,
                message: format!("no provider is configured for agent `{agent}`"),
                retry_after_ms: None,
                status: None,
            }),
            provider: String::new(),
            model: String::new(),
            cost_usd: None,
            latency_ms: elapsed_ms(started),
            notes,
        }
    }
}

/// Another provider might succeed where this one failed.
fn falls_back(class: ErrorClass) -> bool {
    class == ErrorClass::Unavailable
        || (class.retryable_by_default() && class != ErrorClass::OutputInvalid)
}

/// By hand, so no key can ever be printed.
impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("default_provider", &self.default_provider)
            .field("providers", &self.status())
            .field("agents", &self.config.agents.keys().collect::<Vec<_>>())
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .finish()
    }
}
