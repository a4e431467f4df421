//! The designer's components. [`App`] provides the shared state and lays out
//! the toolbar, the editor with its problems, the graph, and the side panel.

mod docs;
mod editor;
mod form;
mod graph;
mod run;
mod server;
mod toolbar;

pub use editor::{Editor, Problems};
pub use graph::GraphView;

use crate::runs::Runs;
use crate::server::Api;
use crate::state::{Config, Designer, Panel, ServerStatus, StorageStatus, use_designer};
use crate::store::Store;
use crate::{browser, runs::use_runs};
use leptos::ev;
use leptos::prelude::*;

/// Probe `/healthz`; the banner says when no server answers.
pub fn probe_server(d: Designer, runs: Runs) {
    let api = runs.api.get_value();
    leptos::task::spawn_local(async move {
        match api.health().await {
            Ok(h) => d.server.set(ServerStatus::Connected { version: h.version }),
            Err(e) => d.server.set(ServerStatus::Unreachable(e)),
        }
    });
}

/// The designer. `designer` lets a caller (tests) keep a handle on the state.
#[component]
pub fn App(
    #[prop(optional)] config: Option<Config>,
    #[prop(optional)] designer: Option<Designer>,
) -> impl IntoView {
    let config = config.unwrap_or_default();
    let d = designer.unwrap_or_else(|| Designer::new(config.clone()));
    provide_context(d);
    let api = Api {
        base: config.server_base.clone(),
        token: browser::query_param("token"),
    };
    let runs = Runs::new(d, api);
    provide_context(runs);
    runs.refresh_inputs();

    let db_name = config.db_name.clone();
    leptos::task::spawn_local(async move {
        match Store::open(&db_name).await {
            Ok(store) => {
                d.store.set_value(Some(store));
                d.storage.set(StorageStatus::Ready);
                d.restore_session().await;
                runs.find_unfinished().await;
            }
            Err(e) => d.storage.set(StorageStatus::Unavailable(e)),
        }
    });
    if config.probe_server {
        probe_server(d, runs);
    }

    let keys = window_event_listener(ev::keydown, move |e: ev::KeyboardEvent| {
        let ctrl = e.ctrl_key() || e.meta_key();
        match e.key().as_str() {
            "s" | "S" if ctrl => {
                e.prevent_default();
                d.save();
            }
            "Enter" if ctrl => {
                e.prevent_default();
                runs.start_local();
            }
            "Escape" => {
                if d.connect.get_untracked().is_some() {
                    d.connect.set(None);
                } else if d.selected_edge.get_untracked().is_some() {
                    d.selected_edge.set(None);
                } else if d.notice.get_untracked().is_some() {
                    d.notice.set(None);
                }
            }
            _ => {}
        }
    });
    on_cleanup(move || keys.remove());
    // The inputs box follows the workflow's declared inputs.
    Effect::new(move |prev: Option<Option<Vec<String>>>| {
        let names = d.analyzed.with(|a| {
            a.analysis
                .plan
                .as_ref()
                .map(|p| p.input_names().iter().cloned().collect::<Vec<_>>())
        });
        if prev.is_some_and(|p| p != names) && names.is_some() {
            runs.refresh_inputs();
        }
        names
    });

    view! {
        <div class="app">
            <toolbar::Toolbar />
            <Banners />
            <main class="workspace">
                <section class="col-editor" aria-label="Workflow text">
                    <Editor />
                    <Problems />
                </section>
                <section class="col-graph" aria-label="Dependency graph">
                    <GraphView />
                </section>
                <aside class="col-panel" aria-label="Details">
                    <SidePanel />
                </aside>
            </main>
        </div>
    }
}

