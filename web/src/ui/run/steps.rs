//! The steps of the run on the graph: a list (state, time, tokens), and the
//! selected step's details: rendered prompt, output (pretty JSON when it is
//! JSON), tokens, cost, time, and every attempt with its error.
//!
//! `step_detail` is a list of sections; a new kind of step adds its own there
//! (an approval's decision buttons, a forEach's items, text streaming in).

use super::figure;
use crate::editing::use_editor;
use crate::run_view::{AttemptView, Outcome, RunKind, StepView};
use crate::runs::use_runs;
use crate::ui::dom::{El, Keyed, el, elc, fragment, keyed, nothing, opt, show};
use crate::ui::{dollars, duration, use_shell};
use ax_core::StepState;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

/// The step shown in detail: the selected one, if the run has it.
fn shown_step() -> Memo<Option<(String, StepView, RunKind)>> {
    let d = use_editor();
    let runs = use_runs();
    Memo::new(move |_| {
        let key = d.selected.get()?;
        runs.run.with(|r| {
            let r = r.as_ref()?;
            r.step(&key).map(|s| (key.clone(), s.clone(), r.kind))
        })
    })
}

pub(super) fn step_detail() -> AnyView {
    let shown = shown_step();
    show(
        move || shown.with(Option::is_some),
        move || {
            elc("SECTION", "step-detail")
                .attr("data-testid", "step-detail")
                .attr("aria-label", "The selected step in this run")
                .view_dyn(move || match shown.get() {
                    Some((key, s, kind)) => fragment(vec![
                        detail_head(&key, &s),
                        detail_figures(&s, kind),
                        attempts(&s),
                        io_section("Prompt", "step-prompt", s.prompt.clone(), false),
                        io_section("Output", "step-output", s.output_text(), s.is_json()),
                        opt(s.error.clone().map(|e| {
                            elc("P", "error-text")
                                .attr("data-testid", "step-error")
                                .string(e)
                        })),
                        opt(s.reason.clone().map(|r| elc("P", "muted small").string(r))),
                    ]),
                    None => nothing(),
                })
                .into_any()
        },
        || {
            elc("P", "muted small hint-line")
                .text("Select a step in the graph to see its prompt, output and attempts here.")
                .into_any()
        },
    )
}

fn detail_head(key: &str, s: &StepView) -> AnyView {
    let d = use_editor();
    let shell = use_shell();
    elc("DIV", "detail-head")
        .child(el("H3").child(el("CODE").string(key.to_owned())))
        .child(
            el("SPAN")
                .attr_string("class", format!("badge state-{}", s.state.as_str()))
                .string(s.state.as_str().replace('-', " ")),
        )
        .child(
            elc("BUTTON", "link")
                .attr("type", "button")
                .attr("data-testid", "edit-step")
                .on_click(move |_| {
                    let _ = d.selected.get_untracked();
                    shell.panel.set(crate::ui::Panel::Step);
                })
                .text("Edit step"),
        )
        .into_any()
}

fn detail_figures(s: &StepView, kind: RunKind) -> AnyView {
    let u = s.usage;
    let approx = if u.estimated { "≈ " } else { "" };
    let cost = match (u.cost_usd, kind) {
        (Some(c), _) => dollars(c),
        (None, RunKind::Local) => "none (simulated)".into(),
        (None, RunKind::Server) => "not reported".into(),
    };
    let who = match (&s.provider, &s.model) {
        (Some(p), Some(m)) => format!("{p} · {m}"),
        (Some(p), None) => p.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => "—".into(),
    };
    elc("DL", "figures")
        .attr("data-testid", "step-figures")
        .child(figure(
            "Time",
            s.latency_ms.map_or_else(|| "—".into(), duration),
        ))
        .child(figure(
            "Tokens in / out",
            format!("{approx}{} / {approx}{}", u.tokens_in, u.tokens_out),
        ))
        .child(figure("Cost", cost))
        .child(figure("Attempts", s.attempt.to_string()))
        .child(figure("Provider", who))
        .into_any()
}

fn outcome_text(a: &AttemptView) -> (&'static str, String) {
    match &a.outcome {
        Outcome::Running => ("running", "running".into()),
        Outcome::Succeeded => ("completed", "succeeded".into()),
        Outcome::Failed { class, message } if class.is_empty() => ("failed", message.clone()),
        Outcome::Failed { class, message } => ("failed", format!("{class}: {message}")),
        Outcome::Aborted(why) => ("cancelled", format!("stopped: {why}")),
    }
}

