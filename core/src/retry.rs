//! Whether a failed attempt is retried, and after how long. Three sources of
//! rules meet here, and only here:
//!
//! - the step's `retryPolicy`, which, when present, alone decides (its meaning is
//!   unchanged: its classes, its count, its delays);
//! - the run's `config.maxRetries`, for steps without a policy (the default
//!   classes, the default delays);
//! - the failing provider's own retry settings ([`ProviderRetry`], the official
//!   SDKs' defaults unless the agents file changes them), for steps without a
//!   policy and *transient* failures only, so that a brief rate limit or overload
//!   does not fail a run that asked for nothing.
//!
//! The driver only classifies a failure and hands in the provider's settings with
//! it; the decision is a pure function of those values, the failure count and a
//! jitter drawn from the run's seed, so every platform decides the same.

use crate::model::{ErrorClass, RetryPolicy};
use serde::{Deserialize, Serialize};

/// How a provider's transient failures (rate limit, overload, 5xx, timeout,
/// network) are retried when the step has no `retryPolicy`. The defaults are
/// those of the official Anthropic and OpenAI SDKs: 2 retries, 0.5 s doubling
/// to at most 8 s, minus up to 25 % jitter, and a server's `retry-after` of up to
/// 60 s obeyed exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRetry {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry, in milliseconds.
    pub initial_delay_ms: u64,
    /// The backoff doubles up to this.
    pub max_delay_ms: u64,
    /// The longest `retry-after` that is waited for. A server asking for more
    /// (a daily quota, say) fails the attempt at once instead of parking the run.
    pub max_retry_after_ms: u64,
}

impl ProviderRetry {
    pub const DEFAULT: ProviderRetry = ProviderRetry {
        max_retries: 2,
        initial_delay_ms: 500,
        max_delay_ms: 8_000,
        max_retry_after_ms: 60_000,
    };

    /// No retries of its own (failures that are not a provider's, such as a
    /// failed sub-workflow, whose steps had theirs).
    pub const NONE: ProviderRetry = ProviderRetry {
        max_retries: 0,
        ..ProviderRetry::DEFAULT
    };

    /// Backoff before retry `n` (1-based): `initial · 2^(n−1)`, at most
    /// `max_delay_ms`, shortened by up to 25 % (`r ∈ [0, 1)` is the jitter).
    pub fn backoff(&self, n: u32, r: f64) -> u64 {
        let doublings = n.saturating_sub(1).min(63);
        let base = self
            .initial_delay_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_delay_ms);
        (base as f64 * (1.0 - 0.25 * r.clamp(0.0, 1.0))).round() as u64
    }
}

impl Default for ProviderRetry {
    fn default() -> Self {
        ProviderRetry::DEFAULT
    }
}

/// Delay before retry `n` (1-based) under a workflow's policy:
/// `retryDelayMs · retryBackoffMultiplier^(n−1)`, ±20 % jitter, at least the
/// provider's `retry-after`.
pub fn policy_delay(p: &RetryPolicy, n: u32, r: f64, retry_after: Option<u64>) -> u64 {
    let base = p.retry_delay_ms as f64
        * p.retry_backoff_multiplier
            .powi(n.saturating_sub(1).min(1000) as i32);
    let delay = (base * (0.8 + 0.4 * r)).min(u64::MAX as f64) as u64;
    delay.max(retry_after.unwrap_or(0))
}

/// One failed attempt, as the executor sees it when deciding.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    pub class: ErrorClass,
    /// The wait the provider asked for, if any.
    pub retry_after_ms: Option<u64>,
    /// Failed attempts of the step so far, this one included.
    pub failures: u32,
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Wait, then try again; the reason is shown in status and events.
    Retry { delay_ms: u64, reason: String },
    /// The step fails; the reason says why it was not retried, when there is one
    /// worth saying.
    Fail { reason: Option<String> },
}

