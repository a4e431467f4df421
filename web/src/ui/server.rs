//! Server mode: the workflows and executions of the `ax serve` this page came
//! from; open a stored workflow in the editor, or watch an execution live.

use super::when;
use crate::runs::use_runs;
use crate::server::{ExecutionSummary, WorkflowSummary};
use crate::state::{ServerStatus, use_designer};
use crate::text;
use leptos::prelude::*;

#[component]
pub fn ServerPanel() -> impl IntoView {
    let d = use_designer();
    let runs = use_runs();
    let workflows: RwSignal<Vec<WorkflowSummary>> = RwSignal::new(Vec::new());
    let executions: RwSignal<Vec<ExecutionSummary>> = RwSignal::new(Vec::new());
    let loading = RwSignal::new(false);
    let refresh = move || {
        if !matches!(d.server.get_untracked(), ServerStatus::Connected { .. }) {
            return;
        }
        let api = runs.api.get_value();
        loading.set(true);
        leptos::task::spawn_local(async move {
            match api.workflows().await {
                Ok(w) => workflows.set(w),
                Err(e) => d.error(format!("Could not list the server's workflows: {e}")),
            }
            match api.executions().await {
                Ok(x) => executions.set(x),
                Err(e) => d.error(format!("Could not list the server's executions: {e}")),
            }
            loading.set(false);
        });
    };
    Effect::new(move |_| {
        if matches!(d.server.get(), ServerStatus::Connected { .. }) {
            refresh();
        }
    });
    let open_workflow = move |id: String| {
        let api = runs.api.get_value();
        leptos::task::spawn_local(async move {
            match api.workflow(&id).await {
                Ok(w) => match w.source {
                    Some(src) => d.new_doc(text::name_with_extension(&w.name, &src), src),
                    None => d.error("The server did not send the workflow's text."),
                },
                Err(e) => d.error(format!("Could not load the workflow: {e}")),
            }
        });
    };
    view! {
        <div class="server-panel" data-testid="server-panel">
            <h2>"Server"</h2>
            {move || match d.server.get() {
                ServerStatus::Connected { version } => view! {
                    <p class="ok-text" data-testid="server-status">"Connected to ax " {version} "."</p>
                }
                .into_any(),
                ServerStatus::Unreachable(why) => view! {
                    <p class="muted" data-testid="server-status">
                        "No server: this page works on its own. Serve it with " <code>"ax serve"</code> " to run with real providers. (" {why} ")"
                    </p>
                }
                .into_any(),
                ServerStatus::Unknown => view! { <p class="muted" data-testid="server-status">"Not checked."</p> }.into_any(),
            }}
            <Show when=move || matches!(d.server.get(), ServerStatus::Connected { .. })>
                <div class="row">
                    <button on:click=move |_| refresh() disabled=move || loading.get()>"Refresh"</button>
                </div>
                <h3>"Executions"</h3>
                <ul class="server-list" data-testid="server-executions">
                    {move || executions.get().into_iter().map(|x|
                        {
                            let id = x.id.clone();
                            view! {
                                <li data-execution=x.id.clone()>
                                    <span class="grow">
                                        <strong>{x.workflow_name()}</strong>
                                        <span class=format!("badge state-{}", x.state)>{x.state.clone()}</span>
                                        <span class="muted small">{format!(" {}/{} · {}", x.progress.completed, x.progress.total, when(x.created_at))}</span>
                                    </span>
                                    <button class="small" on:click=move |_| runs.watch_server(id.clone())>"Watch"</button>
                                </li>
                            }
                        }
                    ).collect_view()}
                </ul>
                <h3>"Workflows"</h3>
                <ul class="server-list" data-testid="server-workflows">
                    {move || workflows.get().into_iter().map(|w|
                        {
                            let id = w.id.clone();
                            view! {
                                <li>
                                    <span class="grow">
                                        <strong>{w.name.clone()}</strong>
                                        <span class="muted small">{format!(" v{} · {} steps · {}", w.version, w.step_count, when(w.created_at))}</span>
                                    </span>
                                    <button class="small" on:click=move |_| open_workflow(id.clone())>"Open"</button>
                                </li>
                            }
                        }
                    ).collect_view()}
                </ul>
            </Show>
        </div>
    }
}
