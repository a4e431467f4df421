//! The agents file: which provider and model each agent calls, its system prompt
//! and sampling settings, the providers themselves (any name, four kinds), and a
//! price table for `cost_usd`.
//!
//! A user file (TOML or YAML, by extension) is laid over the built-in defaults in
//! `providers/defaults.toml`, field by field. Keys are never in this file: a
//! provider names the environment variable that holds its key (`api_key_env`).
//! Unknown fields, unknown provider names and bad values are errors that name the
//! file, the line when it can be found, and the likely intended name.

use crate::providers::{KINDS, KindSpec};
use anyhow::{Result, anyhow};
use ax_core::ProviderRetry;
use ax_core::parse::{Format, Limits};
use ax_core::report::suggest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const BUILTIN: &str = include_str!("providers/defaults.toml");

/// Provider names tried, in this order, when `defaults.provider` is `auto`.
pub const AUTO_ORDER: [&str; 3] = ["anthropic", "gemini", "openai"];

/// The wire protocol a provider speaks: one row of [`providers::KINDS`]
/// (adding a kind is a file in `providers/` and a row there, nothing here).
#[derive(Clone, Copy)]
pub struct ProviderKind(&'static KindSpec);

impl ProviderKind {
    /// The offline provider, which every configuration has.
    pub const ECHO: ProviderKind = ProviderKind(&crate::providers::echo::KIND);

    pub fn all() -> impl Iterator<Item = ProviderKind> {
        KINDS.iter().map(ProviderKind)
    }

    /// Every kind's name, for messages.
    pub fn names() -> Vec<&'static str> {
        KINDS.iter().map(|k| k.name).collect()
    }

    pub fn as_str(self) -> &'static str {
        self.0.name
    }

    pub fn parse(s: &str) -> Option<ProviderKind> {
        KINDS.iter().find(|k| k.name == s).map(ProviderKind)
    }

    pub fn spec(self) -> &'static KindSpec {
        self.0
    }

    /// Calls no network and needs no key (echo).
    pub fn is_offline(self) -> bool {
        self.0.offline
    }

    /// The environment variable with the key of the built-in provider of this kind.
    pub fn key_env(self) -> Option<&'static str> {
        self.0.key_env
    }

    /// The environment variable that moves the built-in provider of this kind.
    pub fn base_url_env(self) -> Option<&'static str> {
        self.0.base_url_env
    }

    pub fn default_base_url(self) -> Option<&'static str> {
        self.0.default_base_url
    }
}

impl PartialEq for ProviderKind {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ProviderKind {}

impl PartialOrd for ProviderKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ProviderKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for ProviderKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::fmt::Debug for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ProviderKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProviderKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ProviderKind::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown provider kind `{name}`; the kinds are: {}",
                ProviderKind::names().join(", ")
            ))
        })
    }
}

/// How calls are made, settable in `[defaults]` (for every provider) and in
/// `[providers.NAME]` (for one): time and size limits, streaming, and how the
/// provider's transient failures are retried for steps without a `retryPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CallSettings {
    /// Per-request time limit (default 120 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retries of transient failures (default 2, as the official SDKs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Backoff before the first retry (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_retry_delay_ms: Option<u64>,
    /// The backoff doubles up to this (default 8 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_delay_ms: Option<u64>,
    /// The longest `retry-after` waited for (default 60 000); a longer one fails
    /// the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_after_ms: Option<u64>,
    /// The largest answer read (default 16 MiB): a body, or a stream's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
    /// Ask for the answer as a stream (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// The names of [`CallSettings`]' fields, as the file spells them.
const CALL_FIELDS: &[&str] = &[
    "timeout_ms",
    "max_retries",
    "initial_retry_delay_ms",
    "max_retry_delay_ms",
    "max_retry_after_ms",
    "max_response_bytes",
    "stream",
];

