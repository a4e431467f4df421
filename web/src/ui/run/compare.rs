//! Two runs compared step by step, in a dialog: the totals (time, tokens,
//! cost), then each step's state, time and cost in both runs, whether its
//! output changed, and the outputs side by side with a line diff.

use super::RunRef;
use crate::compare::{Change, Comparison, StepComparison, compare};
use crate::documents::use_storage;
use crate::local_run::LocalRun;
use crate::run_view::{RunKind, RunView, StepView};
use crate::runs::use_runs;
use crate::ui::dom::{El, ElRef, el, elc, fragment};
use crate::ui::{dollars, duration, use_shell};
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;
use wasm_bindgen::JsCast;

/// The loaded runs (or why they could not be loaded).
#[derive(Debug, Clone, PartialEq)]
enum Loaded {
    Loading,
    Ready(Box<(RunView, RunView)>),
    Failed(String),
}

pub fn compare_dialog() -> AnyView {
    let shell = use_shell();
    let storage = use_storage();
    let runs = use_runs();
    let loaded = RwSignal::new(Loaded::Loading);
    let dialog = ElRef::new();
    // Load both runs whenever a comparison is asked for.
    Effect::new(move |_| {
        let Some((a, b)) = shell.compare.get() else {
            if let Some(d) = dialog.get_untracked() {
                let d: web_sys::HtmlDialogElement = d.unchecked_into();
                if d.open() {
                    d.close();
                }
            }
            return;
        };
        loaded.set(Loaded::Loading);
        if let Some(d) = dialog.get_untracked() {
            let d: web_sys::HtmlDialogElement = d.unchecked_into();
            if !d.open() {
                let _ = d.show_modal();
            }
        }
        let store = storage.store.get_value();
        let api = runs.api.get_value();
        leptos::task::spawn_local(async move {
            let load = |r: RunRef| {
                let (store, api) = (store.clone(), api.clone());
                async move {
                    match r.kind {
                        RunKind::Server => api.run_view(&r.id).await,
                        RunKind::Local => {
                            let store = store.ok_or("browser storage is not available")?;
                            let record = store
                                .get_run(&r.id)
                                .await?
                                .ok_or_else(|| format!("{} is no longer stored", r.label))?;
                            LocalRun::stored_view(&store, &record).await
                        }
                    }
                }
            };
            let result = match (load(a.clone()).await, load(b.clone()).await) {
                (Ok(x), Ok(y)) => Loaded::Ready(Box::new((x, y))),
                (Err(e), _) => Loaded::Failed(format!("{}: {e}", a.label)),
                (_, Err(e)) => Loaded::Failed(format!("{}: {e}", b.label)),
            };
            loaded.try_set(result);
        });
    });
    let labels = move || {
        shell
            .compare
            .with(|c| c.as_ref().map(|(a, b)| (a.label.clone(), b.label.clone())))
            .unwrap_or_default()
    };
    elc("DIALOG", "compare")
        .node_ref(dialog)
        .attr("data-testid", "comparison")
        .attr("aria-labelledby", "compare-title")
        .on(ev::close, move |_| shell.compare.set(None))
        .child(
            elc("DIV", "dialog-head")
                .child(el("H2").attr("id", "compare-title").text("Compare runs"))
                .child(
                    el("BUTTON")
                        .attr("data-testid", "close-comparison")
                        .attr("autofocus", "")
                        .on_click(move |_| shell.compare.set(None))
                        .text("Close"),
                ),
        )
        .view_dyn(move || match loaded.get() {
            Loaded::Loading => elc("P", "muted").text("Loading both runs…").into_any(),
            Loaded::Failed(e) => elc("P", "error-text")
                .attr("role", "alert")
                .text("Could not load the runs: ")
                .string(e)
                .into_any(),
            Loaded::Ready(pair) => {
                let (a, b) = *pair;
                let (la, lb) = labels();
                comparison(&a, &b, la, lb)
            }
        })
        .into_any()
}

fn totals(r: &RunView) -> (String, String, String) {
    let u = r.usage();
    let approx = if u.estimated { "≈ " } else { "" };
    (
        r.millis().map_or_else(|| "—".into(), duration),
        format!("{approx}{}", u.tokens_in + u.tokens_out),
        match (u.cost_usd, r.kind) {
            (Some(c), _) => dollars(c),
            (None, RunKind::Local) => "none (simulated)".into(),
            (None, RunKind::Server) => "not reported".into(),
        },
    )
}

