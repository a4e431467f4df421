//! The response cache on the way to the provider: an attempt whose step opts
//! in (`cache`, `config.cache`, or the run's `--cache`) is answered from an
//! earlier identical call when there is one (no provider call, cost 0, the
//! original token counts kept), else the provider's answer is kept for next
//! time. The key is the router's ([`Router::cache_key`]).

use crate::providers::{CallOutcome, Completion, Router, TextSink};
use crate::store::{CachedAnswer, Store, now_ms};
use ax_core::exec::StartStep;
use ax_core::{CacheUse, ProviderRetry};

/// The provider name of an answer that came from the cache.
pub const CACHE_PROVIDER: &str = "cache";

/// How attempt `s` uses the cache: its step's setting (or `config.cache`),
/// else the run's `--cache` for steps that say nothing.
pub fn cache_use(s: &StartStep, step: Option<&ax_core::Step>, run_cache: bool) -> Option<CacheUse> {
    s.cache.or_else(|| {
        let silent = step.is_some_and(|st| st.cache.is_none());
        (run_cache && silent).then_some(CacheUse { ttl_ms: None })
    })
}

/// Call the provider for attempt `s`; when it uses the cache (`using`),
/// answer from the cache, or keep the provider's answer there.
pub async fn call(
    router: &Router,
    store: &Store,
    s: &StartStep,
    using: Option<CacheUse>,
    deadline: Option<u64>,
    sink: Option<TextSink>,
) -> CallOutcome {
    let provider = |sink| {
        let schema = s.output_schema.clone();
        router.call(&s.agent, &s.prompt, &s.settings, schema, deadline, sink)
    };
    let Some(using) = using else {
        return provider(sink).await;
    };
    let schema = s.output_schema.as_deref();
    let (key, primary) = router.cache_key(&s.agent, &s.settings, &s.prompt, schema);
    match store.cache_get(&key, now_ms(), using.ttl_ms).await {
        Ok(Some(hit)) => return answer(hit, sink),
        Ok(None) => {}
        Err(e) => tracing::warn!(step = %s.key, "the response cache cannot be read: {e:#}"),
    }
    let outcome = provider(sink).await;
    // Only the agent's own provider's answers: a fallback's is another model's.
    if let Ok(c) = &outcome.result
        && outcome.provider == primary
    {
        let kept = CachedAnswer {
            key,
            output: c.text.clone(),
            provider: outcome.provider.clone(),
            model: outcome.model.clone(),
            tokens_in: c.tokens_in,
            tokens_out: c.tokens_out,
            cost_usd: outcome.cost_usd,
            created_at: now_ms(),
        };
        if let Err(e) = store.cache_put(kept).await {
            tracing::warn!(step = %s.key, "the response cache cannot be written: {e:#}");
        }
    }
    outcome
}

fn answer(hit: CachedAnswer, sink: Option<TextSink>) -> CallOutcome {
    if let Some(sink) = sink {
        sink.send(0, &hit.output);
    }
    let note = format!(
        "answered from the response cache (first answered by {} / {} at {})",
        hit.provider,
        hit.model,
        crate::store::format_time(hit.created_at)
    );
    CallOutcome {
        result: Ok(Completion {
            text: hit.output,
            model: hit.model.clone(),
            tokens_in: hit.tokens_in,
            tokens_out: hit.tokens_out,
        }),
        provider: CACHE_PROVIDER.to_owned(),
        model: hit.model,
        cost_usd: Some(0.0),
        latency_ms: 0,
        notes: vec![note],
        retry: ProviderRetry::DEFAULT,
    }
}