/// Retries beyond this are a mistake, not a policy.
pub const MAX_PROVIDER_RETRIES: u32 = 100;
/// `max_response_bytes` when nothing sets it.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

impl CallSettings {
    /// `self`, with what it leaves unset taken from `under`.
    pub fn or(self, under: CallSettings) -> CallSettings {
        CallSettings {
            timeout_ms: self.timeout_ms.or(under.timeout_ms),
            max_retries: self.max_retries.or(under.max_retries),
            initial_retry_delay_ms: self.initial_retry_delay_ms.or(under.initial_retry_delay_ms),
            max_retry_delay_ms: self.max_retry_delay_ms.or(under.max_retry_delay_ms),
            max_retry_after_ms: self.max_retry_after_ms.or(under.max_retry_after_ms),
            max_response_bytes: self.max_response_bytes.or(under.max_response_bytes),
            stream: self.stream.or(under.stream),
        }
    }

    /// The retry settings core applies to this provider's transient failures.
    pub fn retry(&self) -> ProviderRetry {
        let d = ProviderRetry::DEFAULT;
        ProviderRetry {
            max_retries: self.max_retries.unwrap_or(d.max_retries),
            initial_delay_ms: self.initial_retry_delay_ms.unwrap_or(d.initial_delay_ms),
            max_delay_ms: self.max_retry_delay_ms.unwrap_or(d.max_delay_ms),
            max_retry_after_ms: self.max_retry_after_ms.unwrap_or(d.max_retry_after_ms),
        }
    }

    pub fn max_response_bytes(&self) -> u64 {
        self.max_response_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES)
    }

    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(true)
    }

    fn check(&self, origin: &str, at: &str, out: &mut Vec<String>) {
        let positive = [
            ("timeout_ms", self.timeout_ms),
            ("max_response_bytes", self.max_response_bytes),
        ];
        for (field, value) in positive {
            if value == Some(0) {
                out.push(format!("{origin}: {at} {field} must be more than 0"));
            }
        }
        if let Some(n) = self.max_retries
            && n > MAX_PROVIDER_RETRIES
        {
            out.push(format!(
                "{origin}: {at} max_retries must be at most {MAX_PROVIDER_RETRIES} (got {n})"
            ));
        }
        if let (Some(first), Some(most)) = (self.initial_retry_delay_ms, self.max_retry_delay_ms)
            && first > most
        {
            out.push(format!(
                "{origin}: {at} initial_retry_delay_ms ({first}) must not be more than max_retry_delay_ms ({most})"
            ));
        }
    }

    fn merge(&mut self, other: CallSettings) {
        *self = other.or(*self);
    }
}

/// `[defaults]`: what agents and providers without their own settings use.
/// (Unknown fields are found by `check_fields` before this is read: serde cannot
/// deny them next to a flattened field.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Defaults {
    /// `auto` or a provider name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// For every provider that does not set its own.
    #[serde(flatten)]
    pub calls: CallSettings,
}

/// `[providers.NAME]`: one endpoint. The name is free (`ollama`, `work-claude`);
/// the built-in names imply their kind. (Unknown fields: see [`Defaults`].)
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ProviderKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The environment variable that holds the key (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Echo only: how long each answer takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Calls to this provider at once, across every run of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Requests a minute, spaced evenly, across every run of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt and answer) a minute, across every run of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    #[serde(flatten)]
    pub calls: CallSettings,
}

impl ProviderConfig {
    /// The capacity limits this provider sets.
    pub fn limits(&self) -> crate::providers::Limits {
        crate::providers::Limits {
            max_concurrency: self.max_concurrency,
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
        }
    }
}

/// By hand: a base URL may carry credentials (`https://user:pass@host`, `?key=`).
impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url.as_deref().map(redact_url))
            .field("api_key_env", &self.api_key_env)
            .field("model", &self.model)
            .field("latency_ms", &self.latency_ms)
            .field("limits", &self.limits())
            .field("calls", &self.calls)
            .finish()
    }
}

