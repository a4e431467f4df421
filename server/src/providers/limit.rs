//! Per-provider capacity, shared by every run of this process: at most
//! `max_concurrency` calls at once, requests spaced evenly to
//! `requests_per_minute`, and `tokens_per_minute` as a bucket that holds one
//! minute's tokens (a call reserves its estimate, corrected by what it used).
//! A 429 halves the request rate for [`COOL_DOWN`] and holds new calls back
//! for the `retry-after` the server asked for. Waiting here happens before the
//! HTTP call: it is neither a failure nor a retry.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a 429 keeps the request rate halved.
pub const COOL_DOWN: Duration = Duration::from_secs(60);
const MINUTE: Duration = Duration::from_secs(60);

/// A provider's limits, as the agents file sets them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrency: Option<u32>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.max_concurrency.is_some()
            || self.requests_per_minute.is_some()
            || self.tokens_per_minute.is_some()
    }
}

/// The rate part, with the clock passed in (so it is tested without waiting).
#[derive(Debug)]
pub(crate) struct Pace {
    rpm: Option<u32>,
    tpm: Option<u64>,
    /// The earliest start of the next request.
    next_request: Option<Instant>,
    /// Theoretical time at which the token bucket is full again.
    tokens_full_at: Option<Instant>,
    slow_until: Option<Instant>,
}

impl Pace {
    pub fn new(rpm: Option<u32>, tpm: Option<u64>) -> Pace {
        Pace {
            rpm,
            tpm,
            next_request: None,
            tokens_full_at: None,
            slow_until: None,
        }
    }

    /// The time between requests at `now` (twice as long while cooling down).
    pub fn interval(&self, now: Instant) -> Option<Duration> {
        let base = MINUTE / self.rpm?.max(1);
        Some(match self.slow_until {
            Some(until) if now < until => base * 2,
            _ => base,
        })
    }

    /// What `tokens` weigh in bucket time (a minute at most: a call larger than
    /// the whole bucket waits for a full bucket, not forever).
    fn weight(&self, tokens: u64) -> Duration {
        match self.tpm {
            Some(tpm) => MINUTE.mul_f64((tokens as f64 / tpm.max(1) as f64).min(1.0)),
            None => Duration::ZERO,
        }
    }

    /// Reserve a start for a call of about `tokens`; returns when it may start.
    pub fn reserve(&mut self, now: Instant, tokens: u64) -> Instant {
        let mut start = now;
        if let Some(next) = self.next_request {
            start = start.max(next);
        }
        let weight = self.weight(tokens);
        if self.tpm.is_some() {
            let full = self.tokens_full_at.unwrap_or(now).max(start);
            // The bucket holds a minute: room for `weight` once `full + weight - MINUTE` passed.
            start = start.max((full + weight).checked_sub(MINUTE).unwrap_or(start));
            self.tokens_full_at = Some(self.tokens_full_at.unwrap_or(start).max(start) + weight);
        }
        if let Some(interval) = self.interval(start) {
            self.next_request = Some(start + interval);
        }
        start
    }

    /// A call estimated at `estimated` tokens used `actual`.
    pub fn correct(&mut self, estimated: u64, actual: u64) {
        let Some(full) = self.tokens_full_at else {
            return;
        };
        let (est, act) = (self.weight(estimated), self.weight(actual));
        self.tokens_full_at = Some(if act >= est {
            full + (act - est)
        } else {
            full.checked_sub(est - act).unwrap_or(full)
        });
    }

    /// The provider answered 429: halve the rate for a while, and start nothing
    /// before `retry_after` has passed.
    pub fn throttled(&mut self, now: Instant, retry_after: Option<Duration>) {
        self.slow_until = Some(now + COOL_DOWN);
        if let Some(wait) = retry_after {
            let resume = now + wait.min(COOL_DOWN);
            self.next_request = Some(self.next_request.map_or(resume, |n| n.max(resume)));
        }
    }
}

/// One provider's limiter; lives in the router, so every run shares it.
#[derive(Debug)]
pub(crate) struct Limiter {
    concurrency: Option<std::sync::Arc<Semaphore>>,
    pace: Mutex<Pace>,
}

