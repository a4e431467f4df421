//! The designer's components. [`App`] provides the shared state and lays out
//! the toolbar, the editor with its problems, the graph, and the side panel.

mod docs;
mod dom;
mod editor;
mod form;
mod graph;
mod run;
mod server;
mod toolbar;

pub use dom::ElRef;
pub use editor::{editor, problems, textarea};
pub use graph::graph_view;

use dom::{el, elc, fragment, nothing, opt};
use leptos::tachys::view::any_view::AnyView;

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

    elc("DIV", "app")
        .view(untrack(toolbar::toolbar))
        .view(untrack(banners))
        .child(
            elc("MAIN", "workspace")
                .child(
                    elc("SECTION", "col-editor")
                        .attr("aria-label", "Workflow text")
                        .view(untrack(editor))
                        .view(untrack(problems)),
                )
                .child(
                    elc("SECTION", "col-graph")
                        .attr("aria-label", "Dependency graph")
                        .view(untrack(graph_view)),
                )
                .child(
                    elc("ASIDE", "col-panel")
                        .attr("aria-label", "Details")
                        .view(untrack(side_panel)),
                ),
        )
        .into_any()
}

/// Notices, the server and storage banners, and the offer to resume a run.
fn banners() -> AnyView {
    let d = use_designer();
    let runs = use_runs();
    let server_dismissed = RwSignal::new(false);
    let notice = move || {
        opt(d.notice.get().map(|n| {
            elc(
                "DIV",
                if n.error {
                    "banner notice error"
                } else {
                    "banner notice info"
                },
            )
            .attr("data-testid", "notice")
            .attr("role", if n.error { "alert" } else { "status" })
            .child(el("SPAN").string(n.text))
            .child(
                elc("BUTTON", "link")
                    .on_click(move |_| d.notice.set(None))
                    .attr("aria-label", "Dismiss message")
                    .text("✕"),
            )
        }))
    };
    let server = move || {
        match d.server.get() {
        ServerStatus::Unreachable(why) if !server_dismissed.get() => elc("DIV", "banner server")
            .attr("data-testid", "server-banner")
            .attr("role", "status")
            .child(
                el("SPAN")
                    .child(el("STRONG").text("No ax server reachable. "))
                    .text("Editing, validation, dry runs and saving keep working in this browser; runs with real providers need ")
                    .child(el("CODE").text("ax serve"))
                    .text(". (")
                    .string(why)
                    .text(")"),
            )
            .child(
                el("BUTTON")
                    .on_click(move |_| probe_server(d, runs))
                    .attr("data-testid", "server-retry")
                    .text("Retry"),
            )
            .child(
                elc("BUTTON", "link")
                    .on_click(move |_| server_dismissed.set(true))
                    .attr("aria-label", "Dismiss")
                    .text("✕"),
            )
            .into_any(),
        _ => nothing(),
    }
    };
    let storage = move || {
        match d.storage.get() {
        StorageStatus::Unavailable(why) => elc("DIV", "banner warn")
            .attr("data-testid", "storage-banner")
            .attr("role", "status")
            .text("Browser storage (IndexedDB) is not available, so nothing is saved here: export your work. (")
            .string(why)
            .text(")")
            .into_any(),
        _ => nothing(),
    }
    };
    let offer = move || {
        opt(runs.resume_offer.get().map(|r| {
            let r2 = r.clone();
            let r3 = r.clone();
            elc("DIV", "banner offer")
                .attr("data-testid", "resume-offer")
                .attr("role", "status")
                .child(
                    el("SPAN")
                        .text("The dry run of ")
                        .child(el("STRONG").string(r.name.clone()))
                        .text(" did not finish (")
                        .string(format!(
                            "{} of {} steps done, {}",
                            r.completed, r.total, r.state
                        ))
                        .text("). ")
                        .text("Steps that were running will run again."),
                )
                .child(
                    elc("BUTTON", "primary")
                        .attr("data-testid", "resume-offer-resume")
                        .on_click(move |_| runs.open_local(r2.clone(), None, true))
                        .text("Resume"),
                )
                .child(
                    el("BUTTON")
                        .attr("data-testid", "resume-offer-open")
                        .on_click(move |_| runs.open_local(r3.clone(), None, false))
                        .text("Open paused"),
                )
                .child(
                    elc("BUTTON", "link")
                        .attr("data-testid", "resume-offer-dismiss")
                        .on_click(move |_| runs.resume_offer.set(None))
                        .text("Not now"),
                )
        }))
    };
    elc("DIV", "banners")
        .view_dyn(notice)
        .view_dyn(server)
        .view_dyn(storage)
        .view_dyn(offer)
        .into_any()
}

fn side_panel() -> AnyView {
    let d = use_designer();
    let tab = move |p: Panel, label: &'static str, id: &'static str| {
        el("BUTTON")
            .attr("role", "tab")
            .attr("id", id)
            .attr("data-testid", id)
            .attr_str_dyn("aria-selected", move || {
                if d.panel.get() == p { "true" } else { "false" }
            })
            .class_dyn("active", move || d.panel.get() == p)
            .on_click(move |_| d.panel.set(p))
            .text(label)
    };
    fragment(vec![
        elc("DIV", "tabs")
            .attr("role", "tablist")
            .attr("aria-label", "Panels")
            .child(tab(Panel::Step, "Step", "tab-step"))
            .child(tab(Panel::Run, "Run", "tab-run"))
            .child(tab(Panel::Documents, "Documents", "tab-documents"))
            .child(tab(Panel::Server, "Server", "tab-server"))
            .into_any(),
        elc("DIV", "panel-body")
            .attr("role", "tabpanel")
            .view_dyn(move || match d.panel.get() {
                Panel::Step => untrack(form::step_panel),
                Panel::Run => untrack(run::run_panel),
                Panel::Documents => untrack(docs::documents_panel),
                Panel::Server => untrack(server::server_panel),
            })
            .into_any(),
    ])
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
