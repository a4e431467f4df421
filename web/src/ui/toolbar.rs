//! The top bar: the document, saving, importing and exporting, and running.

use crate::browser;
use crate::runs::use_runs;
use crate::state::{Designer, ServerStatus, StorageStatus, use_designer};
use crate::text;
use ax_core::emit;
use ax_core::parse::Format;
use leptos::ev;
use leptos::prelude::*;
use wasm_bindgen::JsCast;

const NEW_DOC: &str = "name: untitled\nsteps:\n  - key: first\n    agent: assistant\n    prompt: Describe what this step should do.\n";

/// Import a workflow file as a new document.
pub fn import_file(d: Designer, file: web_sys::File) {
    leptos::task::spawn_local(async move {
        match browser::read_file(&file).await {
            Ok(t) => {
                let name = text::name_with_extension(&file.name(), &t);
                d.new_doc(name.clone(), t);
                d.info(format!("Imported {name}."));
            }
            Err(e) => d.error(format!("Could not read {}: {e}", file.name())),
        }
    });
}

fn export(d: Designer, kind: &str) {
    let a = d.analyze_now();
    let stem = d.name.with_untracked(|n| text::stem(n).to_owned());
    let Some(wf) = a.workflow() else {
        d.error("The text does not parse yet; fix the syntax error to export.");
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
                d.error("The dependency graph has a cycle or a missing step; fix it to export the graph.");
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
        Ok(()) => d.info(format!("Exported {file}.")),
        Err(e) => d.error(format!("Export failed: {e}")),
    }
}

#[component]
pub fn Toolbar() -> impl IntoView {
    let d = use_designer();
    let runs = use_runs();
    let file_input = NodeRef::<leptos::html::Input>::new();
    let unsaved = move || {
        d.saved_text
            .with(|s| d.text.with(|t| s.as_deref() != Some(t.as_str())))
    };
    let saving_possible = move || matches!(d.storage.get(), StorageStatus::Ready);
    let server_ok = move || matches!(d.server.get(), ServerStatus::Connected { .. });
    let valid = move || d.analyzed.with(|a| a.analysis.report.valid);
    let on_file = move |ev: ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(f) = input.files().and_then(|l| l.get(0)) {
            import_file(d, f);
        }
        input.set_value("");
    };
    let menu = NodeRef::<leptos::html::Details>::new();
    let pick = move |kind: &'static str| {
        move |_| {
            export(d, kind);
            if let Some(m) = menu.get() {
                m.set_open(false);
            }
        }
    };
    view! {
        <header class="toolbar">
            <h1 class="brand">"ax"<span>" designer"</span></h1>
            <div class="doc-name" title="The document's name decides YAML or JSON by its extension">
                <span class="name" data-testid="doc-name">{move || d.name.get()}</span>
                <span class="unsaved" class:hidden=move || !unsaved() title="Changed since the last save">"●"</span>
            </div>
            <div class="group">
                <button on:click=move |_| d.new_doc("untitled.yaml".into(), NEW_DOC.into()) data-testid="new" title="New document">"New"</button>
                <button on:click=move |_| { if let Some(i) = file_input.get() { i.click(); } } data-testid="import" title="Open a YAML or JSON file (or drop one on the editor)">"Import…"</button>
                <input type="file" class="hidden" accept=".yaml,.yml,.json,application/json,application/yaml,text/yaml" node_ref=file_input on:change=on_file aria-label="Import a workflow file" tabindex="-1" />
                <button data-testid="save" on:click=move |_| d.save() disabled=move || !saving_possible() title="Save a version in this browser (Ctrl+S)">"Save"</button>
                <details class="menu" node_ref=menu>
                    <summary data-testid="export" title="Download the workflow or its graph">"Export"</summary>
                    <div class="menu-items" role="menu">
                        <button role="menuitem" data-testid="export-yaml" on:click=pick("yaml")>"YAML"</button>
                        <button role="menuitem" data-testid="export-json" on:click=pick("json")>"JSON"</button>
                        <button role="menuitem" data-testid="export-mermaid" on:click=pick("mermaid")>"Mermaid"</button>
                        <button role="menuitem" data-testid="export-dot" on:click=pick("dot")>"Graphviz DOT"</button>
                    </div>
                </details>
            </div>
            <div class="group run-group">
                <button class="primary" data-testid="run-local" on:click=move |_| runs.start_local() disabled=move || !valid() || runs.busy.get() title="Dry-run in this browser with a simulated provider (Ctrl+Enter)">
                    "▶ Dry run"
                </button>
                <button data-testid="run-server" on:click=move |_| runs.start_server() disabled=move || !valid() || !server_ok() || runs.busy.get()
                    title=move || if server_ok() { "Run on the ax server with real providers".to_owned() } else { "No ax server is connected".to_owned() }>
                    "Run on server"
                </button>
            </div>
        </header>
    }
}

/// The element an event came from, as a concrete type.
pub fn event_target<T: JsCast>(ev: &ev::Event) -> T {
    ev.target().expect("event target").unchecked_into()
}
