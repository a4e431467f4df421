//! Terminal output: live progress of a run, status tables, events.

use crate::engine::{Engine, StepDelta};
pub use crate::store::format_time;
use crate::store::{self, EventRecord, ExecutionRecord, StepRecord};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// The running steps' text, as providers stream it.
pub type Deltas = broadcast::Receiver<Arc<StepDelta>>;

/// The text to show, if any: all of it with `--stream`, the last line in the
/// progress bar of a terminal; none in JSON output or when not on a terminal.
pub fn deltas_for(engine: &Engine, text: bool, stream: bool) -> Option<Deltas> {
    (text && (stream || std::io::stderr().is_terminal())).then(|| engine.subscribe_deltas())
}

/// Live progress of one execution: a bar (in a terminal) and one line per
/// settled step with its duration, provider, tokens and cost. With `stream`,
/// no bar: the running steps' text is printed whole as it arrives, under a
/// `┌ KEY` line whenever the speaking step changes; else the bar shows the
/// last line of the step that spoke last.
pub struct Display {
    engine: Arc<Engine>,
    id: String,
    text: bool,
    bar: Option<ProgressBar>,
    after: i64,
    running: BTreeSet<String>,
    settled: u64,
    deltas: Option<Deltas>,
    stream: bool,
    /// `--stream`: the step whose text was printed last (none after a line of
    /// our own), and whether its text stopped mid-line.
    speaker: Option<String>,
    mid_line: bool,
    /// The bar: each running step's last line (its end that fits), and the
    /// step that spoke last.
    said: HashMap<String, LastLine>,
    last_speaker: Option<String>,
    width: usize,
    /// Running steps whose attempt waits before its call, and for what
    /// (`capacity of provider NAME`).
    waits: HashMap<String, String>,
}

/// The last line of a step's text, at most `cap` characters (its end).
#[derive(Default)]
struct LastLine {
    line: String,
    ended: bool,
}

impl LastLine {
    fn push(&mut self, text: &str, cap: usize) {
        for (i, seg) in text.split('\n').enumerate() {
            if i > 0 {
                self.ended = true;
            }
            if seg.trim().is_empty() && self.ended {
                continue;
            }
            if self.ended {
                self.line.clear();
                self.ended = false;
            }
            self.line.push_str(seg);
        }
        let n = self.line.chars().count();
        if n > cap {
            let cut = self.line.char_indices().nth(n - cap).map_or(0, |(i, _)| i);
            self.line.drain(..cut);
        }
    }
}

impl Display {
    pub async fn new(
        engine: Arc<Engine>,
        id: String,
        text: bool,
        stream: bool,
        deltas: Option<Deltas>,
    ) -> Result<Display> {
        let rec = engine
            .execution(&id)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let bar = (std::io::stderr().is_terminal() && text && !stream).then(|| {
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
            deltas: if text { deltas } else { None },
            stream,
            speaker: None,
            mid_line: false,
            said: HashMap::new(),
            last_speaker: None,
            width: usize::from(console::Term::stderr().size().1),
            waits: HashMap::new(),
        })
    }

    fn line(&mut self, s: String) {
        if !self.text {
            return;
        }
        self.end_text();
        match &self.bar {
            Some(b) => b.println(s),
            None => println!("{s}"),
        }
    }

