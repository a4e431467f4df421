//! The run on the graph: its name, state, progress and totals, and its controls.

use super::resume_blocked;
use crate::run_view::{RunKind, budget_hint};
use crate::runs::use_runs;
use crate::ui::dom::{el, elc, fragment, nothing, opt, show};
use crate::ui::{dollars, duration};
use ax_core::ExecutionState;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

pub(super) fn run_head() -> AnyView {
    let runs = use_runs();
    let state = move || runs.run.with(|r| r.as_ref().map(|r| r.state));
    let kind = move || runs.run.with(|r| r.as_ref().map(|r| r.kind));
    let state_name = move || state().map_or("idle", |s| s.as_str());
    let progress = move || {
        runs.run.with(|r| {
            r.as_ref().map(|r| {
                let done = r.steps.iter().filter(|(_, s)| s.state.is_settled()).count();
                (r.completed(), done, r.steps.len().max(1))
            })
        })
    };
    let totals = move || {
        runs.run.with(|r| {
            r.as_ref()
                .map(|r| {
                    let u = r.usage();
                    let mut parts = Vec::new();
                    if let Some(ms) = r.millis() {
                        parts.push(duration(ms));
                    }
                    if let Some(spend) = r.spend {
                        parts.push(spend.text());
                        return parts.join(" · ");
                    }
                    let tokens = u.tokens_in + u.tokens_out;
                    if tokens > 0 {
                        parts.push(format!(
                            "{}{tokens} tokens",
                            if u.estimated { "≈ " } else { "" }
                        ));
                    }
                    parts.push(match (u.cost_usd, r.kind) {
                        (Some(c), _) => dollars(c),
                        (None, RunKind::Local) => "no cost (simulated)".into(),
                        (None, RunKind::Server) => "cost not reported".into(),
                    });
                    parts.join(" · ")
                })
                .unwrap_or_default()
        })
    };
    fragment(vec![
        elc("DIV", "run-head")
            .child(el("STRONG").text_dyn(move || {
                runs.run
                    .with(|r| r.as_ref().map(|r| r.name.clone()).unwrap_or_default())
            }))
            .child(elc("SPAN", "muted small").str_dyn(move || match kind() {
                Some(RunKind::Server) => " on the server",
                _ => " in this browser",
            }))
            .child(
                el("SPAN")
                    .attr_dyn("class", move || format!("badge state-{}", state_name()))
                    .attr("data-testid", "run-state")
                    .str_dyn(state_name),
            )
            .into_any(),
        elc("DIV", "progress")
            .attr("aria-hidden", "true")
            .child(elc("DIV", "bar").style_dyn("width", move || {
                progress().map_or("0%".to_owned(), |(_, done, n)| {
                    format!("{}%", crate::text::fixed(100.0 * done as f64 / n as f64, 0))
                })
            }))
            .into_any(),
        elc("P", "small")
            .attr("data-testid", "run-progress")
            .attr("role", "status")
            .text_dyn(move || {
                progress()
                    .map(|(c, done, n)| format!("{c} of {n} steps completed, {done} settled"))
                    .unwrap_or_default()
            })
            .view_dyn(move || {
                opt(runs
                    .run
                    .with(|r| r.as_ref().and_then(|r| r.reason.clone()))
                    .map(|r| elc("SPAN", "muted").text(" — ").string(r)))
            })
            .into_any(),
        elc("P", "small totals")
            .attr("data-testid", "run-totals")
            .text_dyn(totals)
            .into_any(),
        // A run paused at its budget: the page has no budget field, so say how.
        elc("P", "small hint")
            .attr("data-testid", "budget-hint")
            .text_dyn(move || {
                runs.run
                    .with(|r| {
                        r.as_ref()
                            .and_then(|r| budget_hint(r.reason.as_deref(), &r.id))
                    })
                    .unwrap_or_default()
            })
            .into_any(),
    ])
}

pub(super) fn run_controls() -> AnyView {
    let runs = use_runs();
    let state = move || runs.run.with(|r| r.as_ref().map(|r| r.state));
    let kind = move || runs.run.with(|r| r.as_ref().map(|r| r.kind));
    let can_pause = move || {
        matches!(
            state(),
            Some(ExecutionState::Running | ExecutionState::Waiting)
        )
    };
    let can_cancel = move || state().is_some_and(|s| !s.is_terminal());
    elc("DIV", "row wrap controls")
        .attr("role", "group")
        .attr("aria-label", "Run controls")
        .child(
            el("BUTTON")
                .attr("data-testid", "pause")
                .on_click(move |_| runs.pause())
                .flag_dyn("disabled", move || !can_pause())
                .text("Pause"),
        )
        .child(
            elc("BUTTON", "primary")
                .attr("data-testid", "resume")
                .on_click(move |_| runs.resume())
                .flag_dyn("disabled", move || resume_blocked(state()).is_some())
                .attr_str_dyn("title", move || {
                    resume_blocked(state()).unwrap_or("Resume the run from where it stopped")
                })
                .text("Resume"),
        )
        .child(
            elc("BUTTON", "danger")
                .attr("data-testid", "cancel")
                .on_click(move |_| runs.cancel())
                .flag_dyn("disabled", move || !can_cancel())
                .text("Cancel"),
        )
        .child(
            el("BUTTON")
                .attr("data-testid", "export-checkpoint")
                .on_click(move |_| runs.export_checkpoint())
                .attr(
                    "title",
                    "Download the run as a checkpoint file (ax can import and continue it)",
                )
                .text("Export checkpoint"),
        )
        .view(show(
            move || runs.server_connected() && kind() == Some(RunKind::Local),
            move || {
                el("BUTTON")
                    .attr("data-testid", "send-to-server")
                    .on_click(move |_| runs.send_to_server())
                    .attr(
                        "title",
                        "Continue this run on the server with real providers",
                    )
                    .text("Continue on server")
                    .into_any()
            },
            nothing,
        ))
        .into_any()
}