fn comparison(a: &RunView, b: &RunView, la: String, lb: String) -> AnyView {
    let c: Comparison = compare(a, b);
    let (ta, tb) = (totals(a), totals(b));
    let head = el("TR")
        .child(el("TH").attr("scope", "col").text("Step"))
        .child(el("TH").attr("scope", "col").string(format!("A: {la}")))
        .child(el("TH").attr("scope", "col").string(format!("B: {lb}")))
        .child(el("TH").attr("scope", "col").text("Output"));
    let total_row = el("TR")
        .attr("class", "total")
        .child(el("TH").attr("scope", "row").text("Whole run"))
        .child(el("TD").string(format!(
            "{} · {} · {} tokens · {}",
            a.state.as_str(),
            ta.0,
            ta.1,
            ta.2
        )))
        .child(el("TD").string(format!(
            "{} · {} · {} tokens · {}",
            b.state.as_str(),
            tb.0,
            tb.1,
            tb.2
        )))
        .child(el("TD").string(format!("{} of {} steps differ", c.changed(), c.steps.len())));
    let mut body = el("TBODY").child(total_row);
    for s in &c.steps {
        body = body.child(step_row(s));
    }
    // The first step that differs is open: what changed is in view at once.
    let details: Vec<AnyView> = c
        .steps
        .iter()
        .filter(|s| s.change != Change::Same)
        .enumerate()
        .map(|(i, s)| step_outputs(s, &la, &lb, i == 0))
        .collect();
    fragment(vec![
        elc("P", "small muted")
            .text("Steps in A's order; expand a step below to see both outputs and the lines that changed.")
            .into_any(),
        elc("TABLE", "compare-table")
            .attr("data-testid", "comparison-table")
            .child(el("THEAD").child(head))
            .child(body)
            .into_any(),
        elc("DIV", "compare-details")
            .view(fragment(details))
            .into_any(),
    ])
}

fn cell(s: &Option<StepView>) -> String {
    match s {
        None => "—".into(),
        Some(s) => {
            let mut parts = vec![s.state.as_str().replace('-', " ")];
            if let Some(ms) = s.latency_ms {
                parts.push(duration(ms));
            }
            let tokens = s.usage.tokens_in + s.usage.tokens_out;
            if tokens > 0 {
                parts.push(format!("{tokens} tokens"));
            }
            if let Some(c) = s.usage.cost_usd {
                parts.push(dollars(c));
            }
            parts.join(" · ")
        }
    }
}

fn step_row(s: &StepComparison) -> El {
    el("TR")
        .attr_string("data-step", s.key.clone())
        .attr("data-change", s.change.as_str())
        .child(
            el("TH")
                .attr("scope", "row")
                .child(el("CODE").string(s.key.clone())),
        )
        .child(el("TD").string(cell(&s.a)))
        .child(el("TD").string(cell(&s.b)))
        .child(
            el("TD").child(
                el("SPAN")
                    .attr_string(
                        "class",
                        format!("change {}", s.change.as_str().replace(' ', "-")),
                    )
                    .string(s.change.as_str().to_owned()),
            ),
        )
}

fn step_outputs(s: &StepComparison, la: &str, lb: &str, open: bool) -> AnyView {
    let out = |v: &Option<StepView>| {
        v.as_ref()
            .and_then(StepView::output_text)
            .unwrap_or_else(|| "(no output)".into())
    };
    let diff = s.diff();
    let mut lines = elc("PRE", "diff")
        .attr("data-testid", "diff")
        .attr("tabindex", "0");
    for l in diff {
        let class = match l.tag {
            '-' => "del",
            '+' => "ins",
            _ => "same",
        };
        lines = lines.child(
            el("SPAN")
                .attr("class", class)
                .string(format!("{} {}\n", l.tag, l.text)),
        );
    }
    let mut details = elc("DETAILS", "compare-step");
    if open {
        details = details.attr("open", "");
    }
    details
        .attr_string("data-step", s.key.clone())
        .child(
            el("SUMMARY")
                .child(el("CODE").string(s.key.clone()))
                .text(" — ")
                .string(s.change.as_str().to_owned()),
        )
        .child(
            elc("DIV", "side-by-side")
                .child(
                    el("FIGURE")
                        .child(el("FIGCAPTION").string(format!("A: {la}")))
                        .child(elc("PRE", "io").attr("tabindex", "0").string(out(&s.a))),
                )
                .child(
                    el("FIGURE")
                        .child(el("FIGCAPTION").string(format!("B: {lb}")))
                        .child(elc("PRE", "io").attr("tabindex", "0").string(out(&s.b))),
                ),
        )
        .child(el("H4").text("What changed (− A, + B)"))
        .child(lines)
        .into_any()
}
