//! Terminal output: live progress of a run, status tables, events.

use crate::engine::Engine;
use crate::store::{self, EventRecord, ExecutionRecord, StepRecord};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

/// Live progress of one execution: a bar (in a terminal) and one line per
/// settled step with its duration, provider, tokens and cost.
pub struct Display {
    engine: Arc<Engine>,
    id: String,
    text: bool,
    bar: Option<ProgressBar>,
    after: i64,
    running: BTreeSet<String>,
    settled: u64,
}

impl Display {
    pub async fn new(engine: Arc<Engine>, id: String, text: bool) -> Result<Display> {
        let rec = engine
            .execution(&id)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let bar = (std::io::stderr().is_terminal() && text).then(|| {
            let pb = ProgressBar::with_draw_target(
                Some(rec.progress.total),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} steps  {wide_msg}",
            ) {
                pb.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
            }
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        if text {
            let line = format!(
                "▶ {} — execution {} ({} steps)",
                rec.workflow, rec.id, rec.progress.total
            );
            match &bar {
                Some(b) => b.println(line),
                None => println!("{line}"),
            }
        }
        Ok(Display {
            engine,
            id,
            text,
            bar,
            after: 0,
            running: BTreeSet::new(),
            settled: 0,
        })
    }

    fn line(&self, s: String) {
        if !self.text {
            return;
        }
        match &self.bar {
            Some(b) => b.println(s),
            None => println!("{s}"),
        }
    }

    pub async fn run(mut self) {
        let mut rx = self.engine.subscribe();
        loop {
            let live = self.engine.is_running_here(&self.id);
            self.drain().await;
            if !live {
                break;
            }
            let wait = async {
                loop {
                    match rx.recv().await {
                        Ok(x) if x == self.id => return,
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(300), wait).await;
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    async fn drain(&mut self) {
        let Ok(events) = self
            .engine
            .store()
            .events_after(&self.id, self.after, 1000)
            .await
        else {
            return;
        };
        for ev in events {
            self.after = ev.id;
            self.show(&ev).await;
        }
        if let Some(b) = &self.bar {
            b.set_position(self.settled);
            let names: Vec<&str> = self.running.iter().map(String::as_str).take(4).collect();
            let more = self.running.len().saturating_sub(names.len());
            let msg = if names.is_empty() {
                String::new()
            } else if more > 0 {
                format!("running: {} +{more}", names.join(", "))
            } else {
                format!("running: {}", names.join(", "))
            };
            b.set_message(msg);
        }
    }

    async fn show(&mut self, ev: &EventRecord) {
        match ev.kind.as_str() {
            "step" => {
                let Some(key) = ev.step.clone() else { return };
                let state = ev.state.clone().unwrap_or_default();
                if state == "running" {
                    self.running.insert(key);
                    return;
                }
                self.running.remove(&key);
                let msg = ev.message.clone().unwrap_or_default();
                match state.as_str() {
                    "completed" => {
                        self.settled += 1;
                        let detail = self.step_detail(&key).await;
                        self.line(format!("  ✓ {key:<24} {detail}"));
                    }
                    "failed" => {
                        self.settled += 1;
                        self.line(format!("  ✗ {key:<24} failed: {msg}"));
                    }
                    "skipped" => {
                        self.settled += 1;
                        self.line(format!("  – {key:<24} skipped: {msg}"));
                    }
                    "cancelled" => {
                        self.settled += 1;
                        self.line(format!("  ■ {key:<24} cancelled: {msg}"));
                    }
                    "waiting-retry" => self.line(format!("  ↻ {key:<24} {msg}")),
                    "pending" => {
                        // Reset by a resume or restore.
                        self.settled = self.settled.saturating_sub(1);
                    }
                    _ => {}
                }
            }
            "execution" => {
                let state = ev.state.clone().unwrap_or_default();
                if state != "running" || ev.message.is_some() {
                    let msg = ev
                        .message
                        .clone()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    self.line(format!("● execution {state}{msg}"));
                }
            }
            "log" => {
                if let Some(m) = &ev.message {
                    self.line(format!("  · {m}"));
                }
            }
            _ => {}
        }
    }

    async fn step_detail(&self, key: &str) -> String {
        let steps = self
            .engine
            .store()
            .execution_steps(&self.id, false)
            .await
            .unwrap_or_default();
        let Some(s) = steps.into_iter().find(|s| s.key == key) else {
            return String::new();
        };
        step_summary(&s)
    }
}

fn step_summary(s: &StepRecord) -> String {
    let mut parts = Vec::new();
    if let (Some(a), Some(b)) = (s.started_at, s.finished_at) {
        parts.push(format_duration(b.saturating_sub(a)));
    }
    match (&s.provider, &s.model) {
        (Some(p), Some(m)) => parts.push(format!("{p}/{m}")),
        (Some(p), None) => parts.push(p.clone()),
        _ => {}
    }
    if s.tokens_in + s.tokens_out > 0 {
        parts.push(format!("{}→{} tok", s.tokens_in, s.tokens_out));
    }
    if let Some(c) = s.cost_usd.filter(|c| *c > 0.0) {
        parts.push(format!("${c:.4}"));
    }
    if s.attempts > 1 {
        parts.push(format!("{} attempts", s.attempts));
    }
    parts.join("  ")
}

pub fn format_duration(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

pub fn format_bytes(b: u64) -> String {
    if b < 1024 {
        format!("{b} B")
    } else if b < 1024 * 1024 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    }
}

/// UTC `YYYY-MM-DD HH:MM:SSZ`.
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

pub fn print_status(rec: &ExecutionRecord, steps: &[StepRecord]) {
    println!("execution {}  ({})", rec.id, rec.workflow);
    let reason = rec
        .reason
        .as_deref()
        .map(|r| format!(" — {r}"))
        .unwrap_or_default();
    println!("state     {}{reason}", rec.state);
    println!("created   {}", format_time(rec.created_at));
    if let Some(s) = rec.started_at {
        let dur = rec
            .finished_at
            .unwrap_or_else(store::now_ms)
            .saturating_sub(s);
        println!(
            "running   {} ({})",
            format_duration(dur),
            if rec.finished_at.is_some() {
                "finished"
            } else {
                "so far"
            }
        );
    }
    if let Some(o) = &rec.owner {
        println!("driven by {o}");
    }
    println!(
        "progress  {}/{} completed, {} failed, {} skipped, {} running",
        rec.progress.completed,
        rec.progress.total,
        rec.progress.failed,
        rec.progress.skipped,
        rec.progress.running
    );
    println!();
    for s in steps {
        let mark = match s.state.as_str() {
            "completed" => "✓",
            "failed" => "✗",
            "skipped" => "–",
            "cancelled" => "■",
            "running" => "▶",
            "waiting-retry" => "↻",
            _ => "·",
        };
        let extra = match s.state.as_str() {
            "completed" => step_summary(s),
            "failed" | "waiting-retry" => s.error.clone().unwrap_or_default(),
            _ => s.reason.clone().unwrap_or_default(),
        };
        println!("  {mark} {:<24} {:<13} {}", s.key, s.state, extra);
    }
}

pub fn print_summary(rec: &ExecutionRecord, steps: &[StepRecord]) {
    let tokens_in: u64 = steps.iter().map(|s| s.tokens_in).sum();
    let tokens_out: u64 = steps.iter().map(|s| s.tokens_out).sum();
    let cost: f64 = steps.iter().filter_map(|s| s.cost_usd).sum();
    let dur = rec
        .started_at
        .map(|s| {
            rec.finished_at
                .unwrap_or_else(store::now_ms)
                .saturating_sub(s)
        })
        .unwrap_or(0);
    let reason = rec
        .reason
        .as_deref()
        .map(|r| format!(" — {r}"))
        .unwrap_or_default();
    println!(
        "{} {} in {}: {}/{} steps completed, {} failed, {} skipped; {}→{} tokens{}{reason}",
        rec.id,
        rec.state,
        format_duration(dur),
        rec.progress.completed,
        rec.progress.total,
        rec.progress.failed,
        rec.progress.skipped,
        tokens_in,
        tokens_out,
        if cost > 0.0 {
            format!(", ${cost:.4}")
        } else {
            String::new()
        }
    );
}

pub async fn print_events(engine: &Engine, id: &str, follow: bool, json: bool) -> Result<i32> {
    let mut after = 0;
    let mut rx = engine.subscribe();
    loop {
        let events = engine.store().events_after(id, after, 1000).await?;
        for ev in &events {
            after = ev.id;
            if json {
                println!("{}", serde_json::to_string(ev)?);
            } else {
                let what = match (&ev.step, &ev.state) {
                    (Some(s), Some(st)) => format!("step {s} {st}"),
                    (None, Some(st)) => format!("{} {st}", ev.kind),
                    _ => ev.kind.clone(),
                };
                let msg = ev
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                println!("{:>6}  {}  {what}{msg}", ev.id, format_time(ev.at));
            }
        }
        if !follow {
            return Ok(0);
        }
        let rec = engine.execution(id).await.map_err(|e| anyhow::anyhow!(e))?;
        if rec.state().is_terminal() && events.is_empty() {
            return Ok(0);
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    }
}
