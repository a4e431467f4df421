//! The top bar: the document, saving, importing and exporting, and running.

use super::dom::{ElRef, el, elc};
use crate::browser;
use crate::documents::{Storage, use_storage};
use crate::editing::{Editor, use_editor};
use crate::runs::use_runs;
use crate::text;
use ax_core::emit;
use ax_core::parse::Format;
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;
use wasm_bindgen::JsCast;

const NEW_DOC: &str = "name: untitled\nsteps:\n  - key: first\n    agent: assistant\n    prompt: Describe what this step should do.\n";

/// Import a workflow file as a new document.
pub fn import_file(storage: Storage, editor: Editor, file: web_sys::File) {
    leptos::task::spawn_local(async move {
        match browser::read_file(&file).await {
            Ok(t) => {
                let name = text::name_with_extension(&file.name(), &t);
                storage.new_doc(name.clone(), t);
                editor.notices.info(format!("Imported {name}."));
            }
            Err(e) => editor
                .notices
                .error(format!("Could not read {}: {e}", file.name())),
        }
    });
}

fn export(d: Editor, kind: &str) {
    let a = d.analyze_now();
    let stem = d.name.with_untracked(|n| text::stem(n).to_owned());
    let Some(wf) = a.workflow() else {
        d.notices
            .error("The text does not parse yet; fix the syntax error to export.");
        return;
    };
    let graph = a.analysis.graph();
    let (file, mime, body) = match kind {
        "yaml" if a.format == Format::Yaml => (
            format!("{stem}.yaml"),
            "application/yaml",
            d.text.get_untracked(),
        ),
        "yaml" => (
            format!("{stem}.yaml"),
            "application/yaml",
            emit::to_yaml(wf),
        ),
        "json" if a.format == Format::Json => (
            format!("{stem}.json"),
            "application/json",
            d.text.get_untracked(),
        ),
        "json" => (
            format!("{stem}.json"),
            "application/json",
            emit::to_json(wf),
        ),
        "mermaid" | "dot" => {
            let Some(g) = graph else {
                d.notices.error("The dependency graph has a cycle or a missing step; fix it to export the graph.");
                return;
            };
            if kind == "mermaid" {
                (format!("{stem}.mmd"), "text/plain", g.to_mermaid(wf))
            } else {
                (format!("{stem}.dot"), "text/vnd.graphviz", g.to_dot(wf))
            }
        }
        _ => return,
    };
    match browser::download(&file, mime, &body) {
        Ok(()) => d.notices.info(format!("Exported {file}.")),
        Err(e) => d.notices.error(format!("Export failed: {e}")),
    }
}