fn attempts(s: &StepView) -> AnyView {
    if s.attempts.is_empty() {
        return nothing();
    }
    let rows: Vec<AnyView> = s
        .attempts
        .iter()
        .map(|a| {
            let (state, text) = outcome_text(a);
            el("TR")
                .attr_string("data-attempt", a.attempt.to_string())
                .child(el("TD").string(format!("#{}", a.attempt)))
                .child(el("TD").string(a.millis().map_or_else(|| "—".into(), duration)))
                .child(
                    el("TD")
                        .child(el("SPAN").attr_string("class", format!("dot state-{state}")))
                        .text(" ")
                        .string(text),
                )
                .into_any()
        })
        .collect();
    let mut body = el("TBODY");
    for r in rows {
        body = body.view(r);
    }
    elc("TABLE", "attempts")
        .attr("data-testid", "step-attempts")
        .child(el("CAPTION").text("Attempts"))
        .child(
            el("THEAD").child(
                el("TR")
                    .child(el("TH").attr("scope", "col").text("Attempt"))
                    .child(el("TH").attr("scope", "col").text("Time"))
                    .child(el("TH").attr("scope", "col").text("Outcome")),
            ),
        )
        .child(body)
        .into_any()
}

fn io_section(
    title: &'static str,
    testid: &'static str,
    text: Option<String>,
    json: bool,
) -> AnyView {
    match text {
        None => nothing(),
        Some(t) => fragment(vec![
            el("H4")
                .text(title)
                .child_opt(json.then(|| elc("SPAN", "tag").text("JSON")))
                .into_any(),
            elc("PRE", "io")
                .attr("data-testid", testid)
                .attr("tabindex", "0")
                .attr_string("aria-label", title.to_owned())
                .string(t)
                .into_any(),
        ]),
    }
}

pub(super) fn steps_list() -> AnyView {
    let d = use_editor();
    let runs = use_runs();
    let steps = Memo::new(move |_| {
        runs.run.with(|r| {
            r.as_ref()
                .map(|r| {
                    r.steps
                        .iter()
                        .filter(|(_, s)| s.state != StepState::Pending)
                        .map(|(k, s)| {
                            (
                                k.clone(),
                                s.state,
                                s.latency_ms,
                                s.usage.tokens_in + s.usage.tokens_out,
                                s.attempt,
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
    });
    elc("DETAILS", "run-steps")
        .attr("open", "")
        .child(el("SUMMARY").text_dyn(move || format!("Steps ({})", steps.with(Vec::len))))
        .child(
            elc("UL", "step-rows")
                .attr("data-testid", "run-steps")
                .view(keyed(move || {
                    steps
                        .get()
                        .into_iter()
                        .map(|(key, state, ms, tokens, attempt)| {
                            let id = format!(
                                "{key}\u{0}{state:?}\u{0}{ms:?}\u{0}{tokens}\u{0}{attempt}"
                            );
                            Keyed::new(id, move || step_row(d, key, state, ms, tokens, attempt))
                        })
                        .collect()
                })),
        )
        .into_any()
}

fn step_row(
    d: crate::editing::Editor,
    key: String,
    state: StepState,
    ms: Option<u64>,
    tokens: u64,
    attempt: u32,
) -> AnyView {
    let k = key.clone();
    let k2 = key.clone();
    let mut facts = vec![state.as_str().replace('-', " ")];
    if let Some(ms) = ms {
        facts.push(duration(ms));
    }
    if tokens > 0 {
        facts.push(format!("{tokens} tokens"));
    }
    if attempt > 1 {
        facts.push(format!("{attempt} attempts"));
    }
    let row: El = el("LI")
        .attr_string("data-step", key.clone())
        .attr("data-state", state.as_str())
        .class_dyn("current", move || {
            d.selected.with(|s| s.as_deref() == Some(k2.as_str()))
        })
        .child(
            elc("BUTTON", "step-row")
                .attr("type", "button")
                .attr_str_dyn("aria-current", {
                    let k = key.clone();
                    move || {
                        if d.selected.with(|s| s.as_deref() == Some(k.as_str())) {
                            "true"
                        } else {
                            "false"
                        }
                    }
                })
                .on_click(move |_| d.selected.set(Some(k.clone())))
                .child(el("SPAN").attr_string("class", format!("dot state-{}", state.as_str())))
                .child(elc("SPAN", "key").string(key))
                .child(elc("SPAN", "muted small").string(facts.join(" · "))),
        );
    row.into_any()
}