    pub async fn run(mut self) {
        let mut rx = self.engine.subscribe();
        loop {
            let live = self.engine.is_running_here(&self.id);
            // Once the run has stopped here, show everything it left.
            while self.drain().await && !live {}
            if !live {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(300), self.wait(&mut rx)).await;
        }
        self.end_text();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    /// Until this execution has new events, showing its text as it arrives.
    async fn wait(&mut self, rx: &mut broadcast::Receiver<String>) {
        use broadcast::error::RecvError;
        loop {
            let (id, slot) = (&self.id, &mut self.deltas);
            let deltas = async move {
                match slot.as_mut() {
                    Some(d) => d.recv().await,
                    None => std::future::pending().await,
                }
            };
            let delta = tokio::select! {
                // Text first: it precedes the events it is announced with.
                biased;
                d = deltas => d,
                note = rx.recv() => match note {
                    Ok(x) if x != *id => continue,
                    _ => return,
                },
            };
            match delta {
                Ok(d) => self.delta(&d),
                Err(RecvError::Lagged(_)) => self.lost(),
                Err(RecvError::Closed) => self.deltas = None,
            }
        }
    }

    /// Show the text already received: called after reading events, so that a
    /// step's text always comes before its completion.
    fn take_deltas(&mut self) {
        use broadcast::error::TryRecvError;
        while let Some(rx) = self.deltas.as_mut() {
            match rx.try_recv() {
                Ok(d) => self.delta(&d),
                Err(TryRecvError::Lagged(_)) => self.lost(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    fn delta(&mut self, d: &StepDelta) {
        if d.execution != self.id {
            return;
        }
        if let Some(what) = d.waiting_for() {
            self.waiting(&d.step, what);
            return;
        }
        if self.stream {
            self.print_text(d);
            return;
        }
        let Some(bar) = &self.bar else { return };
        let said = self.said.entry(d.step.clone()).or_default();
        if d.offset == 0 {
            *said = LastLine::default();
        }
        said.push(&d.text, self.width.max(40));
        self.last_speaker = Some(d.step.clone());
        bar.set_message(self.message());
    }

    /// A step's attempt starts waiting before its call (`Some`), or its wait
    /// is over: a line with `--stream`, else the bar's message says so.
    fn waiting(&mut self, key: &str, what: Option<&str>) {
        match what {
            Some(what) => {
                if self.stream {
                    self.line(format!("  ⏳ {key:<24} waiting for {what}"));
                }
                self.waits.insert(key.to_owned(), what.to_owned());
            }
            None => {
                self.waits.remove(key);
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_message(self.message());
        }
    }

    /// `--stream`: the text as it is, under the name of the step that speaks.
    fn print_text(&mut self, d: &StepDelta) {
        let mut out = std::io::stdout().lock();
        if self.speaker.as_deref() != Some(d.step.as_str()) || d.offset == 0 {
            if self.mid_line {
                let _ = writeln!(out);
            }
            let again = if d.attempt > 1 {
                format!(" (attempt {})", d.attempt)
            } else {
                String::new()
            };
            let _ = writeln!(out, "  ┌ {}{again}", d.step);
            self.speaker = Some(d.step.clone());
            self.mid_line = false;
        }
        let _ = out.write_all(d.text.as_bytes());
        let _ = out.flush();
        if !d.text.is_empty() {
            self.mid_line = !d.text.ends_with('\n');
        }
    }

    /// Some text was not received (this process fell behind): say so where
    /// the text is printed; the stored output stays whole.
    fn lost(&mut self) {
        if self.stream {
            self.line("  … some streamed text was missed here (the output is stored whole)".into());
        }
    }

    /// End printed text with a line break before a line of our own.
    fn end_text(&mut self) {
        if self.mid_line {
            println!();
            self.mid_line = false;
        }
        self.speaker = None;
    }

    /// The bar's message: the running steps, or the last line of the one that
    /// spoke last, its end fitting the terminal.
    fn message(&self) -> String {
        let names: Vec<String> = self
            .running
            .iter()
            .take(4)
            .map(|k| match self.waits.get(k) {
                Some(what) => format!("⏳ {k} waiting for {what}"),
                None => k.clone(),
            })
            .collect();
        let spoke = self
            .last_speaker
            .as_ref()
            .filter(|k| self.running.contains(*k))
            .and_then(|k| Some((k, self.said.get(k)?)))
            .filter(|(_, s)| !s.line.trim().is_empty());
        if let Some((key, said)) = spoke {
            let others = match self.running.len() {
                0 | 1 => String::new(),
                n => format!("(+{} running) ", n - 1),
            };
            // What the bar's other parts leave of the terminal's width.
            let room = self
                .width
                .saturating_sub(64 + others.len() + key.chars().count())
                .max(10);
            let n = said.line.chars().count();
            let tail: String = said.line.chars().skip(n.saturating_sub(room)).collect();
            return format!("{others}{key} › {}", tail.trim_start());
        }
        let more = self.running.len().saturating_sub(names.len());
        if names.is_empty() {
            String::new()
        } else if more > 0 {
            format!("running: {} +{more}", names.join(", "))
        } else {
            format!("running: {}", names.join(", "))
        }
    }

    /// Show the events not shown yet (a page of them); whether there may be more.
    async fn drain(&mut self) -> bool {
        const PAGE: u32 = 1000;
        let Ok(events) = self
            .engine
            .store()
            .events_after(&self.id, self.after, PAGE)
            .await
        else {
            return false;
        };
        let more = events.len() >= PAGE as usize;
        self.take_deltas();
        for ev in events {
            self.after = ev.id;
            self.show(&ev).await;
        }
        if let Some(b) = &self.bar {
            b.set_position(self.settled);
            b.set_message(self.message());
        }
        more
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
                self.said.remove(&key);
                self.waits.remove(&key);
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
                    "waiting" => {
                        let id = ev.execution_id.clone();
                        self.line(format!("  ? {key:<24} waits for a decision:"));
                        for l in msg.lines() {
                            self.line(format!("      {l}"));
                        }
                        self.line(format!(
                            "      approve: {ax} workflow approve {id} {key} [--comment TEXT] [--data JSON]",
                            ax = super::follow::ax()
                        ));
                        self.line(format!(
                            "      reject:  {ax} workflow reject {id} {key} --comment TEXT",
                            ax = super::follow::ax()
                        ));
                    }
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

    /// The line of a completed step: one lookup of that step by its key, so
    /// each event costs the same however many steps the run has.
    async fn step_detail(&self, key: &str) -> String {
        if !self.text {
            return String::new();
        }
        match self.engine.store().execution_step(&self.id, key).await {
            Ok(Some(s)) => step_summary(&s),
            _ => String::new(),
        }
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

/// A step's own model settings, as `  [model m, temperature 0.2, …]`.
fn settings_note(s: &ax_core::ModelSettings) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &s.model {
        parts.push(format!("model {m}"));
    }
    if let Some(t) = s.temperature {
        parts.push(format!("temperature {t}"));
    }
    if let Some(m) = s.max_tokens {
        parts.push(format!("maxTokens {m}"));
    }
    if s.system.is_some() {
        parts.push("own system prompt".to_owned());
    }
    format!("  [{}]", parts.join(", "))
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

/// `ax workflow status`; `theirs` is what the run's sub-workflows spent.
pub fn print_status(rec: &ExecutionRecord, steps: &[StepRecord], theirs: ax_core::exec::Spend) {
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
    let usd: f64 = steps.iter().filter_map(|s| s.cost_usd).sum();
    let tokens: u64 = steps.iter().map(|s| s.tokens_in + s.tokens_out).sum();
    let mut limits = Vec::new();
    if let Some(u) = rec.budget.usd {
        limits.push(format!("${u:.4}"));
    }
    if let Some(t) = rec.budget.tokens {
        limits.push(format!("{t} tokens"));
    }
    let of = if limits.is_empty() {
        String::new()
    } else {
        format!(" of the run's budget {}", limits.join(", "))
    };
    let children = if theirs.is_zero() {
        String::new()
    } else {
        format!(
            " (its sub-workflows ${:.4}, {} tokens)",
            theirs.usd, theirs.tokens
        )
    };
    let (usd, tokens) = (usd + theirs.usd, tokens + theirs.tokens);
    println!("spent     ${usd:.4}, {tokens} tokens{children}{of}");
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
        let settings = s.settings.as_ref().map(settings_note).unwrap_or_default();
        println!("  {mark} {:<24} {:<13} {extra}{settings}", s.key, s.state);
    }
}

/// `ax workflow stats`: one block per workflow name.
pub fn print_stats(rows: &[store::WorkflowStats]) {
    if rows.is_empty() {
        println!("no workflows yet");
    }
    for w in rows {
        let states: Vec<String> = w.by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let opt_ms = |v: Option<u64>| v.map(format_duration).unwrap_or_else(|| "–".into());
        let versions = match w.workflow_ids.len() {
            1 => String::new(),
            n => format!("  ({n} stored versions)"),
        };
        println!("{}{versions}", w.name);
        println!(
            "  runs       {}{}",
            w.runs,
            if states.is_empty() {
                String::new()
            } else {
                format!(": {}", states.join(", "))
            }
        );
        println!(
            "  success    {}",
            w.success_rate
                .map(|r| format!("{r:.1}% of finished runs"))
                .unwrap_or_else(|| "– (no run finished)".into())
        );
        println!(
            "  duration   p50 {}  p95 {}  (completed runs)",
            opt_ms(w.p50_duration_ms),
            opt_ms(w.p95_duration_ms)
        );
        println!(
            "  tokens     {}→{}  cost ${:.4}",
            w.tokens_in, w.tokens_out, w.cost_usd
        );
        if let Some(t) = w.last_run_at {
            println!("  last run   {}", format_time(t));
        }
    }
}

/// The line that ends a foreground run; `theirs` is what its sub-workflows
/// spent (counted in, and said apart).
pub fn print_summary(rec: &ExecutionRecord, steps: &[StepRecord], theirs: ax_core::exec::Spend) {
    let tokens_in: u64 = steps.iter().map(|s| s.tokens_in).sum();
    let tokens_out: u64 = steps.iter().map(|s| s.tokens_out).sum();
    let cost: f64 = steps.iter().filter_map(|s| s.cost_usd).sum::<f64>() + theirs.usd;
    let children = if theirs.tokens > 0 {
        format!(" + {} in sub-workflows", theirs.tokens)
    } else {
        String::new()
    };
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
        "{} {} in {}: {}/{} steps completed, {} failed, {} skipped; {}→{} tokens{children}{}{reason}",
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

#[cfg(test)]
mod tests {
    use super::LastLine;

    /// The bar shows the last line with text, its newest end within the cap,
    /// however the pieces split the lines.
    #[test]
    fn last_line_follows_the_pieces() {
        let mut l = LastLine::default();
        l.push("Hello wor", 40);
        assert_eq!(l.line, "Hello wor");
        l.push("ld.\nSecond", 40);
        assert_eq!(l.line, "Second");
        l.push(" line\n", 40);
        l.push("  \n", 40);
        assert_eq!(l.line, "Second line");
        l.push("Third", 40);
        assert_eq!(l.line, "Third");
        l.push(" äöüß€", 4);
        assert_eq!(l.line, "öüß€");
    }
}