/// Decide about one failed attempt. `policy` is the step's own `retryPolicy`,
/// `run_max_retries` the run's `config.maxRetries`, `provider` the failing
/// provider's settings, `r ∈ [0, 1)` the attempt's jitter.
///
/// Without a policy the two other rules combine: the attempt is retried while
/// either allows it, `config.maxRetries` first (with its own classes and
/// delays), then the provider's settings for transient classes. So a step gets
/// the larger of the two retry counts for rate limits and the like, and exactly
/// `config.maxRetries` for `output-invalid`.
pub fn decide(
    policy: Option<&RetryPolicy>,
    run_max_retries: u32,
    provider: &ProviderRetry,
    f: Failure,
    r: f64,
) -> Decision {
    let n = f.failures;
    let (allowed, limit, delay) = match policy {
        Some(p) => {
            let retryable = match &p.retryable_errors {
                Some(list) => list.contains(&f.class),
                None => f.class.retryable_by_default(),
            };
            let delay =
                (retryable && n <= p.max_retries).then(|| policy_delay(p, n, r, f.retry_after_ms));
            (retryable, p.max_retries, delay)
        }
        None => {
            let by_run = f.class.retryable_by_default();
            let by_provider = f.class.is_transient();
            let run_limit = if by_run { run_max_retries } else { 0 };
            let provider_limit = if by_provider { provider.max_retries } else { 0 };
            let delay = if by_run && n <= run_max_retries {
                let p = RetryPolicy {
                    max_retries: run_max_retries,
                    ..RetryPolicy::default()
                };
                Some(policy_delay(&p, n, r, f.retry_after_ms))
            } else if by_provider && n <= provider.max_retries {
                // As the SDKs do: a positive retry-after is obeyed exactly, else backoff.
                Some(match f.retry_after_ms {
                    Some(ms) if ms > 0 => ms,
                    _ => provider.backoff(n, r),
                })
            } else {
                None
            };
            (by_run || by_provider, run_limit.max(provider_limit), delay)
        }
    };
    match delay {
        Some(_)
            if f.retry_after_ms
                .is_some_and(|ms| ms > provider.max_retry_after_ms) =>
        {
            Decision::Fail {
                reason: Some(format!(
                    "not retried: the provider asked to wait {}, longer than the {} ax waits \
                     (max_retry_after_ms in the agents file)",
                    human_ms(f.retry_after_ms.unwrap_or(0)),
                    human_ms(provider.max_retry_after_ms)
                )),
            }
        }
        Some(delay_ms) => Decision::Retry {
            delay_ms,
            reason: format!("retry {n} of {limit} in {delay_ms} ms"),
        },
        None if !allowed => Decision::Fail {
            reason: Some(format!("{} errors are not retried", f.class)),
        },
        None if limit > 0 => Decision::Fail {
            reason: Some(format!("gave up after {n} attempts")),
        },
        None => Decision::Fail { reason: None },
    }
}

