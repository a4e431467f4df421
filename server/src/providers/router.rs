//! The `Router`: which provider and model an agent's call goes to, the fallback
//! along its chain, the price of an answer, and the scrubbing of every key from
//! what leaves the provider layer.

use super::{
    Completion, CompletionRequest, DEFAULT_MAX_TOKENS, DEFAULT_TIMEOUT_MS, Endpoint, Provider,
    ProviderError, TextSink, echo, http, limit::Limiter, scrub,
};
use crate::config::{AUTO_ORDER, AgentsConfig, ProviderKind};
use ax_core::{ErrorClass, ModelSettings, ProviderRetry};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// How the provider that gave `result` wants its transient failures retried
    /// (the agents file's settings); core decides with it.
    pub retry: ProviderRetry,
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

struct Slot {
    name: String,
    kind: ProviderKind,
    model: String,
    timeout: Duration,
    retry: ProviderRetry,
    /// `None` when the provider cannot be called (no key).
    provider: Option<Arc<dyn Provider>>,
    base_url: Option<String>,
    /// Why it is unavailable, or where its key comes from.
    detail: String,
    /// Its capacity limits, shared by every run of the process.
    limiter: Option<Arc<Limiter>>,
}

/// The limiter of a provider that sets limits.
fn limiter(config: &AgentsConfig, name: &str) -> Option<Arc<Limiter>> {
    let limits = config.providers.get(name)?.limits();
    limits.any().then(|| Arc::new(Limiter::new(limits)))
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
        // The built-in providers always exist, whatever the config holds.
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
        let mut slots = BTreeMap::new();
        let mut secrets = Vec::new();
        for (name, p) in &config.providers {
            let kind = config
                .kind_of(name)
                .ok_or_else(|| anyhow::anyhow!("[providers.{name}] has no kind"))?;
            let calls = p.calls.or(config.defaults.calls);
            let timeout = Duration::from_millis(calls.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
            let endpoint = |base_url: String, key: Option<String>| Endpoint {
                name: name.clone(),
                base_url,
                key,
                client: client.clone(),
                max_response_bytes: calls.max_response_bytes(),
                stream: calls.stream(),
                latency: Duration::from_millis(p.latency_ms.unwrap_or(0)),
            };
            if kind.is_offline() {
                slots.insert(
                    name.clone(),
                    Slot {
                        name: name.clone(),
                        kind,
                        model: echo::MODEL.to_string(),
                        timeout,
                        retry: calls.retry(),
                        provider: Some((kind.spec().build)(endpoint(String::new(), None))),
                        base_url: None,
                        detail: "offline, no key needed".into(),
                        limiter: limiter(&config, name),
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
            let (provider, detail) = if key.is_some() || keyless_ok {
                let detail = match (&key_var, &key) {
                    (Some(var), Some(_)) => format!("key from {var}"),
                    _ => "no key".to_string(),
                };
                let built = (kind.spec().build)(endpoint(base_url.clone(), key.clone()));
                (Some(built), detail)
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
                    retry: calls.retry(),
                    provider,
                    base_url: Some(base_url),
                    detail,
                    limiter: limiter(&config, name),
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
        let kind = ProviderKind::parse(provider.kind()).unwrap_or(ProviderKind::ECHO);
        let calls = self
            .config
            .providers
            .get(name)
            .map(|p| p.calls)
            .unwrap_or_default()
            .or(self.config.defaults.calls);
        self.slots.insert(
            name.to_string(),
            Slot {
                name: name.to_string(),
                kind,
                model: model.to_string(),
                timeout: Duration::from_millis(calls.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
                retry: calls.retry(),
                provider: Some(provider),
                base_url: None,
                detail: "provided in code".into(),
                limiter: limiter(&self.config, name),
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
        self.plan(agent, &ModelSettings::default()).chain
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

    /// The retry settings of an agent's first provider (for display and for
    /// failures that happen before any provider answers).
    pub fn retry_of(&self, agent: &str) -> ProviderRetry {
        self.plan(agent, &ModelSettings::default())
            .chain
            .first()
            .and_then(|stop| self.slots.get(&stop.provider))
            .map_or(ProviderRetry::DEFAULT, |s| s.retry)
    }

    /// The agent's route and settings, with a step's own settings over them
    /// (its model on the first provider only: fallbacks keep their own).
    fn plan(&self, agent: &str, step: &ModelSettings) -> Plan {
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
                    Some(s) if s.kind.is_offline() => s.model.clone(),
                    _ => {
                        let own = (i == 0)
                            .then(|| {
                                step.model
                                    .clone()
                                    .or_else(|| a.and_then(|a| a.model.clone()))
                            })
                            .flatten();
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
            // An empty `system` on a step sends none.
            system: step
                .system
                .clone()
                .or_else(|| a.and_then(|a| a.system.clone()))
                .filter(|s| !s.is_empty()),
            temperature: step
                .temperature
                .or_else(|| a.and_then(|a| a.temperature))
                .or(d.temperature),
            max_tokens: step
                .max_tokens
                .or_else(|| a.and_then(|a| a.max_tokens))
                .or(d.max_tokens)
                .unwrap_or(DEFAULT_MAX_TOKENS),
        }
    }

    /// What one attempt of a step can cost at most, for core's budget check:
    /// the dearest provider of the agent's chain that can be called (echo costs
    /// nothing; a model without a price makes the cost unknown), the longest
    /// answer, and the system prompt and schema text sent along.
    pub fn rate(&self, step: &ax_core::Step) -> ax_core::exec::Rate {
        let settings = step.settings();
        let plan = self.plan(&step.agent, &settings);
        let mut price = Some((0.0f64, 0.0f64));
        for stop in &plan.chain {
            let Some(slot) = self.slots.get(&stop.provider) else {
                continue;
            };
            if slot.provider.is_none() || slot.kind.is_offline() {
                continue;
            }
            price = match (price, self.config.prices.get(&stop.model)) {
                (Some((i, o)), Some(p)) => Some((i.max(p.input / 1e6), o.max(p.output / 1e6))),
                _ => None,
            };
        }
        let mut fixed = 0;
        if settings.system.is_none() {
            fixed += plan.system.as_deref().map_or(0, str::len);
        }
        if let Some(schema) = &step.output_schema {
            // Described in the prompt where the provider has no native mode.
            fixed += schema.to_string().len() + 400;
        }
        ax_core::exec::Rate {
            usd_per_token: price,
            max_tokens: plan.max_tokens,
            fixed_tokens: ax_core::exec::prompt_tokens(fixed),
        }
    }

    /// The response cache's key of an attempt, and the provider whose answers
    /// go under it (the agent's first): a hash of everything that shapes the
    /// answer (the provider's kind and address, the model, temperature, answer
    /// limit, system prompt, prompt and output schema).
    pub fn cache_key(
        &self,
        agent: &str,
        step: &ModelSettings,
        prompt: &str,
        output_schema: Option<&serde_json::Value>,
    ) -> (String, String) {
        let plan = self.plan(agent, step);
        let first = plan.chain.first();
        let slot = first.and_then(|s| self.slots.get(&s.provider));
        let parts = serde_json::json!([
            "ax-cache-v1",
            slot.map(|s| s.kind.as_str()),
            slot.and_then(|s| s.base_url.as_deref()),
            first.map(|s| s.model.as_str()),
            plan.temperature,
            plan.max_tokens,
            plan.system,
            prompt,
            output_schema,
        ]);
        let mut canon = String::new();
        ax_core::plan::canonical_json(&parts, &mut canon);
        let provider = first.map(|s| s.provider.clone()).unwrap_or_default();
        (ax_core::plan::output_hash(&canon), provider)
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

    /// Call the agent's provider, falling back along its chain on transient or
    /// `unavailable` errors (never on invalid-request, auth or truncation).
    /// `deadline_ms` is a remaining time budget for the whole attempt (the step's
    /// timeoutMs), if any.
    pub async fn complete(
        &self,
        agent: &str,
        prompt: &str,
        output_schema: Option<Arc<serde_json::Value>>,
        deadline_ms: Option<u64>,
    ) -> CallOutcome {
        self.complete_streaming(agent, prompt, output_schema, deadline_ms, None)
            .await
    }

    /// [`Router::complete`], with the answer's text sent to `on_text` while it
    /// streams in.
    pub async fn complete_streaming(
        &self,
        agent: &str,
        prompt: &str,
        output_schema: Option<Arc<serde_json::Value>>,
        deadline_ms: Option<u64>,
        on_text: Option<TextSink>,
    ) -> CallOutcome {
        let step = ModelSettings::default();
        self.call(agent, prompt, &step, output_schema, deadline_ms, on_text)
            .await
    }

    /// One step attempt: [`Router::complete_streaming`] with the step's own
    /// model settings over the agent's.
    pub async fn call(
        &self,
        agent: &str,
        prompt: &str,
        step: &ModelSettings,
        output_schema: Option<Arc<serde_json::Value>>,
        deadline_ms: Option<u64>,
        on_text: Option<TextSink>,
    ) -> CallOutcome {
        let started = Instant::now();
        let budget = deadline_ms.map(Duration::from_millis);
        let plan = self.plan(agent, step);
        let mut notes = Vec::new();
        let elapsed_ms =
            |started: Instant| started.elapsed().as_millis().min(u64::MAX as u128) as u64;
        let mut last_retry = self.retry_of(agent);
        for (i, stop) in plan.chain.iter().enumerate() {
            let slot = self.slots.get(&stop.provider);
            if let Some(s) = slot {
                last_retry = s.retry;
            }
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
                        on_text: on_text.clone().map(|sink| self.scrubbing(sink)),
                    };
                    let ticket = self
                        .wait_for_capacity(slot, &req, on_text.as_ref(), &mut notes)
                        .await;
                    tracing::debug!(agent, provider = %slot.name, model = %stop.model, "calling the model");
                    let mut r = provider.complete(&req).await;
                    if let Some((limiter, estimate)) = ticket {
                        match &r {
                            Ok(c) => limiter.correct(estimate, c.tokens_in + c.tokens_out),
                            Err(e) if e.class == ErrorClass::RateLimit => {
                                limiter.throttled(e.retry_after_ms.map(Duration::from_millis));
                            }
                            Err(_) => {}
                        }
                    }
                    if let Err(e) = &mut r {
                        if e.class == ErrorClass::Timeout && by_budget {
                            e.message.push_str(" (the step's remaining time budget)");
                        }
                        if e.class == ErrorClass::Truncated {
                            e.message.push_str(&truncation_hint(agent, step));
                        }
                    }
                    r
                }
            };
            match result {
                Ok(mut c) => {
                    c.text = scrub(&c.text, &self.secrets);
                    let offline = slot.is_some_and(|s| s.kind.is_offline());
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
                        retry: last_retry,
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
                        retry: last_retry,
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
            retry: last_retry,
        }
    }

    /// Wait until the provider's limits allow this call (before the HTTP call:
    /// neither a failure nor a retry). A wait is logged and told to `live`
    /// when it starts, told to `live` again when it is over, and noted in the
    /// run's log. Returns the limiter, holding the call's slot, and the call's
    /// token estimate (its prompt and longest answer).
    async fn wait_for_capacity(
        &self,
        slot: &Slot,
        req: &CompletionRequest,
        live: Option<&TextSink>,
        notes: &mut Vec<String>,
    ) -> Option<(LimitHold, u64)> {
        let limiter = slot.limiter.clone()?;
        let text = req.prompt.len() + req.system.as_deref().map_or(0, str::len);
        let estimate = ax_core::exec::prompt_tokens(text) + u64::from(req.max_tokens);
        let name = slot.name.as_str();
        let mut announced = false;
        let ticket = limiter
            .acquire(estimate, || {
                tracing::info!(provider = %name, "rate limit: waiting for capacity of provider {name}");
                if let Some(live) = live {
                    live.waiting(Some(format!("capacity of provider {name}").as_str()));
                }
                announced = true;
            })
            .await;
        if let Some(live) = live.filter(|_| announced) {
            live.waiting(None);
        }
        if ticket.waited >= Duration::from_millis(1) {
            notes.push(format!(
                "rate limit: waited {} ms for capacity of provider {name}",
                ticket.waited.as_millis()
            ));
        }
        Some((
            LimitHold {
                limiter,
                _ticket: ticket,
            },
            estimate,
        ))
    }

    /// A sink that never hands out a key, even one the model repeats.
    fn scrubbing(&self, sink: TextSink) -> TextSink {
        if self.secrets.is_empty() {
            return sink;
        }
        let secrets = self.secrets.clone();
        TextSink::new(move |offset, text| {
            if secrets.iter().any(|s| text.contains(s.as_str())) {
                sink.send(offset, &scrub(text, &secrets));
            } else {
                sink.send(offset, text);
            }
        })
    }
}

/// A call's slot in its provider's limiter, released when dropped.
struct LimitHold {
    limiter: Arc<Limiter>,
    _ticket: super::limit::Ticket,
}

impl std::ops::Deref for LimitHold {
    type Target = Limiter;
    fn deref(&self) -> &Limiter {
        &self.limiter
    }
}

/// Where the limit that cut an answer off is set, for this agent and step.
fn truncation_hint(agent: &str, step: &ModelSettings) -> String {
    match step.max_tokens {
        Some(_) => "; raise the step's `maxTokens`".to_owned(),
        None => {
            format!("; raise max_tokens in [agents.{agent}] (or [defaults]) of the agents file")
        }
    }
}

/// Another provider might succeed where this one failed.
fn falls_back(class: ErrorClass) -> bool {
    class == ErrorClass::Unavailable || class.is_transient()
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