/// Held for the duration of one call.
pub(crate) struct Ticket {
    _permit: Option<OwnedSemaphorePermit>,
    /// How long the call waited for capacity.
    pub waited: Duration,
}

impl Limiter {
    pub fn new(limits: Limits) -> Limiter {
        Limiter {
            concurrency: limits
                .max_concurrency
                .map(|n| std::sync::Arc::new(Semaphore::new(n.max(1) as usize))),
            pace: Mutex::new(Pace::new(
                limits.requests_per_minute,
                limits.tokens_per_minute,
            )),
        }
    }

    fn pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for a free slot and for the rates to allow a call of about
    /// `tokens`. `waiting` is called once, when the call has to wait.
    pub async fn acquire(&self, tokens: u64, waiting: impl FnOnce()) -> Ticket {
        let started = Instant::now();
        let mut waiting = Some(waiting);
        let mut on_wait = || {
            if let Some(f) = waiting.take() {
                f()
            }
        };
        let mut permit = None;
        if let Some(sem) = &self.concurrency {
            permit = match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    on_wait();
                    // Nothing closes the semaphore; were it closed, the call goes ahead.
                    sem.clone().acquire_owned().await.ok()
                }
            };
        }
        let start = self.pace().reserve(Instant::now(), tokens);
        if start > Instant::now() {
            on_wait();
            tokio::time::sleep_until(start).await;
        }
        Ticket {
            _permit: permit,
            waited: started.elapsed(),
        }
    }

    pub fn correct(&self, estimated: u64, actual: u64) {
        self.pace().correct(estimated, actual);
    }

    pub fn throttled(&self, retry_after: Option<Duration>) {
        self.pace().throttled(Instant::now(), retry_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spaced_evenly() {
        let t0 = Instant::now();
        let mut pace = Pace::new(Some(60), None);
        let starts: Vec<_> = (0..3).map(|_| pace.reserve(t0, 0) - t0).collect();
        assert_eq!(
            starts,
            [0, 1, 2].map(Duration::from_secs).to_vec(),
            "60 a minute is one a second"
        );
    }

    #[test]
    fn a_429_halves_the_rate_for_the_cool_down_then_restores_it() {
        let t0 = Instant::now();
        let mut pace = Pace::new(Some(60), None);
        assert_eq!(pace.interval(t0), Some(Duration::from_secs(1)));
        pace.throttled(t0, None);
        assert_eq!(pace.interval(t0), Some(Duration::from_secs(2)));
        let first = pace.reserve(t0, 0);
        let second = pace.reserve(t0, 0);
        assert_eq!(second - first, Duration::from_secs(2));
        let later = t0 + COOL_DOWN + Duration::from_secs(1);
        assert_eq!(pace.interval(later), Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_429_holds_calls_back_for_its_retry_after() {
        let t0 = Instant::now();
        let mut pace = Pace::new(None, None);
        pace.throttled(t0, Some(Duration::from_secs(5)));
        assert_eq!(pace.reserve(t0, 0) - t0, Duration::from_secs(5));
    }

    #[test]
    fn tokens_per_minute_admits_a_minute_at_once_then_refills() {
        let t0 = Instant::now();
        let mut pace = Pace::new(None, Some(1000));
        assert_eq!(pace.reserve(t0, 600), t0);
        assert_eq!(pace.reserve(t0, 400), t0, "the bucket holds 1000");
        // Full: 500 more tokens refill in 30 s.
        assert_eq!(pace.reserve(t0, 500) - t0, Duration::from_secs(30));
    }

    #[test]
    fn actual_usage_corrects_the_estimate() {
        let t0 = Instant::now();
        let mut pace = Pace::new(None, Some(1000));
        pace.reserve(t0, 1000);
        // It used only 100: 900 come back.
        pace.correct(1000, 100);
        assert_eq!(pace.reserve(t0, 900), t0);
        assert_eq!(pace.reserve(t0, 60) - t0, Duration::from_millis(3600));
    }

    #[test]
    fn a_call_larger_than_the_bucket_waits_for_a_full_bucket_only() {
        let t0 = Instant::now();
        let mut pace = Pace::new(None, Some(100));
        assert_eq!(pace.reserve(t0, 5000), t0);
        assert_eq!(pace.reserve(t0, 5000) - t0, MINUTE);
    }
}
