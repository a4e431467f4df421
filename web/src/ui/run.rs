//! The run panel: dry-run settings, the controls of the run on the graph, its
//! checkpoints (restore, export, import), each step's prompt and output, and
//! the dry runs stored in this browser.

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

#[component]
pub fn RunPanel() -> impl IntoView {
    let d = use_designer();
    let runs = use_runs();
    let state = Memo::new(move |_| d.run.with(|r| r.as_ref().map(|r| r.state)));
    let kind = Memo::new(move |_| d.run.with(|r| r.as_ref().map(|r| r.kind)));
    let can_pause = move || state.get() == Some(ExecutionState::Running);
    let can_resume = move || state.get().is_some_and(ExecutionState::is_resumable);
    let can_cancel = move || state.get().is_some_and(|s| !s.is_terminal());
    let server_ok = move || matches!(d.server.get(), ServerStatus::Connected { .. });
    let import_ref = NodeRef::<leptos::html::Input>::new();
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
    view! {
        <div class="run-panel" data-testid="run-panel">
            <section class="active-run">
                <Show
                    when=move || kind.get().is_some()
                    fallback=|| view! { <p class="empty">"No run yet. Press “▶ Dry run” (Ctrl+Enter) to try the workflow here."</p> }
                >
                    <div class="run-head">
                        <strong>{move || d.run.with(|r| r.as_ref().map(|r| r.name.clone()).unwrap_or_default())}</strong>
                        <span class="muted small">{move || match kind.get() { Some(RunKind::Server) => " on the server", _ => " in this browser" }}</span>
                        <span class=move || format!("badge state-{}", state.get().map_or("idle", |s| s.as_str())) data-testid="run-state">
                            {move || state.get().map_or("idle", |s| s.as_str())}
                        </span>
                    </div>
                    <div class="progress" aria-hidden="true">
                        <div class="bar" style:width=move || progress().map_or("0%".to_owned(), |(_, done, n)| format!("{:.0}%", 100.0 * done as f64 / n as f64))></div>
                    </div>
                    <p class="small" data-testid="run-progress">
                        {move || progress().map(|(c, done, n)| format!("{c} of {n} steps completed, {done} settled")).unwrap_or_default()}
                        {move || d.run.with(|r| r.as_ref().and_then(|r| r.reason.clone())).map(|r| view! { <span class="muted">" — " {r}</span> })}
                    </p>
                    <div class="row wrap controls">
                        <button data-testid="pause" on:click=move |_| runs.pause() disabled=move || !can_pause()>"Pause"</button>
                        <button data-testid="resume" class="primary" on:click=move |_| runs.resume() disabled=move || !can_resume()>"Resume"</button>
                        <button data-testid="cancel" class="danger" on:click=move |_| runs.cancel() disabled=move || !can_cancel()>"Cancel"</button>
                        <button data-testid="export-checkpoint" on:click=move |_| runs.export_checkpoint() title="Download the run as a checkpoint file (ax can import and continue it)">"Export checkpoint"</button>
                        <Show when=move || server_ok() && kind.get() == Some(RunKind::Local)>
                            <button data-testid="send-to-server" on:click=move |_| runs.send_to_server() title="Continue this run on the server with real providers">"Continue on server"</button>
                        </Show>
                    </div>
                    <Checkpoints />
                    <Steps />
                </Show>
                <div class="row">
                    <button on:click=move |_| { if let Some(i) = import_ref.get() { i.click(); } } data-testid="import-checkpoint" title="Open a checkpoint file exported here or by the server">
                        "Import checkpoint…"
                    </button>
                    <input type="file" class="hidden" accept=".json,application/json" node_ref=import_ref on:change=on_import tabindex="-1" aria-label="Import a checkpoint file" />
                </div>
            </section>
            <section class="settings">
                <h2>"Dry-run settings"</h2>
                <p class="muted small">"“▶ Dry run” runs the workflow in this page with a simulated provider: no model is called."</p>
                <div class="row wrap">
                    <label class="inline grow">
                        "Latency (ms)"
                        <input
                            type="number"
                            min="0"
                            data-testid="latency"
                            prop:value=move || settings.get().latency_ms.to_string()
                            on:change=move |e| {
                                let i: web_sys::HtmlInputElement = event_target(&e);
                                let v = i.value().trim().parse::<u32>().unwrap_or(0);
                                settings.update(|s| s.latency_ms = v);
                            }
                        />
                    </label>
                    <label class="inline grow">
                        "Failure rate (%)"
                        <input
                            type="number"
                            min="0"
                            max="100"
                            data-testid="failure-rate"
                            prop:value=move || settings.get().failure_rate.to_string()
                            on:change=move |e| {
                                let i: web_sys::HtmlInputElement = event_target(&e);
                                let v = i.value().trim().parse::<f64>().unwrap_or(0.0).clamp(0.0, 100.0);
                                settings.update(|s| s.failure_rate = v);
                            }
                        />
                    </label>
                </div>
                <Show when=move || !runs.inputs.with(String::is_empty)>
                    <details>
                        <summary>"Run inputs"</summary>
                        <textarea
                            class="inputs"
                            rows="4"
                            aria-label="Run inputs as JSON"
                            data-testid="run-inputs"
                            prop:value=move || runs.inputs.get()
                            on:change=move |e| {
                                let t: web_sys::HtmlTextAreaElement = event_target(&e);
                                runs.inputs.set(t.value());
                            }
                        ></textarea>
                    </details>
                </Show>
            </section>
            <StoredRuns />
        </div>
    }
}

