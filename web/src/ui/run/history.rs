//! The runs of the open document, dry runs (kept in this browser) and server
//! runs (of the workflow with the document's name) in one list, newest first.
//! Open or watch one, delete a dry run, or tick two and compare them.

use super::RunRef;
use crate::documents::use_storage;
use crate::editing::use_editor;
use crate::run_view::RunKind;
use crate::runs::use_runs;
use crate::store::RunRecord;
use crate::ui::dom::{el, elc};
use crate::ui::{use_shell, when};
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

/// One entry of the list.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    run: RunRef,
    name: String,
    state: String,
    at: f64,
    progress: String,
    /// The stored dry run (to open it).
    record: Option<RunRecord>,
}

/// The dry runs of the document `doc` (or, without one, of the workflow
/// `name`) and, with a server, its runs of the workflow `name`; newest first.
async fn load_entries(
    store: Option<crate::store::Store>,
    api: Option<crate::server::Api>,
    doc: Option<String>,
    name: String,
) -> Vec<Entry> {
    let mut list = Vec::new();
    if let Some(store) = store
        && let Ok(stored) = store.list_runs().await
    {
        list.extend(
            stored
                .into_iter()
                .filter(|r| match (&doc, &r.doc_id) {
                    (Some(doc), Some(id)) => doc == id,
                    _ => r.name == name,
                })
                .map(|r| Entry {
                    run: RunRef {
                        kind: RunKind::Local,
                        id: r.id.clone(),
                        label: format!("dry run {}", when(r.created_at)),
                    },
                    name: r.name.clone(),
                    state: r.state.as_str().to_owned(),
                    at: r.created_at,
                    progress: format!("{}/{}", r.completed, r.total),
                    record: Some(r),
                }),
        );
    }
    if let Some(api) = api
        && let Ok(server) = api.executions().await
    {
        list.extend(
            server
                .into_iter()
                .filter(|x| x.workflow_name() == name)
                .map(|x| Entry {
                    run: RunRef {
                        kind: RunKind::Server,
                        id: x.id.clone(),
                        label: format!("server run {}", when(x.created_at)),
                    },
                    name: x.workflow_name(),
                    state: x.state.clone(),
                    at: x.created_at,
                    progress: format!("{}/{}", x.progress.completed, x.progress.total),
                    record: None,
                }),
        );
    }
    list.sort_by(|a, b| b.at.total_cmp(&a.at));
    list
}

pub(super) fn document_runs() -> AnyView {
    let d = use_editor();
    let storage = use_storage();
    let runs = use_runs();
    let shell = use_shell();
    let entries: RwSignal<Vec<Entry>> = RwSignal::new(Vec::new());
    let picked: RwSignal<Vec<RunRef>> = RwSignal::new(Vec::new());
    let workflow_name = Memo::new(move |_| {
        d.analyzed
            .with(|a| a.workflow().map(|w| w.name.clone()).unwrap_or_default())
    });
    Effect::new(move |_| {
        storage.runs_changed.track();
        storage.status.track();
        let doc = storage.doc_id.get();
        let name = workflow_name.get();
        // A server run that just ended shows up too.
        let _ = runs
            .run
            .with(|r| r.as_ref().map(|r| (r.id.clone(), r.state)));
        let connected = runs.server_connected();
        let store = storage.store.get_value();
        let api = runs.api.get_value();
        leptos::task::spawn_local(async move {
            let list = load_entries(store, connected.then_some(api), doc, name).await;
            entries.set(list);
        });
    });
    let delete = move |id: String| {
        let Some(store) = storage.store.get_value() else {
            return;
        };
        leptos::task::spawn_local(async move {
            match store.delete_run(&id).await {
                Ok(()) => storage.runs_changed.notify(),
                Err(e) => d.notices.error(format!("Could not delete the run: {e}")),
            }
        });
    };
    let toggle = move |r: RunRef| {
        picked.update(|p| {
            if let Some(i) = p.iter().position(|x| *x == r) {
                p.remove(i);
            } else {
                p.push(r);
                if p.len() > 2 {
                    p.remove(0);
                }
            }
        });
    };
    let item = move |e: Entry| -> AnyView {
        let r = e.run.clone();
        let (r_pick, r_check) = (r.clone(), r.clone());
        let id = r.id.clone();
        let current = {
            let id = r.id.clone();
            move || runs.run.with(|v| v.as_ref().is_some_and(|v| v.id == id))
        };
        let open = {
            let (record, id) = (e.record.clone(), r.id.clone());
            move |_| match (&record, r.kind) {
                (Some(rec), _) => runs.open_local(rec.clone(), None, false),
                (None, _) => runs.watch_server(id.clone()),
            }
        };
        let openable = e.record.as_ref().is_none_or(|rec| rec.last_seq > 0);
        let mut open_button = elc("BUTTON", "small")
            .attr("data-testid", "open-run")
            .attr_string("aria-label", format!("Open {}", r.label))
            .on_click(open)
            .text("Open");
        if !openable {
            open_button = open_button.attr("disabled", "");
        }
        let mut li = el("LI")
            .class_dyn("current", current)
            .attr_string("data-run", r.id.clone())
            .attr("data-kind", r.kind.label())
            .child(
                elc("LABEL", "pick")
                    .attr_string("title", format!("Compare {}", r.label))
                    .child(
                        el("INPUT")
                            .attr("type", "checkbox")
                            .attr("data-testid", "compare-pick")
                            .prop_flag("checked", move || picked.with(|p| p.contains(&r_check)))
                            .on(leptos::ev::change, move |_| toggle(r_pick.clone())),
                    )
                    .child(
                        elc("SPAN", "grow")
                            .child(elc("SPAN", "kind").string(r.kind.label().to_owned()))
                            .child(el("STRONG").string(format!(" {}", e.name)))
                            .child(elc("SPAN", "muted small").string(format!(
                                " {} · {} · {}",
                                e.state,
                                e.progress,
                                when(e.at)
                            ))),
                    ),
            )
            .child(open_button);
        if r.kind == RunKind::Local {
            li = li.child(
                elc("BUTTON", "small danger")
                    .on_click(move |_| delete(id.clone()))
                    .attr_string("aria-label", format!("Delete {}", r.label))
                    .text("Delete"),
            );
        }
        li.into_any()
    };
    elc("SECTION", "document-runs")
        .attr("aria-label", "Runs of this document")
        .child(el("H2").text("Runs of this document"))
        .child(
            elc("DIV", "row")
                .child(
                    elc("BUTTON", "primary")
                        .attr("data-testid", "compare")
                        .flag_dyn("disabled", move || picked.with(|p| p.len() != 2))
                        .on_click(move |_| {
                            let p = picked.get_untracked();
                            if let [a, b] = p.as_slice() {
                                shell.compare.set(Some((a.clone(), b.clone())));
                            }
                        })
                        .text("Compare"),
                )
                .child(
                    elc("SPAN", "muted small").text_dyn(move || match picked.with(Vec::len) {
                        0 => "Tick two runs to compare them step by step.".into(),
                        1 => "Tick one more run.".into(),
                        _ => "Ready to compare.".into(),
                    }),
                ),
        )
        .child(
            elc("UL", "doc-runs")
                .attr("data-testid", "runs")
                .list_dyn(move || entries.get().into_iter().map(item).collect()),
        )
        .into_any()
}
