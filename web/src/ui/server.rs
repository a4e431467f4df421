//! Server mode: the workflows and executions of the `ax serve` this page came
//! from; open a stored workflow in the editor, or watch an execution live.

use super::dom::{el, elc, fragment, nothing, show};
use super::when;
use crate::documents::use_storage;
use crate::notice::Notices;
use crate::runs::{ServerStatus, use_runs};
use crate::server::{ExecutionSummary, WorkflowSummary};
use crate::text;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

/// What the server lists (one signal: each signal type brings its own copy of
/// the reactive code).
#[derive(Default)]
struct Lists {
    workflows: Vec<WorkflowSummary>,
    executions: Vec<ExecutionSummary>,
}

pub fn server_panel() -> AnyView {
    let runs = use_runs();
    let storage = use_storage();
    let notices = expect_context::<Notices>();
    let lists = RwSignal::new(Lists::default());
    let loading = RwSignal::new(false);
    let refresh = move || {
        if !matches!(runs.server.get_untracked(), ServerStatus::Connected { .. }) {
            return;
        }
        let api = runs.api.get_value();
        loading.set(true);
        leptos::task::spawn_local(async move {
            let workflows = api.workflows().await;
            let executions = api.executions().await;
            lists.update(|l| {
                if let Ok(w) = &workflows {
                    l.workflows.clone_from(w);
                }
                if let Ok(x) = &executions {
                    l.executions.clone_from(x);
                }
            });
            if let Err(e) = workflows {
                notices.error(format!("Could not list the server's workflows: {e}"));
            }
            if let Err(e) = executions {
                notices.error(format!("Could not list the server's executions: {e}"));
            }
            loading.set(false);
        });
    };
    Effect::new(move |_| {
        if matches!(runs.server.get(), ServerStatus::Connected { .. }) {
            refresh();
        }
    });
    let open_workflow = move |id: String| {
        let api = runs.api.get_value();
        leptos::task::spawn_local(async move {
            match api.workflow(&id).await {
                Ok(w) => match w.source {
                    Some(src) => storage.new_doc(text::name_with_extension(&w.name, &src), src),
                    None => notices.error("The server did not send the workflow's text."),
                },
                Err(e) => notices.error(format!("Could not load the workflow: {e}")),
            }
        });
    };
    let connected = move || matches!(runs.server.get(), ServerStatus::Connected { .. });
    elc("DIV", "server-panel")
        .attr("data-testid", "server-panel")
        .child(el("H2").text("Server"))
        .view_dyn(move || match runs.server.get() {
            ServerStatus::Connected { version } => elc("P", "ok-text")
                .attr("data-testid", "server-status")
                .text("Connected to ax ")
                .string(version)
                .text(".")
                .into_any(),
            ServerStatus::Unreachable(why) => elc("P", "muted")
                .attr("data-testid", "server-status")
                .text("No server: this page works on its own. Serve it with ")
                .child(el("CODE").text("ax serve"))
                .text(" to run with real providers. (")
                .string(why)
                .text(")")
                .into_any(),
            ServerStatus::Unknown => elc("P", "muted")
                .attr("data-testid", "server-status")
                .text("Not checked.")
                .into_any(),
        })
        .view(show(
            connected,
            move || {
                fragment(vec![
                    elc("DIV", "row")
                        .child(
                            el("BUTTON")
                                .on_click(move |_| refresh())
                                .flag_dyn("disabled", move || loading.get())
                                .text("Refresh"),
                        )
                        .into_any(),
                    el("H3").text("Executions").into_any(),
                    elc("UL", "server-list")
                        .attr("data-testid", "server-executions")
                        .list_dyn(move || {
                            lists
                                .with(|l| l.executions.clone())
                                .into_iter()
                                .map(|x| {
                                    let id = x.id.clone();
                                    el("LI")
                                        .attr_string("data-execution", x.id.clone())
                                        .child(
                                            elc("SPAN", "grow")
                                                .child(el("STRONG").string(x.workflow_name()))
                                                .child(
                                                    el("SPAN")
                                                        .attr_string(
                                                            "class",
                                                            format!("badge state-{}", x.state),
                                                        )
                                                        .string(x.state.clone()),
                                                )
                                                .child(elc("SPAN", "muted small").string(format!(
                                                    " {}/{} · {}",
                                                    x.progress.completed,
                                                    x.progress.total,
                                                    when(x.created_at)
                                                ))),
                                        )
                                        .child(
                                            elc("BUTTON", "small")
                                                .on_click(move |_| runs.watch_server(id.clone()))
                                                .text("Watch"),
                                        )
                                        .into_any()
                                })
                                .collect()
                        })
                        .into_any(),
                    el("H3").text("Workflows").into_any(),
                    elc("UL", "server-list")
                        .attr("data-testid", "server-workflows")
                        .list_dyn(move || {
                            lists
                                .with(|l| l.workflows.clone())
                                .into_iter()
                                .map(|w| {
                                    let id = w.id.clone();
                                    el("LI")
                                        .child(
                                            elc("SPAN", "grow")
                                                .child(el("STRONG").string(w.name.clone()))
                                                .child(elc("SPAN", "muted small").string(format!(
                                                    " v{} · {} steps · {}",
                                                    w.version,
                                                    w.step_count,
                                                    when(w.created_at)
                                                ))),
                                        )
                                        .child(
                                            elc("BUTTON", "small")
                                                .on_click(move |_| open_workflow(id.clone()))
                                                .text("Open"),
                                        )
                                        .into_any()
                                })
                                .collect()
                        })
                        .into_any(),
                ])
            },
            nothing,
        ))
        .into_any()
}
