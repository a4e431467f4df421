//! What this process's engine did since it started, for `GET /metrics`:
//! provider calls started, completed and failed (by provider, and failures by
//! class), their latency as a histogram, and runs taken over from another
//! owner. Each process counts its own; a scraper sums them over processes.

use crate::store::Gauges;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in seconds (then +Inf).
const BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Default)]
struct Histogram {
    /// Observations at or under each bound (not cumulative; summed when shown).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_ms: u64,
}

#[derive(Default)]
struct Counts {
    started: BTreeMap<String, u64>,
    completed: BTreeMap<String, u64>,
    /// (provider, class)
    failed: BTreeMap<(String, String), u64>,
    latency: BTreeMap<String, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
    takeovers: AtomicU64,
}

impl Metrics {
    pub fn step_started(&self, provider: &str) {
        if let Ok(mut c) = self.counts.lock() {
            *c.started.entry(provider.to_owned()).or_default() += 1;
        }
    }

    /// A call ended: `class` is None for an answer, the failure's class otherwise.
    pub fn step_ended(&self, provider: &str, class: Option<&str>, latency_ms: u64) {
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        match class {
            None => *c.completed.entry(provider.to_owned()).or_default() += 1,
            Some(class) => {
                *c.failed
                    .entry((provider.to_owned(), class.to_owned()))
                    .or_default() += 1
            }
        }
        let h = c.latency.entry(provider.to_owned()).or_default();
        let secs = latency_ms as f64 / 1000.0;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum_ms += latency_ms;
    }

    pub fn takeover(&self) {
        self.takeovers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn takeovers(&self) -> u64 {
        self.takeovers.load(Ordering::Relaxed)
    }

    /// The Prometheus text format (version 0.0.4): the database's gauges,
    /// then this process's counters.
    pub fn render(&self, g: &Gauges, running_here: usize) -> String {
        let mut out = String::new();
        head(
            &mut out,
            "ax_executions",
            "gauge",
            "Executions by state, in the whole database.",
        );
        for (state, n) in &g.by_state {
            let _ = writeln!(out, "ax_executions{{state=\"{}\"}} {n}", escape(state));
        }
        head(
            &mut out,
            "ax_queue_depth",
            "gauge",
            "Executions that want a driver and have none, in the whole database.",
        );
        let _ = writeln!(out, "ax_queue_depth {}", g.queued);
        head(
            &mut out,
            "ax_runs_driven",
            "gauge",
            "Executions this process drives now.",
        );
        let _ = writeln!(out, "ax_runs_driven {running_here}");
        head(
            &mut out,
            "ax_lease_takeovers_total",
            "counter",
            "Executions this process took over from an owner that died or lost its lease.",
        );
        let _ = writeln!(out, "ax_lease_takeovers_total {}", self.takeovers());
        let Ok(c) = self.counts.lock() else {
            return out;
        };
        head(
            &mut out,
            "ax_steps_started_total",
            "counter",
            "Provider calls this process started, by provider.",
        );
        for (p, n) in &c.started {
            let _ = writeln!(
                out,
                "ax_steps_started_total{{provider=\"{}\"}} {n}",
                escape(p)
            );
        }
        head(
            &mut out,
            "ax_steps_completed_total",
            "counter",
            "Provider calls of this process that answered, by provider.",
        );
        for (p, n) in &c.completed {
            let _ = writeln!(
                out,
                "ax_steps_completed_total{{provider=\"{}\"}} {n}",
                escape(p)
            );
        }
        head(
            &mut out,
            "ax_steps_failed_total",
            "counter",
            "Provider calls of this process that failed, by provider and error class.",
        );
        for ((p, class), n) in &c.failed {
            let _ = writeln!(
                out,
                "ax_steps_failed_total{{provider=\"{}\",class=\"{}\"}} {n}",
                escape(p),
                escape(class)
            );
        }
        head(
            &mut out,
            "ax_step_duration_seconds",
            "histogram",
            "How long provider calls of this process took, answered or failed, by provider.",
        );
        for (p, h) in &c.latency {
            histogram(&mut out, &escape(p), h);
        }
        out
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, provider: &str, h: &Histogram) {
    let name = "ax_step_duration_seconds";
    let mut cumulative = 0;
    for (bound, n) in BUCKETS.iter().zip(h.buckets) {
        cumulative += n;
        let _ = writeln!(
            out,
            "{name}_bucket{{provider=\"{provider}\",le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{provider=\"{provider}\",le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(
        out,
        "{name}_sum{{provider=\"{provider}\"}} {}",
        h.sum_ms as f64 / 1000.0
    );
    let _ = writeln!(out, "{name}_count{{provider=\"{provider}\"}} {}", h.count);
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.step_started("fake");
        m.step_started("fake");
        m.step_ended("fake", None, 40);
        m.step_ended("fake", Some("rate-limit"), 700);
        m.takeover();
        let g = Gauges {
            by_state: vec![("completed".into(), 3), ("run\"ning".into(), 1)],
            queued: 2,
        };
        let text = m.render(&g, 1);
        for line in [
            "ax_executions{state=\"completed\"} 3",
            "ax_executions{state=\"run\\\"ning\"} 1",
            "ax_queue_depth 2",
            "ax_runs_driven 1",
            "ax_lease_takeovers_total 1",
            "ax_steps_started_total{provider=\"fake\"} 2",
            "ax_steps_completed_total{provider=\"fake\"} 1",
            "ax_steps_failed_total{provider=\"fake\",class=\"rate-limit\"} 1",
            "ax_step_duration_seconds_bucket{provider=\"fake\",le=\"0.05\"} 1",
            "ax_step_duration_seconds_bucket{provider=\"fake\",le=\"0.5\"} 1",
            "ax_step_duration_seconds_bucket{provider=\"fake\",le=\"1\"} 2",
            "ax_step_duration_seconds_bucket{provider=\"fake\",le=\"+Inf\"} 2",
            "ax_step_duration_seconds_sum{provider=\"fake\"} 0.74",
            "ax_step_duration_seconds_count{provider=\"fake\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