/// Notices, the server and storage banners, and the offer to resume a run.
#[component]
fn Banners() -> impl IntoView {
    let d = use_designer();
    let runs = use_runs();
    let server_dismissed = RwSignal::new(false);
    let notice = move || {
        d.notice.get().map(|n| {
            let class = if n.error { "banner notice error" } else { "banner notice info" };
            view! {
                <div class=class data-testid="notice" role=if n.error { "alert" } else { "status" }>
                    <span>{n.text}</span>
                    <button class="link" on:click=move |_| d.notice.set(None) aria-label="Dismiss message">"✕"</button>
                </div>
            }
        })
    };
    let server = move || match d.server.get() {
        ServerStatus::Unreachable(why) if !server_dismissed.get() => Some(view! {
            <div class="banner server" data-testid="server-banner" role="status">
                <span>
                    <strong>"No ax server reachable. "</strong>
                    "Editing, validation, dry runs and saving keep working in this browser; runs with real providers need "
                    <code>"ax serve"</code> ". (" {why} ")"
                </span>
                <button on:click=move |_| probe_server(d, runs) data-testid="server-retry">"Retry"</button>
                <button class="link" on:click=move |_| server_dismissed.set(true) aria-label="Dismiss">"✕"</button>
            </div>
        }),
        _ => None,
    };
    let storage = move || match d.storage.get() {
        StorageStatus::Unavailable(why) => Some(view! {
            <div class="banner warn" data-testid="storage-banner" role="status">
                "Browser storage (IndexedDB) is not available, so nothing is saved here: export your work. (" {why} ")"
            </div>
        }),
        _ => None,
    };
    let offer = move || {
        runs.resume_offer.get().map(|r| {
            let r2 = r.clone();
            let r3 = r.clone();
            view! {
                <div class="banner offer" data-testid="resume-offer" role="status">
                    <span>
                        "The dry run of " <strong>{r.name.clone()}</strong> " did not finish ("
                        {format!("{} of {} steps done, {}", r.completed, r.total, r.state)} "). "
                        "Steps that were running will run again."
                    </span>
                    <button class="primary" data-testid="resume-offer-resume" on:click=move |_| runs.open_local(r2.clone(), None, true)>"Resume"</button>
                    <button data-testid="resume-offer-open" on:click=move |_| runs.open_local(r3.clone(), None, false)>"Open paused"</button>
                    <button class="link" data-testid="resume-offer-dismiss" on:click=move |_| runs.resume_offer.set(None)>"Not now"</button>
                </div>
            }
        })
    };
    view! { <div class="banners">{notice} {server} {storage} {offer}</div> }
}

#[component]
fn SidePanel() -> impl IntoView {
    let d = use_designer();
    let tab = move |p: Panel, label: &'static str, id: &'static str| {
        view! {
            <button
                role="tab"
                id=format!("tab-{id}")
                data-testid=format!("tab-{id}")
                aria-selected=move || (d.panel.get() == p).to_string()
                class:active=move || d.panel.get() == p
                on:click=move |_| d.panel.set(p)
            >
                {label}
            </button>
        }
    };
    view! {
        <div class="tabs" role="tablist" aria-label="Panels">
            {tab(Panel::Step, "Step", "step")}
            {tab(Panel::Run, "Run", "run")}
            {tab(Panel::Documents, "Documents", "documents")}
            {tab(Panel::Server, "Server", "server")}
        </div>
        <div class="panel-body" role="tabpanel">
            {move || match d.panel.get() {
                Panel::Step => view! { <form::StepPanel /> }.into_any(),
                Panel::Run => view! { <run::RunPanel /> }.into_any(),
                Panel::Documents => view! { <docs::DocumentsPanel /> }.into_any(),
                Panel::Server => view! { <server::ServerPanel /> }.into_any(),
            }}
        </div>
    }
}

/// Format a time (epoch ms) for lists.
pub(crate) fn when(ms: f64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms));
    let now = js_sys::Date::new_0();
    let pad = |n: u32| format!("{n:02}");
    let time = format!(
        "{}:{}:{}",
        pad(d.get_hours()),
        pad(d.get_minutes()),
        pad(d.get_seconds())
    );
    if d.to_date_string() == now.to_date_string() {
        time
    } else {
        format!(
            "{}-{}-{} {time}",
            d.get_full_year(),
            pad(d.get_month() + 1),
            pad(d.get_date())
        )
    }
}
