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
                        decision(&key, &s),
                        items(&s),
                        attempts(&s),
                        live_box(
                            s.live
                                .as_ref()
                                .filter(|_| s.state == StepState::Running)
                                .map(|l| l.tail()),
                        ),
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
        _ if s.cached() => "cache (cached answer: no call, cost $0)".into(),
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

/// An approval step: its request and, while it waits, Approve and Reject with
/// an optional comment (a dry run's executor or the server decides).
fn decision(key: &str, s: &StepView) -> AnyView {
    let Some(request) = s.request.clone() else {
        return nothing();
    };
    if s.state != StepState::Waiting {
        return io_section("Request", "decision-request", Some(request), false);
    }
    let runs = use_runs();
    let comment = std::rc::Rc::new(std::cell::RefCell::new(String::new()));
    let button = |approve: bool| {
        let (key, comment) = (key.to_owned(), comment.clone());
        elc("BUTTON", if approve { "primary" } else { "danger" })
            .attr("type", "button")
            .attr("data-testid", if approve { "approve" } else { "reject" })
            .on_click(move |_| {
                let c = comment.borrow().trim().to_owned();
                runs.decide(key.clone(), approve, (!c.is_empty()).then_some(c));
            })
            .text(if approve { "Approve" } else { "Reject" })
    };
    let typed = comment.clone();
    elc("SECTION", "decision")
        .attr("data-testid", "decision")
        .attr("aria-label", "Waiting for a decision")
        .child(el("H4").text("Waiting for a decision"))
        .child(
            elc("PRE", "io")
                .attr("data-testid", "decision-request")
                .string(request),
        )
        .child(
            elc("LABEL", "stack").text("Comment (optional)").child(
                el("TEXTAREA")
                    .attr("rows", "2")
                    .attr("data-testid", "decision-comment")
                    .on(leptos::ev::change, move |e| {
                        let t: web_sys::HtmlTextAreaElement = crate::ui::toolbar::event_target(&e);
                        *typed.borrow_mut() = t.value();
                    }),
            ),
        )
        .child(elc("DIV", "row").child(button(true)).child(button(false)))
        .into_any()
}

/// A forEach step: its progress and each item's result (or error).
fn items(s: &StepView) -> AnyView {
    let Some(i) = &s.items else {
        return nothing();
    };
    let mut list = elc("OL", "items")
        .attr("data-testid", "step-items")
        .attr("start", "0");
    for (n, (state, text)) in s.item_rows().into_iter().enumerate() {
        list = list.child(
            el("LI")
                .attr_string("data-item", n.to_string())
                .attr("data-state", state.as_str())
                .child(el("SPAN").attr_string("class", format!("dot state-{}", state.as_str())))
                .text(" ")
                .child(elc("PRE", "io small").string(text)),
        );
    }
    fragment(vec![
        el("H4")
            .attr("data-testid", "step-items-progress")
            .string(format!("Items: {} of {} done", i.completed, i.total))
            .into_any(),
        list.into_any(),
    ])
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
    // An approval has no provider attempts (a server counts its wait as one).
    if s.attempts.is_empty() || s.request.is_some() {
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

/// A running attempt's latest lines as they stream in: a small monospace box,
/// not announced to screen readers (it changes many times a second).
fn live_box(tail: Option<String>) -> AnyView {
    match tail.filter(|t| !t.is_empty()) {
        None => nothing(),
        Some(t) => elc("PRE", "io live")
            .attr("data-testid", "live-text")
            .attr("aria-live", "off")
            .attr("aria-label", "Answer so far")
            .string(t)
            .into_any(),
    }
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
                                s.cached(),
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
                        .map(|(key, state, ms, tokens, attempt, cached)| {
                            let id = format!(
                                "{key}\u{0}{state:?}\u{0}{ms:?}\u{0}{tokens}\u{0}{attempt}\u{0}{cached}"
                            );
                            let facts = Facts { state, ms, tokens, attempt, cached };
                            Keyed::new(id, move || step_row(d, key, facts))
                        })
                        .collect()
                })),
        )
        .into_any()
}

/// What a step row shows besides its key.
#[derive(Clone, Copy)]
struct Facts {
    state: StepState,
    ms: Option<u64>,
    tokens: u64,
    attempt: u32,
    cached: bool,
}

fn step_row(d: crate::editing::Editor, key: String, f: Facts) -> AnyView {
    let Facts {
        state,
        ms,
        tokens,
        attempt,
        cached,
    } = f;
    let k = key.clone();
    let k2 = key.clone();
    let k3 = key.clone();
    let runs = use_runs();
    let live = move || {
        runs.run.with(|r| {
            let s = r.as_ref().and_then(|r| r.step(&k3))?;
            let l = s.live.as_ref().filter(|_| s.state == StepState::Running)?;
            Some(l.tail())
        })
    };
    let k4 = key.clone();
    let waiting = move || {
        runs.run.with(|r| {
            let s = r.as_ref().and_then(|r| r.step(&k4))?;
            let w = s
                .waiting_for
                .as_ref()
                .filter(|_| s.state == StepState::Running)?;
            Some(format!("waiting for {w}"))
        })
    };
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
                .child(elc("SPAN", "muted small").string(facts.join(" · ")))
                .view(opt(cached.then(|| {
                    elc("SPAN", "badge cached")
                        .attr("data-testid", "cached")
                        .attr(
                            "title",
                            "Answered from the response cache: no call, cost $0",
                        )
                        .text("cached")
                })))
                // Empty unless the running attempt waits for a provider's capacity.
                .child(
                    elc("SPAN", "muted small")
                        .attr("data-testid", "step-waiting")
                        .text_dyn(move || waiting().unwrap_or_default()),
                ),
        )
        // Empty (hidden) unless the step is running and text has arrived.
        .child(
            elc("PRE", "io live")
                .attr("data-testid", "live-text")
                .attr("aria-live", "off")
                .text_dyn(move || live().unwrap_or_default()),
        );
    row.into_any()
}
