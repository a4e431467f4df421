//! The designer's components. [`App`] provides the contexts and lays out the
//! toolbar, the editor with its problems, the graph, and the side panel.
//! Components take what they need from context (`use_editor`, `use_storage`,
//! `use_runs`, [`use_shell`]); nothing outside `ui` imports them.

mod docs;
mod dom;
mod editor;
mod form;
mod graph;
mod run;
mod server;
mod toolbar;

use dom::{el, elc, fragment, nothing, opt};
use leptos::tachys::view::any_view::AnyView;

use crate::documents::{StorageStatus, use_storage};
use crate::notice::Notices;
use crate::runs::{ServerStatus, use_runs};
use crate::{Config, Designer};
use leptos::ev;
use leptos::prelude::*;

/// The side panel's tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Step,
    Run,
    Documents,
    Server,
}

/// Page-level view state: which tab is open, and the runs being compared.
#[derive(Clone, Copy)]
pub struct Shell {
    pub panel: RwSignal<Panel>,
    /// Two runs (kind, id) to compare; the comparison dialog is open while set.
    pub compare: RwSignal<Option<(run::RunRef, run::RunRef)>>,
}

pub fn use_shell() -> Shell {
    expect_context::<Shell>()
}

/// The designer. `designer` lets a caller (tests) keep a handle on the state.
#[component]
pub fn App(
    #[prop(optional)] config: Option<Config>,
    #[prop(optional)] designer: Option<Designer>,
) -> impl IntoView {
    let config = config.unwrap_or_default();
    let d = designer.unwrap_or_else(|| Designer::new(&config));
    d.provide();
    let shell = Shell {
        panel: RwSignal::new(Panel::Step),
        compare: RwSignal::new(None),
    };
    provide_context(shell);
    let (editor, storage, runs) = (d.editor, d.storage, d.runs);
    runs.refresh_inputs();

    let db_name = config.db_name.clone();
    let initial = config.initial.clone();
    leptos::task::spawn_local(async move {
        storage.open(&db_name, initial).await;
        runs.find_unfinished().await;
    });
    if config.probe_server {
        runs.probe_server();
    }
    let keys = window_event_listener(ev::keydown, move |e: ev::KeyboardEvent| {
        global_key(d, shell, &e);
    });
    on_cleanup(move || keys.remove());
    // The inputs box follows the workflow's declared inputs.
    Effect::new(move |prev: Option<Option<Vec<String>>>| {
        let names = editor.analyzed.with(|a| {
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
    // A run that starts (or is opened) shows its panel.
    Effect::new(move |prev: Option<Option<String>>| {
        let id = runs.run.with(|r| r.as_ref().map(|r| r.id.clone()));
        if prev.is_some_and(|p| p != id) && id.is_some() {
            shell.panel.set(Panel::Run);
        }
        id
    });

    elc("DIV", "app")
        .view(untrack(toolbar::toolbar))
        .view(untrack(banners))
        .child(
            elc("MAIN", "workspace")
                .child(
                    elc("SECTION", "col-editor")
                        .attr("aria-label", "Workflow text")
                        .view(untrack(editor::editor))
                        .view(untrack(editor::problems)),
                )
                .child(
                    elc("SECTION", "col-graph")
                        .attr("aria-label", "Dependency graph")
                        .view(untrack(graph::graph_view)),
                )
                .child(
                    elc("ASIDE", "col-panel")
                        .attr("aria-label", "Details")
                        .view(untrack(side_panel)),
                ),
        )
        .view(untrack(run::compare_dialog))
        .into_any()
}

/// Shortcuts that work anywhere on the page.
fn global_key(d: Designer, shell: Shell, e: &ev::KeyboardEvent) {
    let ctrl = e.ctrl_key() || e.meta_key();
    let in_field = e
        .target()
        .and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::Element>(t).ok())
        .is_some_and(|t| {
            matches!(t.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT")
                || t.closest(".cm-editor").ok().flatten().is_some()
        });
    match e.key().as_str() {
        "s" | "S" if ctrl => {
            e.prevent_default();
            d.storage.save();
        }
        "Enter" if ctrl => {
            e.prevent_default();
            d.runs.start_local();
        }
        // Outside text fields (which keep their own undo), undo and redo reach
        // the document's history, which covers form and graph edits too.
        "z" | "Z" if ctrl && !in_field => {
            e.prevent_default();
            if e.shift_key() {
                d.editor.redo();
            } else {
                d.editor.undo();
            }
        }
        "y" | "Y" if ctrl && !in_field => {
            e.prevent_default();
            d.editor.redo();
        }
        "Escape" => {
            let editor = d.editor;
            if shell.compare.with_untracked(Option::is_some) {
                shell.compare.set(None);
            } else if editor.connect.get_untracked().is_some() {
                editor.connect.set(None);
            } else if editor.selected_edge.get_untracked().is_some() {
                editor.selected_edge.set(None);
            } else if d.notices.current.get_untracked().is_some() {
                d.notices.dismiss();
            }
        }
        _ => {}
    }
}

/// Notices, the server and storage banners, and the offer to resume a run.
fn banners() -> AnyView {
    let notices = expect_context::<Notices>();
    let storage = use_storage();
    let runs = use_runs();
    let server_dismissed = RwSignal::new(false);
    let notice = move || {
        opt(notices.current.get().map(|n| {
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
                    .on_click(move |_| notices.dismiss())
                    .attr("title", "Dismiss the message")
                    .text("Dismiss"),
            )
        }))
    };
    let server = move || {
        match runs.server.get() {
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
                    .on_click(move |_| runs.probe_server())
                    .attr("data-testid", "server-retry")
                    .text("Retry"),
            )
            .child(
                elc("BUTTON", "link")
                    .on_click(move |_| server_dismissed.set(true))
                    .text("Dismiss"),
            )
            .into_any(),
        _ => nothing(),
    }
    };
    let storage_banner = move || {
        match storage.status.get() {
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
        .view_dyn(storage_banner)
        .view_dyn(offer)
        .into_any()
}

fn side_panel() -> AnyView {
    let shell = use_shell();
    let tab = move |p: Panel, label: &'static str, id: &'static str| {
        el("BUTTON")
            .attr("role", "tab")
            .attr("id", id)
            .attr("data-testid", id)
            .attr("aria-controls", "panel-body")
            .attr_str_dyn("aria-selected", move || {
                if shell.panel.get() == p {
                    "true"
                } else {
                    "false"
                }
            })
            // One tab stop for the tab list; arrows move between tabs.
            .attr_str_dyn(
                "tabindex",
                move || {
                    if shell.panel.get() == p { "0" } else { "-1" }
                },
            )
            .class_dyn("active", move || shell.panel.get() == p)
            .on_click(move |_| shell.panel.set(p))
            .text(label)
    };
    let tabs = [Panel::Step, Panel::Run, Panel::Documents, Panel::Server];
    let on_key = move |e: ev::KeyboardEvent| {
        let i = tabs
            .iter()
            .position(|p| *p == shell.panel.get_untracked())
            .unwrap_or(0);
        let next = match e.key().as_str() {
            "ArrowRight" => (i + 1) % tabs.len(),
            "ArrowLeft" => (i + tabs.len() - 1) % tabs.len(),
            "Home" => 0,
            "End" => tabs.len() - 1,
            _ => return,
        };
        e.prevent_default();
        shell.panel.set(tabs[next]);
        let ids = ["tab-step", "tab-run", "tab-documents", "tab-server"];
        if let Some(t) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id(ids[next]))
            .and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(t).ok())
        {
            let _ = t.focus();
        }
    };
    fragment(vec![
        elc("DIV", "tabs")
            .attr("role", "tablist")
            .attr("aria-label", "Panels")
            .on(ev::keydown, on_key)
            .child(tab(Panel::Step, "Step", "tab-step"))
            .child(tab(Panel::Run, "Run", "tab-run"))
            .child(tab(Panel::Documents, "Documents", "tab-documents"))
            .child(tab(Panel::Server, "Server", "tab-server"))
            .into_any(),
        elc("DIV", "panel-body")
            .attr("role", "tabpanel")
            .attr("id", "panel-body")
            .attr_str_dyn("aria-labelledby", move || match shell.panel.get() {
                Panel::Step => "tab-step",
                Panel::Run => "tab-run",
                Panel::Documents => "tab-documents",
                Panel::Server => "tab-server",
            })
            .view_dyn(move || match shell.panel.get() {
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

/// A duration for people: `850 ms`, `2.4 s`, `3 min 05 s`.
pub(crate) fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{} s", crate::text::fixed(ms as f64 / 1000.0, 1))
    } else {
        format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// A cost in dollars, with enough digits for cents' fractions.
pub(crate) fn dollars(c: f64) -> String {
    if c == 0.0 {
        "$0".into()
    } else if c < 0.01 {
        format!("${}", crate::text::fixed(c, 4))
    } else {
        format!("${}", crate::text::fixed(c, 2))
    }
}