pub fn toolbar() -> AnyView {
    let d = use_editor();
    let storage = use_storage();
    let runs = use_runs();
    let file_input = ElRef::new();
    let unsaved = move || {
        storage
            .saved_text
            .with(|s| d.text.with(|t| s.as_deref() != Some(t.as_str())))
    };
    let saving_possible =
        move || matches!(storage.status.get(), crate::documents::StorageStatus::Ready);
    let server_ok = move || runs.server_connected();
    let valid = move || d.analyzed.with(|a| a.analysis.report.valid);
    let on_file = move |ev: ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(f) = input.files().and_then(|l| l.get(0)) {
            import_file(storage, d, f);
        }
        input.set_value("");
    };
    let menu = ElRef::new();
    let item = move |label: &'static str, testid: &'static str, kind: &'static str| {
        el("BUTTON")
            .attr("role", "menuitem")
            .attr("data-testid", testid)
            .on_click(move |_| {
                export(d, kind);
                if let Some(m) = menu.get() {
                    let _ = m.remove_attribute("open");
                }
            })
            .text(label)
    };
    elc("HEADER", "toolbar")
        .child(
            elc("H1", "brand")
                .text("ax")
                .child(el("SPAN").text(" designer")),
        )
        .child(
            elc("DIV", "doc-name")
                .attr(
                    "title",
                    "The document's name decides YAML or JSON by its extension",
                )
                .child(
                    elc("SPAN", "name")
                        .attr("data-testid", "doc-name")
                        .text_dyn(move || d.name.get()),
                )
                .child(
                    elc("SPAN", "unsaved")
                        .class_dyn("hidden", move || !unsaved())
                        .attr("title", "Changed since the last save")
                        .text("●"),
                ),
        )
        .child(
            elc("DIV", "group")
                .child(
                    el("BUTTON")
                        .on_click(move |_| storage.new_doc("untitled.yaml".into(), NEW_DOC.into()))
                        .attr("data-testid", "new")
                        .attr("title", "New document")
                        .text("New"),
                )
                .child(
                    el("BUTTON")
                        .on_click(move |_| {
                            if let Some(i) = file_input.get() {
                                i.click();
                            }
                        })
                        .attr("data-testid", "import")
                        .attr(
                            "title",
                            "Open a YAML or JSON file (or drop one on the editor)",
                        )
                        .text("Import…"),
                )
                .child(
                    elc("INPUT", "hidden")
                        .attr("type", "file")
                        .attr(
                            "accept",
                            ".yaml,.yml,.json,application/json,application/yaml,text/yaml",
                        )
                        .node_ref(file_input)
                        .on(ev::change, on_file)
                        .attr("aria-label", "Import a workflow file")
                        .attr("tabindex", "-1"),
                )
                .child(
                    el("BUTTON")
                        .attr("data-testid", "save")
                        .on_click(move |_| storage.save())
                        .flag_dyn("disabled", move || !saving_possible())
                        .attr("title", "Save a version in this browser (Ctrl+S)")
                        .text("Save"),
                )
                .child(
                    elc("DETAILS", "menu")
                        .node_ref(menu)
                        .child(
                            el("SUMMARY")
                                .attr("data-testid", "export")
                                .attr("title", "Download the workflow or its graph")
                                .text("Export"),
                        )
                        .child(
                            elc("DIV", "menu-items")
                                .attr("role", "menu")
                                .child(item("YAML", "export-yaml", "yaml"))
                                .child(item("JSON", "export-json", "json"))
                                .child(item("Mermaid", "export-mermaid", "mermaid"))
                                .child(item("Graphviz DOT", "export-dot", "dot")),
                        ),
                ),
        )
        .child(
            elc("DIV", "group")
                .attr("role", "group")
                .attr("aria-label", "Edit")
                .child(
                    el("BUTTON")
                        .attr("data-testid", "undo")
                        .on_click(move |_| d.undo())
                        .flag_dyn("disabled", move || d.history.get().undo == 0)
                        .attr(
                            "title",
                            "Undo the last change, typed or made in the form or graph (Ctrl+Z)",
                        )
                        .text("Undo"),
                )
                .child(
                    el("BUTTON")
                        .attr("data-testid", "redo")
                        .on_click(move |_| d.redo())
                        .flag_dyn("disabled", move || d.history.get().redo == 0)
                        .attr("title", "Redo (Ctrl+Shift+Z)")
                        .text("Redo"),
                )
                .child(
                    el("BUTTON")
                        .attr("data-testid", "find")
                        .on_click(move |_| {
                            d.with_host(|h| h.open_search());
                        })
                        .attr(
                            "title",
                            "Find and replace in the text (Ctrl+F in the editor)",
                        )
                        .text("Find"),
                ),
        )
        .child(
            elc("DIV", "group run-group")
                .child(
                    elc("BUTTON", "primary")
                        .attr("data-testid", "run-local")
                        .on_click(move |_| runs.start_local())
                        .flag_dyn("disabled", move || !valid() || runs.busy.get())
                        .attr(
                            "title",
                            "Dry-run in this browser with a simulated provider (Ctrl+Enter)",
                        )
                        .text("▶ Dry run"),
                )
                .child(
                    el("BUTTON")
                        .attr("data-testid", "run-server")
                        .on_click(move |_| runs.start_server())
                        .flag_dyn("disabled", move || {
                            !valid() || !server_ok() || runs.busy.get()
                        })
                        .attr_str_dyn("title", move || {
                            if server_ok() {
                                "Run on the ax server with real providers"
                            } else {
                                "No ax server is connected"
                            }
                        })
                        .text("Run on server"),
                ),
        )
        .into_any()
}

/// The element an event came from, as a concrete type.
pub fn event_target<T: JsCast>(ev: &ev::Event) -> T {
    ev.target().expect("event target").unchecked_into()
}