/// `750 ms`, `90 s`, `2 h`.
fn human_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{} s", ms / 1000),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(class: ErrorClass, failures: u32) -> Failure {
        Failure {
            class,
            retry_after_ms: None,
            failures,
        }
    }

    const SDK: ProviderRetry = ProviderRetry::DEFAULT;

    #[test]
    fn transient_failures_get_the_provider_defaults_without_a_policy() {
        for class in [
            ErrorClass::RateLimit,
            ErrorClass::Overloaded,
            ErrorClass::ServerError,
            ErrorClass::Timeout,
            ErrorClass::Network,
        ] {
            for n in 1..=2 {
                assert!(
                    matches!(
                        decide(None, 0, &SDK, fail(class, n), 0.0),
                        Decision::Retry { .. }
                    ),
                    "{class} failure {n}"
                );
            }
            assert_eq!(
                decide(None, 0, &SDK, fail(class, 3), 0.0),
                Decision::Fail {
                    reason: Some("gave up after 3 attempts".into())
                }
            );
        }
    }

    #[test]
    fn auth_invalid_request_truncated_and_others_are_never_retried_by_default() {
        for class in [
            ErrorClass::Auth,
            ErrorClass::InvalidRequest,
            ErrorClass::Truncated,
            ErrorClass::Unavailable,
            ErrorClass::Template,
            ErrorClass::Other,
        ] {
            assert_eq!(
                decide(None, 5, &SDK, fail(class, 1), 0.0),
                Decision::Fail {
                    reason: Some(format!("{class} errors are not retried"))
                },
                "{class}"
            );
        }
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_with_at_most_a_quarter_of_jitter() {
        assert_eq!(
            (1..=6).map(|n| SDK.backoff(n, 0.0)).collect::<Vec<_>>(),
            [500, 1000, 2000, 4000, 8000, 8000]
        );
        assert_eq!(SDK.backoff(1, 0.999_999), 375);
        assert_eq!(SDK.backoff(40, 0.5), 7000);
        assert_eq!(SDK.backoff(u32::MAX, 0.0), 8000, "no overflow");
        let Decision::Retry { delay_ms, reason } =
            decide(None, 0, &SDK, fail(ErrorClass::RateLimit, 2), 0.4)
        else {
            panic!("retried")
        };
        assert_eq!(delay_ms, 900);
        assert_eq!(reason, "retry 2 of 2 in 900 ms");
    }

    #[test]
    fn retry_after_is_obeyed_exactly_up_to_the_cap_and_fails_above_it() {
        let with = |ms| Failure {
            retry_after_ms: Some(ms),
            ..fail(ErrorClass::RateLimit, 1)
        };
        assert!(matches!(
            decide(None, 0, &SDK, with(7_000), 0.9),
            Decision::Retry {
                delay_ms: 7_000,
                ..
            }
        ));
        // 0 says nothing: the backoff applies, as in the SDKs.
        assert!(matches!(
            decide(None, 0, &SDK, with(0), 0.0),
            Decision::Retry { delay_ms: 500, .. }
        ));
        assert!(matches!(
            decide(None, 0, &SDK, with(60_000), 0.0),
            Decision::Retry {
                delay_ms: 60_000,
                ..
            }
        ));
        let Decision::Fail {
            reason: Some(reason),
        } = decide(None, 0, &SDK, with(86_400_000), 0.0)
        else {
            panic!("a day is not waited for")
        };
        assert!(
            reason.contains("24 h") && reason.contains("60 s"),
            "{reason}"
        );
        assert!(reason.contains("max_retry_after_ms"), "{reason}");
        // The cap binds a workflow's own policy too.
        let p = RetryPolicy::default();
        assert!(matches!(
            decide(Some(&p), 0, &SDK, with(3_600_000), 0.0),
            Decision::Fail { .. }
        ));
        let patient = ProviderRetry {
            max_retry_after_ms: 7_200_000,
            ..SDK
        };
        assert!(matches!(
            decide(Some(&p), 0, &patient, with(3_600_000), 0.0),
            Decision::Retry {
                delay_ms: 3_600_000,
                ..
            }
        ));
    }

    #[test]
    fn a_policy_alone_decides_when_present() {
        let none = RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(
            decide(Some(&none), 0, &SDK, fail(ErrorClass::RateLimit, 1), 0.0),
            Decision::Fail { reason: None }
        );
        let only_timeouts = RetryPolicy {
            retryable_errors: Some(vec![ErrorClass::Timeout]),
            ..RetryPolicy::default()
        };
        assert!(matches!(
            decide(
                Some(&only_timeouts),
                0,
                &SDK,
                fail(ErrorClass::RateLimit, 1),
                0.0
            ),
            Decision::Fail { .. }
        ));
        // Its delays, not the provider's: 1000 ms ±20 %.
        let Decision::Retry { delay_ms, reason } = decide(
            Some(&RetryPolicy::default()),
            0,
            &SDK,
            fail(ErrorClass::RateLimit, 1),
            0.5,
        ) else {
            panic!("retried")
        };
        assert_eq!(
            (delay_ms, reason.as_str()),
            (1000, "retry 1 of 3 in 1000 ms")
        );
        // A provider that retries nothing does not change a policy.
        let never = ProviderRetry {
            max_retries: 0,
            ..SDK
        };
        assert!(matches!(
            decide(
                Some(&RetryPolicy::default()),
                0,
                &never,
                fail(ErrorClass::RateLimit, 3),
                0.0
            ),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn config_max_retries_and_provider_defaults_combine() {
        // The run's retries first, with the workflow delays (1000 ms ±20 %)...
        let Decision::Retry { delay_ms, reason } =
            decide(None, 1, &SDK, fail(ErrorClass::ServerError, 1), 0.5)
        else {
            panic!("retried")
        };
        assert_eq!(
            (delay_ms, reason.as_str()),
            (1000, "retry 1 of 2 in 1000 ms")
        );
        // ...then the provider's, up to the larger count.
        let Decision::Retry { delay_ms, .. } =
            decide(None, 1, &SDK, fail(ErrorClass::ServerError, 2), 0.0)
        else {
            panic!("retried")
        };
        assert_eq!(delay_ms, 1000, "the provider backoff for retry 2");
        assert!(matches!(
            decide(None, 1, &SDK, fail(ErrorClass::ServerError, 3), 0.0),
            Decision::Fail { .. }
        ));
        // A larger config.maxRetries wins for transient classes.
        assert!(matches!(
            decide(None, 4, &SDK, fail(ErrorClass::RateLimit, 4), 0.0),
            Decision::Retry { .. }
        ));
        // output-invalid is the run's alone: the provider settings do not apply.
        assert_eq!(
            decide(None, 0, &SDK, fail(ErrorClass::OutputInvalid, 1), 0.0),
            Decision::Fail { reason: None }
        );
        assert!(matches!(
            decide(None, 1, &SDK, fail(ErrorClass::OutputInvalid, 1), 0.0),
            Decision::Retry { .. }
        ));
        // A provider configured with max_retries = 0 restores fail-at-once.
        let never = ProviderRetry {
            max_retries: 0,
            ..SDK
        };
        assert_eq!(
            decide(None, 0, &never, fail(ErrorClass::RateLimit, 1), 0.0),
            Decision::Fail { reason: None }
        );
    }
}