/// A URL without user information and query: safe to show.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let rest = match rest.split_once('/') {
        Some((authority, path)) => {
            let host = authority.rsplit('@').next().unwrap_or(authority);
            let mark = if authority.contains('@') {
                "[redacted]@"
            } else {
                ""
            };
            format!("{mark}{host}/{path}")
        }
        None => {
            let host = rest.rsplit('@').next().unwrap_or(rest);
            let mark = if rest.contains('@') {
                "[redacted]@"
            } else {
                ""
            };
            format!("{mark}{host}")
        }
    };
    let query = if url.contains('?') { "?[redacted]" } else { "" };
    match scheme {
        Some(s) => format!("{s}://{rest}{query}"),
        None => format!("{rest}{query}"),
    }
}

/// `[agents.NAME]`: how one agent is called.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// A provider name; the default provider when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model on the agent's first provider (fallbacks use their own model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Providers to try next, in order, when a call fails in a way another
    /// provider could fix (rate limit, overload, server error, timeout, network,
    /// no key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Vec<String>>,
}

/// `[prices."MODEL"]`: USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    pub fn cost(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        (tokens_in as f64 * self.input + tokens_out as f64 * self.output) / 1_000_000.0
    }
}

/// The whole agents configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentsConfig {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentConfig>,
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// The file this came from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// The built-in configuration.
impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig::builtin()
    }
}

/// The syntax of an agents file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Toml,
    Yaml,
    Json,
}

impl FileFormat {
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "toml" => Some(FileFormat::Toml),
            "yaml" | "yml" => Some(FileFormat::Yaml),
            "json" => Some(FileFormat::Json),
            _ => None,
        }
    }
}

const TOP_FIELDS: &[&str] = &["defaults", "providers", "agents", "prices"];
const DEFAULTS_FIELDS: &[&str] = &["provider", "temperature", "max_tokens"];
const PROVIDER_FIELDS: &[&str] = &[
    "kind",
    "base_url",
    "api_key_env",
    "model",
    "latency_ms",
    "max_concurrency",
    "requests_per_minute",
    "tokens_per_minute",
];
const AGENT_FIELDS: &[&str] = &[
    "provider",
    "model",
    "system",
    "temperature",
    "max_tokens",
    "fallback",
];
const PRICE_FIELDS: &[&str] = &["input", "output"];

impl AgentsConfig {
    /// The configuration compiled into ax (`providers/defaults.toml`).
    pub fn builtin() -> AgentsConfig {
        static PARSED: std::sync::LazyLock<AgentsConfig> = std::sync::LazyLock::new(|| {
            parse_layer(BUILTIN, FileFormat::Toml, "built-in agents config")
                .expect("the built-in agents config is valid")
        });
        PARSED.clone()
    }

