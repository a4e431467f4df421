//! The run panel: dry-run settings, the controls of the run on the graph, its
//! checkpoints (restore, export, import), each step's prompt and output, and
//! the dry runs stored in this browser.

use super::dom::{ElRef, Keyed, el, elc, fragment, keyed, nothing, opt, show};
use super::toolbar::event_target;
use super::when;
use crate::browser;
use crate::dryrun::StepView;
use crate::runs::use_runs;
use crate::state::{RunKind, ServerStatus, use_designer};
use crate::store::RunRecord;
use ax_core::{ExecutionState, StepState};
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

/// Why Resume is unavailable for a run in `state` (`None`: it can be resumed).
pub(crate) fn resume_blocked(state: Option<ExecutionState>) -> Option<&'static str> {
    match state {
        Some(s) if s.is_resumable() => None,
        Some(ExecutionState::Completed) => {
            Some("This run has completed: there is nothing left to resume")
        }
        Some(ExecutionState::Cancelled) => Some("This run was cancelled: it cannot be resumed"),
        Some(ExecutionState::Running) => Some("The run is running"),
        Some(_) => Some("The run is not paused"),
        None => Some("No run"),
    }
}

pub fn run_panel() -> AnyView {
    let d = use_designer();
    let runs = use_runs();
    // Closures, not memos (each memo type brings its own copy of the reactive
    // code): what reads them only touches the DOM when the value changed.
    let state = move || d.run.with(|r| r.as_ref().map(|r| r.state));
    let kind = move || d.run.with(|r| r.as_ref().map(|r| r.kind));
    let can_pause = move || state() == Some(ExecutionState::Running);
    let can_cancel = move || state().is_some_and(|s| !s.is_terminal());
    let server_ok = move || matches!(d.server.get(), ServerStatus::Connected { .. });
    let import_ref = ElRef::new();
    let on_import = move |e: ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&e);
        if let Some(f) = input.files().and_then(|l| l.get(0)) {
            leptos::task::spawn_local(async move {
                match browser::read_file(&f).await {
                    Ok(t) => runs.import_checkpoint(t),
                    Err(e) => d.error(e),
                }
            });
        }
        input.set_value("");
    };
    let settings = runs.settings;
    let progress = move || {
        d.run.with(|r| {
            r.as_ref().map(|r| {
                let done = r.steps.iter().filter(|(_, s)| s.state.is_settled()).count();
                (r.completed(), done, r.steps.len().max(1))
            })
        })
    };
    let state_name = move || state().map_or("idle", |s| s.as_str());

    let active = move || {
        fragment(vec![
            elc("DIV", "run-head")
                .child(el("STRONG").text_dyn(move || {
                    d.run
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
                .text_dyn(move || {
                    progress()
                        .map(|(c, done, n)| format!("{c} of {n} steps completed, {done} settled"))
                        .unwrap_or_default()
                })
                .view_dyn(move || {
                    opt(d
                        .run
                        .with(|r| r.as_ref().and_then(|r| r.reason.clone()))
                        .map(|r| elc("SPAN", "muted").text(" — ").string(r)))
                })
                .into_any(),
            elc("DIV", "row wrap controls")
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
                            resume_blocked(state())
                                .unwrap_or("Resume the run from where it stopped")
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
                    move || server_ok() && kind() == Some(RunKind::Local),
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
                .into_any(),
            checkpoints(),
            steps(),
        ])
    };

    elc("DIV", "run-panel")
        .attr("data-testid", "run-panel")
        .child(
            elc("SECTION", "active-run")
                .view(show(move || kind().is_some(), active, || {
                    elc("P", "empty")
                        .text("No run yet. Press “▶ Dry run” (Ctrl+Enter) to try the workflow here.")
                        .into_any()
                }))
                .child(
                    elc("DIV", "row")
                        .child(
                            el("BUTTON")
                                .on_click(move |_| {
                                    if let Some(i) = import_ref.get() {
                                        i.click();
                                    }
                                })
                                .attr("data-testid", "import-checkpoint")
                                .attr(
                                    "title",
                                    "Open a checkpoint file exported here or by the server",
                                )
                                .text("Import checkpoint…"),
                        )
                        .child(
                            elc("INPUT", "hidden")
                                .attr("type", "file")
                                .attr("accept", ".json,application/json")
                                .node_ref(import_ref)
                                .on(ev::change, on_import)
                                .attr("tabindex", "-1")
                                .attr("aria-label", "Import a checkpoint file"),
                        ),
                ),
        )
        .child(
            elc("SECTION", "settings")
                .child(el("H2").text("Dry-run settings"))
                .child(elc("P", "muted small").text(
                    "“▶ Dry run” runs the workflow in this page with a simulated provider: no model is called.",
                ))
                .child(
                    elc("DIV", "row wrap")
                        .child(
                            elc("LABEL", "inline grow").text("Latency (ms)").child(
                                el("INPUT")
                                    .attr("type", "number")
                                    .attr("min", "0")
                                    .attr("data-testid", "latency")
                                    .prop_dyn("value", move || {
                                        settings.get().latency_ms.to_string()
                                    })
                                    .on(ev::change, move |e| {
                                        let i: web_sys::HtmlInputElement = event_target(&e);
                                        let v = i.value().trim().parse::<u32>().unwrap_or(0);
                                        settings.update(|s| s.latency_ms = v);
                                    }),
                            ),
                        )
                        .child(
                            elc("LABEL", "inline grow").text("Failure rate (%)").child(
                                el("INPUT")
                                    .attr("type", "number")
                                    .attr("min", "0")
                                    .attr("max", "100")
                                    .attr("data-testid", "failure-rate")
                                    .prop_dyn("value", move || {
                                        settings.get().failure_rate.to_string()
                                    })
                                    .on(ev::change, move |e| {
                                        let i: web_sys::HtmlInputElement = event_target(&e);
                                        let v = i
                                            .value()
                                            .trim()
                                            .parse::<f64>()
                                            .unwrap_or(0.0)
                                            .clamp(0.0, 100.0);
                                        settings.update(|s| s.failure_rate = v);
                                    }),
                            ),
                        ),
                )
                .view(show(
                    move || !runs.inputs.with(String::is_empty),
                    move || {
                        el("DETAILS")
                            .child(el("SUMMARY").text("Run inputs"))
                            .child(
                                elc("TEXTAREA", "inputs")
                                    .attr("rows", "4")
                                    .attr("aria-label", "Run inputs as JSON")
                                    .attr("data-testid", "run-inputs")
                                    .prop_dyn("value", move || runs.inputs.get())
                                    .on(ev::change, move |e| {
                                        let t: web_sys::HtmlTextAreaElement = event_target(&e);
                                        runs.inputs.set(t.value());
                                    }),
                            )
                            .into_any()
                    },
                    nothing,
                )),
        )
        .view(stored_runs())
        .into_any()
}

fn checkpoints() -> AnyView {
    let d = use_designer();
    let runs = use_runs();
    let list = Memo::new(move |_| {
        d.run.with(|r| {
            r.as_ref()
                .map(|r| r.checkpoints.clone())
                .unwrap_or_default()
        })
    });
    elc("DETAILS", "checkpoints")
        .attr("open", "")
        .child(el("SUMMARY").text_dyn(move || format!("Checkpoints ({})", list.with(Vec::len))))
        .child(
            el("OL")
                .attr("data-testid", "checkpoints")
                .list_dyn(move || {
                    list.get()
                        .into_iter()
                        .rev()
                        .take(50)
                        .map(|c| {
                            let (id, seq) = (c.id.clone(), c.seq);
                            el("LI")
                                .attr_string("data-seq", c.seq.to_string())
                                .child(elc("SPAN", "seq").string(format!("#{}", c.seq)))
                                .child(elc("SPAN", "muted small").string(when(c.at)))
                                .child(elc("SPAN", "small").string(
                                    c.state.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                                ))
                                .child(elc("SPAN", "small").string(format!("{} done", c.completed)))
                                .child(
                                    elc("BUTTON", "small")
                                        .attr("data-testid", "restore-checkpoint")
                                        .on_click(move |_| runs.restore(id.clone(), seq))
                                        .attr("title", "Rewind the run to this checkpoint")
                                        .text("Restore"),
                                )
                                .into_any()
                        })
                        .collect()
                }),
        )
        .into_any()
}

fn steps() -> AnyView {
    let d = use_designer();
    let steps = Memo::new(move |_| {
        d.run.with(|r| {
            r.as_ref()
                .map(|r| {
                    r.steps
                        .iter()
                        .filter(|(_, s)| s.state != StepState::Pending)
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
    });
    let io = |title: &'static str, text: String| {
        fragment(vec![
            el("H3").text(title).into_any(),
            elc("PRE", "io").string(text).into_any(),
        ])
    };
    elc("DIV", "run-steps")
        .attr("data-testid", "run-steps")
        .view(keyed(move || {
            steps
                .get()
                .into_iter()
                .map(|(key, s): (String, StepView)| {
                    // The entry is rebuilt when its state, attempt, output or error changes.
                    let id = format!(
                        "{key}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
                        s.state.as_str(),
                        s.attempt,
                        s.output.is_some(),
                        s.error.as_deref().unwrap_or("")
                    );
                    Keyed::new(id, move || {
                        let key2 = key.clone();
                        elc("DETAILS", "run-step")
                            .attr_string("data-step", key.clone())
                            .attr("data-state", s.state.as_str())
                            .child(
                                el("SUMMARY")
                                    .child(el("SPAN").attr_string(
                                        "class",
                                        format!("dot state-{}", s.state.as_str()),
                                    ))
                                    .child(
                                        elc("BUTTON", "link")
                                            .attr("type", "button")
                                            .on_click(move |e| {
                                                e.prevent_default();
                                                d.selected.set(Some(key2.clone()));
                                            })
                                            .string(key),
                                    )
                                    .child(elc("SPAN", "muted small").string(format!(
                                        " {} · attempt {}",
                                        s.state.as_str(),
                                        s.attempt
                                    ))),
                            )
                            .view(s.prompt.map_or_else(nothing, |p| io("Prompt", p)))
                            .view(
                                s.output
                                    .map_or_else(nothing, |o| io("Output", o.to_string())),
                            )
                            .child_opt(s.error.map(|e| elc("P", "error-text").string(e)))
                            .child_opt(s.reason.map(|r| elc("P", "muted small").string(r)))
                            .into_any()
                    })
                })
                .collect()
        }))
        .into_any()
}

fn stored_runs() -> AnyView {
    let d = use_designer();
    let runs = use_runs();
    let list: RwSignal<Vec<RunRecord>> = RwSignal::new(Vec::new());
    Effect::new(move |_| {
        d.runs_changed.track();
        d.storage.track();
        if let Some(store) = d.store.get_value() {
            leptos::task::spawn_local(async move {
                if let Ok(v) = store.list_runs().await {
                    list.set(v);
                }
            });
        }
    });
    let delete = move |id: String| {
        let Some(store) = d.store.get_value() else {
            return;
        };
        leptos::task::spawn_local(async move {
            match store.delete_run(&id).await {
                Ok(()) => d.runs_changed.notify(),
                Err(e) => d.error(format!("Could not delete the run: {e}")),
            }
        });
    };
    let item = move |r: RunRecord| -> AnyView {
        let (r1, id) = (r.clone(), r.id.clone());
        let current = {
            let id = r.id.clone();
            move || d.run.with(|v| v.as_ref().is_some_and(|v| v.id == id))
        };
        let mut open = elc("BUTTON", "small");
        if r.last_seq == 0 {
            open = open.attr("disabled", "");
        }
        el("LI")
            .class_dyn("current", current)
            .attr_string("data-run", r.id.clone())
            .child(
                elc("SPAN", "grow")
                    .child(el("STRONG").string(r.name.clone()))
                    .child(elc("SPAN", "muted small").string(format!(
                        " {} · {}/{} · {}",
                        r.state,
                        r.completed,
                        r.total,
                        when(r.created_at)
                    ))),
            )
            .child(
                open.on_click(move |_| runs.open_local(r1.clone(), None, false))
                    .text("Open"),
            )
            .child(
                elc("BUTTON", "small danger")
                    .on_click(move |_| delete(id.clone()))
                    .attr("aria-label", "Delete this run")
                    .text("Delete"),
            )
            .into_any()
    };
    elc("DETAILS", "stored-runs")
        .child(
            el("SUMMARY")
                .text_dyn(move || format!("Dry runs in this browser ({})", list.with(Vec::len))),
        )
        .child(
            el("UL")
                .attr("data-testid", "runs")
                .list_dyn(move || list.get().into_iter().map(item).collect()),
        )
        .into_any()
}