#[component]
fn Checkpoints() -> impl IntoView {
    let d = use_designer();
    let runs = use_runs();
    let list = Memo::new(move |_| {
        d.run.with(|r| {
            r.as_ref()
                .map(|r| r.checkpoints.clone())
                .unwrap_or_default()
        })
    });
    view! {
        <details class="checkpoints" open=true>
            <summary>{move || format!("Checkpoints ({})", list.with(Vec::len))}</summary>
            <ol data-testid="checkpoints">
                {move || list.get().into_iter().rev().take(50).map(|c|
                    {
                        let (id, seq) = (c.id.clone(), c.seq);
                        view! {
                            <li data-seq=c.seq>
                                <span class="seq">"#" {c.seq}</span>
                                <span class="muted small">{when(c.at)}</span>
                                <span class="small">{c.state.map(|s| s.as_str().to_owned()).unwrap_or_default()}</span>
                                <span class="small">{format!("{} done", c.completed)}</span>
                                <button class="small" data-testid="restore-checkpoint" on:click=move |_| runs.restore(id.clone(), seq) title="Rewind the run to this checkpoint">
                                    "Restore"
                                </button>
                            </li>
                        }
                    }
                ).collect_view()}
            </ol>
        </details>
    }
}

#[component]
fn Steps() -> impl IntoView {
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
    view! {
        <div class="run-steps" data-testid="run-steps">
            <For each=move || steps.get() key=|(k, s)| (k.clone(), s.state, s.attempt, s.output.is_some(), s.error.clone()) let:entry>
                {
                    let (key, s): (String, StepView) = entry;
                    let key2 = key.clone();
                    view! {
                        <details class="run-step" data-step=key.clone() data-state=s.state.as_str()>
                            <summary>
                                <span class=format!("dot state-{}", s.state.as_str())></span>
                                <button type="button" class="link" on:click=move |e: ev::MouseEvent| { e.prevent_default(); d.selected.set(Some(key2.clone())); }>{key.clone()}</button>
                                <span class="muted small">{format!(" {} · attempt {}", s.state.as_str(), s.attempt)}</span>
                            </summary>
                            {s.prompt.clone().map(|p| view! { <h3>"Prompt"</h3><pre class="io">{p}</pre> })}
                            {s.output.clone().map(|o| view! { <h3>"Output"</h3><pre class="io">{o.to_string()}</pre> })}
                            {s.error.clone().map(|e| view! { <p class="error-text">{e}</p> })}
                            {s.reason.clone().map(|r| view! { <p class="muted small">{r}</p> })}
                        </details>
                    }
                }
            </For>
        </div>
    }
}

#[component]
fn StoredRuns() -> impl IntoView {
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
                Ok(()) => d.runs_changed.update(|v| *v += 1),
                Err(e) => d.error(format!("Could not delete the run: {e}")),
            }
        });
    };
    view! {
        <details class="stored-runs">
            <summary>{move || format!("Dry runs in this browser ({})", list.with(Vec::len))}</summary>
            <ul data-testid="runs">
                {move || list.get().into_iter().map(|r|
                    {
                        let (r1, id) = (r.clone(), r.id.clone());
                        let current = {
                            let id = r.id.clone();
                            move || d.run.with(|v| v.as_ref().is_some_and(|v| v.id == id))
                        };
                        view! {
                            <li class:current=current data-run=r.id.clone()>
                                <span class="grow">
                                    <strong>{r.name.clone()}</strong>
                                    <span class="muted small">{format!(" {} · {}/{} · {}", r.state, r.completed, r.total, when(r.created_at))}</span>
                                </span>
                                <button class="small" on:click=move |_| runs.open_local(r1.clone(), None, false) disabled=move || r.last_seq == 0>"Open"</button>
                                <button class="small danger" on:click=move |_| delete(id.clone()) aria-label="Delete this run">"Delete"</button>
                            </li>
                        }
                    }
                ).collect_view()}
            </ul>
        </details>
    }
}