    /// `path`, or else `~/.config/ax/agents.toml` (or `.yaml`) if present, or
    /// else the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<AgentsConfig> {
        match path {
            Some(p) => AgentsConfig::load_file(p),
            None => match AgentsConfig::default_path() {
                Some(p) => AgentsConfig::load_file(&p),
                None => Ok(AgentsConfig::builtin()),
            },
        }
    }

    /// The user's agents file, if one exists: `$XDG_CONFIG_HOME/ax` or
    /// `~/.config/ax`, `agents.toml` before `agents.yaml` and `agents.yml`.
    pub fn default_path() -> Option<PathBuf> {
        let dir = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?
            .join("ax");
        ["agents.toml", "agents.yaml", "agents.yml"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
    }

    /// Read a file laid over the built-in defaults.
    pub fn load_file(path: &Path) -> Result<AgentsConfig> {
        let shown = path.display().to_string();
        let format = FileFormat::from_path(path).ok_or_else(|| {
            anyhow!("{shown}: unknown file type; name the agents file *.toml or *.yaml")
        })?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("{shown}: could not read the agents file: {e}"))?;
        let mut config = AgentsConfig::parse(&text, format, &shown)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parse text laid over the built-in defaults; `origin` names it in errors.
    pub fn parse(text: &str, format: FileFormat, origin: &str) -> Result<AgentsConfig> {
        let layer = parse_layer(text, format, origin)?;
        let mut config = AgentsConfig::builtin();
        config.merge(layer);
        config
            .check_in(origin)
            .map_err(|problems| anyhow!(problems.join("\n")))?;
        Ok(config)
    }

    /// Lay `other` over `self`: every field `other` sets wins.
    pub fn merge(&mut self, other: AgentsConfig) {
        let d = other.defaults;
        overlay(&mut self.defaults.provider, d.provider);
        overlay(&mut self.defaults.temperature, d.temperature);
        overlay(&mut self.defaults.max_tokens, d.max_tokens);
        self.defaults.calls.merge(d.calls);
        for (name, p) in other.providers {
            let mine = self.providers.entry(name).or_default();
            overlay(&mut mine.kind, p.kind);
            overlay(&mut mine.base_url, p.base_url);
            overlay(&mut mine.api_key_env, p.api_key_env);
            overlay(&mut mine.model, p.model);
            overlay(&mut mine.latency_ms, p.latency_ms);
            overlay(&mut mine.max_concurrency, p.max_concurrency);
            overlay(&mut mine.requests_per_minute, p.requests_per_minute);
            overlay(&mut mine.tokens_per_minute, p.tokens_per_minute);
            mine.calls.merge(p.calls);
        }
        for (name, a) in other.agents {
            let mine = self.agents.entry(name).or_default();
            overlay(&mut mine.provider, a.provider);
            overlay(&mut mine.model, a.model);
            overlay(&mut mine.system, a.system);
            overlay(&mut mine.temperature, a.temperature);
            overlay(&mut mine.max_tokens, a.max_tokens);
            overlay(&mut mine.fallback, a.fallback);
        }
        self.prices.extend(other.prices);
        if other.source.is_some() {
            self.source = other.source;
        }
    }

    /// The kind of a configured provider: its `kind`, or its name when that is a
    /// kind's name.
    pub fn kind_of(&self, provider: &str) -> Option<ProviderKind> {
        let p = self.providers.get(provider)?;
        p.kind.or_else(|| ProviderKind::parse(provider))
    }

    /// Every problem with this configuration, one line each.
    pub fn check(&self) -> std::result::Result<(), Vec<String>> {
        let origin = self
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "agents config".to_string());
        self.check_in(&origin)
    }

    fn check_in(&self, origin: &str) -> std::result::Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        let unknown = |what: &str, name: &str| -> String {
            let hint = match suggest(name, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? "),
                None => String::new(),
            };
            format!(
                "{origin}: {what} names the unknown provider `{name}`; {hint}the providers are: {}; \
                 add [providers.{name}] to define it",
                names.join(", ")
            )
        };
        match self.defaults.provider.as_deref() {
            None | Some("auto") => {}
            Some(p) if self.providers.contains_key(p) => {}
            Some(p) => problems.push(unknown("[defaults] provider", p)),
        }
        check_sampling(
            origin,
            "[defaults]",
            self.defaults.temperature,
            self.defaults.max_tokens,
            &mut problems,
        );
        self.defaults
            .calls
            .check(origin, "[defaults]", &mut problems);
        for (name, p) in &self.providers {
            let at = format!("[providers.{name}]");
            if self.kind_of(name).is_none() {
                problems.push(format!(
                    "{origin}: {at} has no `kind`; add kind = \"openai\" (the kinds are: {})",
                    ProviderKind::names().join(", ")
                ));
            }
            if let Some(url) = &p.base_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                problems.push(format!(
                    "{origin}: {at} base_url must start with http:// or https:// (got `{}`)",
                    redact_url(url)
                ));
            }
            if let Some(var) = &p.api_key_env
                && !is_env_name(var)
            {
                // Never repeat the value: it may be the key itself.
                problems.push(format!(
                    "{origin}: {at} api_key_env must be the name of an environment variable \
                     (letters, digits and _), not the key; export the key and name its variable here"
                ));
            }
            p.calls.check(origin, &at, &mut problems);
            let limits = [
                ("max_concurrency", p.max_concurrency.map(u64::from)),
                ("requests_per_minute", p.requests_per_minute.map(u64::from)),
                ("tokens_per_minute", p.tokens_per_minute),
            ];
            for (field, value) in limits {
                if value == Some(0) {
                    problems.push(format!(
                        "{origin}: {at} {field} must be a positive whole number (got 0); remove it for no limit"
                    ));
                }
            }
            let effective = p.calls.or(self.defaults.calls);
            if let (Some(first), Some(most)) = (
                effective.initial_retry_delay_ms,
                effective.max_retry_delay_ms,
            ) && first > most
                && p.calls.initial_retry_delay_ms.is_none() != p.calls.max_retry_delay_ms.is_none()
            {
                problems.push(format!(
                    "{origin}: {at} initial_retry_delay_ms ({first}) must not be more than max_retry_delay_ms ({most}), \
                     counting what [defaults] sets"
                ));
            }
            if p.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
                problems.push(format!("{origin}: {at} model is empty"));
            }
        }
        for (name, a) in &self.agents {
            let at = format!("[agents.{name}]");
            if let Some(p) = &a.provider
                && !self.providers.contains_key(p)
            {
                problems.push(unknown(&format!("{at} provider"), p));
            }
            for f in a.fallback.iter().flatten() {
                if !self.providers.contains_key(f) {
                    problems.push(unknown(&format!("{at} fallback"), f));
                }
            }
            check_sampling(origin, &at, a.temperature, a.max_tokens, &mut problems);
        }
        for (model, p) in &self.prices {
            if !(p.input.is_finite() && p.input >= 0.0 && p.output.is_finite() && p.output >= 0.0) {
                problems.push(format!(
                    "{origin}: [prices.\"{model}\"] input and output must be zero or more (USD per million tokens)"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn check_sampling(
    origin: &str,
    at: &str,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    out: &mut Vec<String>,
) {
    if let Some(t) = temperature
        && !(0.0..=2.0).contains(&t)
    {
        out.push(format!(
            "{origin}: {at} temperature must be between 0 and 2 (got {t})"
        ));
    }
    if max_tokens == Some(0) {
        out.push(format!("{origin}: {at} max_tokens must be more than 0"));
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn overlay<T>(mine: &mut Option<T>, theirs: Option<T>) {
    if theirs.is_some() {
        *mine = theirs;
    }
}

/// One file's content, not yet laid over anything.
fn parse_layer(text: &str, format: FileFormat, origin: &str) -> Result<AgentsConfig> {
    let root = match format {
        FileFormat::Toml => {
            let table: toml::Table = toml::from_str(text).map_err(|e| {
                let at = e
                    .span()
                    .map(|s| format!(":{}", line_col(text, s.start)))
                    .unwrap_or_default();
                anyhow!("{origin}{at}: {}", e.message().trim())
            })?;
            serde_json::to_value(table).map_err(|e| anyhow!("{origin}: {e}"))?
        }
        FileFormat::Yaml | FileFormat::Json => {
            let f = if format == FileFormat::Yaml {
                Format::Yaml
            } else {
                Format::Json
            };
            let doc = ax_core::parse::parse(text, Some(f), &Limits::default()).map_err(|e| {
                anyhow!(
                    "{origin}:{}: {}",
                    line_col(text, e.span.start as usize),
                    e.message
                )
            })?;
            doc.root.to_json()
        }
    };
    let root = match root {
        Value::Null => Value::Object(Map::new()),
        other => other,
    };
    let src = Source { text, origin };
    let mut problems = Vec::new();
    check_fields(&root, &src, &mut problems);
    if !problems.is_empty() {
        return Err(anyhow!(problems.join("\n")));
    }
    let top = root.as_object().cloned().unwrap_or_default();
    let mut config = AgentsConfig {
        defaults: Defaults::default(),
        providers: BTreeMap::new(),
        agents: BTreeMap::new(),
        prices: BTreeMap::new(),
        source: None,
    };
    if let Some(v) = top.get("defaults") {
        config.defaults = section(v, &src, &Table::defaults(), &mut problems).unwrap_or_default();
    }
    for (name, v) in entries(&top, "providers") {
        if let Some(p) = section(v, &src, &Table::named("providers", name), &mut problems) {
            config.providers.insert(name.clone(), p);
        }
    }
    for (name, v) in entries(&top, "agents") {
        if let Some(a) = section(v, &src, &Table::named("agents", name), &mut problems) {
            config.agents.insert(name.clone(), a);
        }
    }
    for (name, v) in entries(&top, "prices") {
        if let Some(p) = section(v, &src, &Table::named("prices", name), &mut problems) {
            config.prices.insert(name.clone(), p);
        }
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(anyhow!(problems.join("\n")))
    }
}

/// The text being read and how to name it in messages.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    /// `origin:line` when the key can be found in its table, else `origin`.
    fn at(&self, table: &Table, key: &str) -> String {
        let path: Vec<&str> = table.path.iter().map(String::as_str).collect();
        match line_of(self.text, &path, key) {
            Some(line) => format!("{}:{line}", self.origin),
            None => self.origin.to_string(),
        }
    }
}

/// One table of the file: how messages show it, and its path for line lookup.
struct Table {
    shown: String,
    path: Vec<String>,
}

impl Table {
    fn top() -> Table {
        Table {
            shown: "at the top level".into(),
            path: Vec::new(),
        }
    }

    fn defaults() -> Table {
        Table {
            shown: "[defaults]".into(),
            path: vec!["defaults".into()],
        }
    }

    fn named(group: &str, name: &str) -> Table {
        let shown = if group == "prices" {
            format!("[prices.\"{name}\"]")
        } else {
            format!("[{group}.{name}]")
        };
        Table {
            shown,
            path: vec![group.into(), name.into()],
        }
    }
}

fn entries<'a>(
    top: &'a Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = (&'a String, &'a Value)> {
    top.get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

/// Deserialize one table; on a type error, find the field at fault by trying each
/// field alone, so the message can name it.
fn section<T: DeserializeOwned>(
    v: &Value,
    src: &Source,
    table: &Table,
    out: &mut Vec<String>,
) -> Option<T> {
    match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            let culprit = v.as_object().and_then(|m| {
                m.iter().find_map(|(k, field)| {
                    let alone = Value::Object(Map::from_iter([(k.clone(), field.clone())]));
                    serde_json::from_value::<T>(alone)
                        .err()
                        .map(|e| (k.clone(), e))
                })
            });
            match culprit {
                Some((field, e)) => out.push(format!(
                    "{}: {} `{field}`: {e}",
                    src.at(table, &field),
                    table.shown
                )),
                None => out.push(format!("{}: {}: {e}", src.origin, table.shown)),
            }
            None
        }
    }
}

/// Unknown fields anywhere, each with the closest known name.
fn check_fields(root: &Value, src: &Source, out: &mut Vec<String>) {
    let Some(top) = root.as_object() else {
        out.push(format!(
            "{}: the agents file must be a table with [defaults], [providers.NAME], \
             [agents.NAME] and [prices.\"MODEL\"]",
            src.origin
        ));
        return;
    };
    for (key, value) in top {
        match key.as_str() {
            "defaults" => {
                let known: Vec<&str> = DEFAULTS_FIELDS.iter().chain(CALL_FIELDS).copied().collect();
                fields(value, &known, &Table::defaults(), src, out)
            }
            "providers" | "agents" | "prices" => {
                let Some(named) = value.as_object() else {
                    out.push(format!(
                        "{}: `{key}` must be a table of named entries ([{key}.NAME])",
                        src.at(&Table::top(), key)
                    ));
                    continue;
                };
                for (name, entry) in named {
                    let table = Table::named(key, name);
                    let known: Vec<&str> = match key.as_str() {
                        "providers" => PROVIDER_FIELDS.iter().chain(CALL_FIELDS).copied().collect(),
                        "agents" => AGENT_FIELDS.to_vec(),
                        _ => PRICE_FIELDS.to_vec(),
                    };
                    fields(entry, &known, &table, src, out);
                    if key == "providers"
                        && let Some(kind) = entry.get("kind").and_then(Value::as_str)
                        && ProviderKind::parse(kind).is_none()
                    {
                        let kinds = ProviderKind::names();
                        let hint = suggest(kind, kinds.iter().copied())
                            .map(|s| format!("did you mean `{s}`? "))
                            .unwrap_or_default();
                        out.push(format!(
                            "{}: {} kind `{kind}` is not a provider kind; {hint}the kinds are: {}",
                            src.at(&table, "kind"),
                            table.shown,
                            kinds.join(", ")
                        ));
                    }
                }
            }
            _ => out.push(unknown_field(key, TOP_FIELDS, &Table::top(), src)),
        }
    }
}

fn fields(v: &Value, known: &[&str], table: &Table, src: &Source, out: &mut Vec<String>) {
    let Some(map) = v.as_object() else {
        out.push(format!("{}: {} must be a table", src.origin, table.shown));
        return;
    };
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            out.push(unknown_field(key, known, table, src));
        }
    }
}

fn unknown_field(key: &str, known: &[&str], table: &Table, src: &Source) -> String {
    let hint = if matches!(key, "api_key" | "key" | "apikey" | "token") {
        "; keys are read from the environment only: export the key and name its variable with `api_key_env`"
            .to_string()
    } else {
        match suggest(key, known.iter().copied()) {
            Some(s) => format!("; did you mean `{s}`?"),
            None => format!("; the fields are: {}", known.join(", ")),
        }
    };
    let place = if table.path.is_empty() {
        table.shown.clone()
    } else {
        format!("in {}", table.shown)
    };
    format!(
        "{}: unknown field `{key}` {place}{hint}",
        src.at(table, key)
    )
}

/// The line (1-based) where `key` is defined inside the section at `path`
/// (`["agents", "backend"]`), found by reading the text as both TOML (`[a.b]`
/// headers, `key =`) and YAML (`key:` nested): good enough to point at a mistake.
fn line_of(text: &str, path: &[&str], key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let within = || {
        let mut at = 0;
        for part in path {
            at = (at..lines.len()).find(|&i| defines(lines[i], part))?;
        }
        let start = if path.is_empty() { 0 } else { at + 1 };
        (start..lines.len()).find(|&i| defines(lines[i], key))
    };
    within()
        .or_else(|| lines.iter().position(|l| defines(l, key)))
        .map(|i| i + 1)
}

/// `key =`, `key:`, `"key" =`, or a table header that names `key`.
fn defines(line: &str, key: &str) -> bool {
    let t = line.trim_start();
    let t = t.strip_prefix("- ").unwrap_or(t);
    if t.starts_with('[') {
        return t.contains(key);
    }
    let bare = t.strip_prefix(['"', '\'']).unwrap_or(t);
    bare.strip_prefix(key).is_some_and(|rest| {
        let rest = rest.trim_start_matches(['"', '\'']).trim_start();
        rest.starts_with('=') || rest.starts_with(':')
    })
}

fn line_col(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{col}")
}
