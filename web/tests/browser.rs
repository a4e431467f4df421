//! Browser tests of the designer, in headless Chromium:
//! `RUSTUP_TOOLCHAIN=ax-wasm wasm-pack test --headless --chrome --mode no-install web`.
//!
//! One binary with sections: components (mounted into a test div and driven
//! through the DOM), the local run driver, IndexedDB (a real database per test,
//! deleted afterwards), and the Rust API the page uses.
#![cfg(target_arch = "wasm32")]

use ax_core::checkpoint::CheckpointFile;
use ax_core::{Event, ExecutionState, Options, analyze, edit};
use ax_web::browser::{perf_now, sleep};
use ax_web::dryrun::SimSettings;
use ax_web::local_run::LocalRun;
use ax_web::run_view::RunView;
use ax_web::store::{CheckpointRecord, Store};
use ax_web::{Config, Designer};
use ax_web::{layout, text};
use leptos::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

// ---- Helpers ----

fn document() -> web_sys::Document {
    web_sys::window()
        .and_then(|w| w.document())
        .expect("document")
}

fn fresh_div() -> web_sys::HtmlElement {
    let div: web_sys::HtmlElement = document()
        .create_element("div")
        .expect("div")
        .unchecked_into();
    div.style().set_property("width", "1366px").ok();
    div.style().set_property("height", "800px").ok();
    document()
        .body()
        .expect("body")
        .append_child(&div)
        .expect("append");
    div
}

fn unique(name: &str) -> String {
    format!("ax-test-{name}-{}", (js_sys::Math::random() * 1e12) as u64)
}

async fn until(what: &str, ms: f64, f: impl Fn() -> bool) {
    let start = perf_now();
    while !f() {
        if perf_now() - start > ms {
            panic!("timed out after {ms} ms waiting for {what}");
        }
        sleep(15).await;
    }
}

fn q(root: &web_sys::Element, sel: &str) -> Option<web_sys::Element> {
    root.query_selector(sel).ok().flatten()
}

fn qa(root: &web_sys::Element, sel: &str) -> Vec<web_sys::Element> {
    let list = root.query_selector_all(sel).expect("selector");
    (0..list.length())
        .filter_map(|i| list.item(i))
        .filter_map(|n| n.dyn_into().ok())
        .collect()
}

fn fire(el: &web_sys::Element, kind: &str) {
    let init = web_sys::EventInit::new();
    init.set_bubbles(true);
    let ev = web_sys::Event::new_with_event_init_dict(kind, &init).expect("event");
    el.dispatch_event(&ev).expect("dispatch");
}

fn click(el: &web_sys::Element) {
    let init = web_sys::MouseEventInit::new();
    init.set_bubbles(true);
    init.set_button(0);
    let ev = web_sys::MouseEvent::new_with_mouse_event_init_dict("click", &init).expect("click");
    el.dispatch_event(&ev).expect("dispatch");
}

/// The code editor's JavaScript object (`AxEditor`, on its element).
fn cm(root: &web_sys::Element) -> wasm_bindgen::JsValue {
    let el = q(root, "[data-testid=editor]").expect("editor");
    js_sys::Reflect::get(&el, &"axEditor".into()).expect("axEditor")
}

/// Call a method of the code editor.
fn cm_call(
    root: &web_sys::Element,
    method: &str,
    args: &[wasm_bindgen::JsValue],
) -> wasm_bindgen::JsValue {
    let editor = cm(root);
    let f: js_sys::Function = js_sys::Reflect::get(&editor, &method.into())
        .expect("method")
        .unchecked_into();
    let list = js_sys::Array::new();
    for a in args {
        list.push(a);
    }
    f.apply(&editor, &list).expect("call")
}

/// The editor's text.
fn editor_text(root: &web_sys::Element) -> String {
    cm_call(root, "text", &[]).as_string().unwrap_or_default()
}

/// Replace the editor's text (one edit, as a paste would).
fn type_text(root: &web_sys::Element, value: &str) {
    cm_call(root, "replaceAll", &[value.into()]);
}

/// Put the cursor at a UTF-16 offset.
fn cursor_at(root: &web_sys::Element, pos: u32) {
    cm_call(root, "select", &[pos.into(), pos.into()]);
}

/// Type at the cursor, as keystrokes do.
fn type_here(root: &web_sys::Element, text: &str) {
    cm_call(root, "typeText", &[text.into()]);
}

/// A key press on the focused element (CodeMirror reads `keydown`).
fn press(key: &str) {
    press_with(key, false);
}

fn press_with(key: &str, ctrl: bool) {
    let init = web_sys::KeyboardEventInit::new();
    init.set_key(key);
    init.set_ctrl_key(ctrl);
    init.set_bubbles(true);
    init.set_cancelable(true);
    let ev =
        web_sys::KeyboardEvent::new_with_keyboard_event_init_dict("keydown", &init).expect("key");
    if let Some(el) = document().active_element() {
        el.dispatch_event(&ev).expect("dispatch");
    }
}

fn set_input(el: &web_sys::Element, value: &str) {
    if let Some(i) = el.dyn_ref::<web_sys::HtmlInputElement>() {
        i.set_value(value);
    } else if let Some(t) = el.dyn_ref::<web_sys::HtmlTextAreaElement>() {
        t.set_value(value);
    }
    fire(el, "change");
}

struct Mounted<M: leptos::tachys::view::Mountable> {
    designer: Designer,
    root: web_sys::Element,
    handle: Option<leptos::mount::UnmountHandle<M>>,
    db: String,
}

fn mount(name: &str, source: &str) -> Mounted<impl leptos::tachys::view::Mountable> {
    let div = fresh_div();
    let db = unique("ui");
    let config = Config {
        db_name: db.clone(),
        probe_server: false,
        initial: Some((name.to_owned(), source.to_owned())),
        ..Config::default()
    };
    let (designer, handle) = ax_web::mount_to(div.clone(), config);
    Mounted {
        designer,
        root: div.unchecked_into(),
        handle: Some(handle),
        db,
    }
}

impl<M: leptos::tachys::view::Mountable> Mounted<M> {
    async fn ready(&self) {
        let d = self.designer;
        until("storage", 5000.0, move || {
            d.storage.doc_id.get_untracked().is_some()
        })
        .await;
    }
    async fn finish(mut self) {
        self.designer.storage.close();
        drop(self.handle.take());
        self.root.remove();
        delete_db(&self.db).await;
    }
    fn nodes(&self) -> Vec<web_sys::Element> {
        qa(&self.root, "[data-testid=graph] [data-step]")
    }
    fn node(&self, key: &str) -> web_sys::Element {
        q(
            &self.root,
            &format!("[data-testid=graph] [data-step=\"{key}\"]"),
        )
        .unwrap_or_else(|| panic!("no node {key}"))
    }
    fn by_id(&self, id: &str) -> web_sys::Element {
        q(&self.root, &format!("[data-testid=\"{id}\"]"))
            .unwrap_or_else(|| panic!("no [data-testid={id}]"))
    }
}

/// Let queued microtasks (reactive effects) run.
async fn microtasks() {
    for _ in 0..3 {
        let _ = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(
            &wasm_bindgen::JsValue::NULL,
        ))
        .await;
    }
}

/// Wait for the browser's next animation frame (after style, layout and paint of this one).
async fn next_frame() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.request_animation_frame(&resolve);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

async fn delete_db(name: &str) {
    // Do not hang a test on a blocked delete.
    let name = name.to_owned();
    let done = Rc::new(RefCell::new(false));
    let d2 = done.clone();
    leptos::task::spawn_local(async move {
        let _ = Store::delete_database(&name).await;
        *d2.borrow_mut() = true;
    });
    let start = perf_now();
    while !*done.borrow() && perf_now() - start < 2000.0 {
        sleep(10).await;
    }
}

const CYCLE: &str = "name: loop\nsteps:\n  - key: a\n    agent: x\n    prompt: go\n    dependencies: [c]\n  - key: b\n    agent: x\n    prompt: go\n    dependencies: [a]\n  - key: c\n    agent: x\n    prompt: go\n    dependencies: [b]\n";

fn big_workflow(n: usize) -> String {
    let mut s = String::from("# generated\nname: big\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  - key: s{i}\n    agent: agent-{}\n    prompt: \"Step {i}: improve the draft{}\"\n",
            i % 7,
            if i > 0 {
                format!(" {{{{s{}.result}}}}", i - 1)
            } else {
                String::new()
            }
        ));
        if i > 0 {
            let extra = if i > 4 {
                format!(", s{}", i / 2)
            } else {
                String::new()
            };
            s.push_str(&format!("    dependencies: [s{}{extra}]\n", i - 1));
        }
    }
    s
}

// ---- Components ----

#[wasm_bindgen_test]
async fn a_valid_workflow_draws_its_graph() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    until("graph nodes", 3000.0, || m.nodes().len() == 4).await;
    let keys: Vec<String> = m
        .nodes()
        .iter()
        .filter_map(|n| n.get_attribute("data-step"))
        .collect();
    for k in ["collect", "draft", "review", "publish"] {
        assert!(keys.iter().any(|x| x == k), "{keys:?}");
    }
    assert!(
        m.nodes()
            .iter()
            .all(|n| n.get_attribute("data-state").as_deref() == Some("pending"))
    );
    assert_eq!(qa(&m.root, "[data-testid=graph] .edge").len(), 4);
    assert_eq!(qa(&m.root, "[data-testid=problems] [data-code]").len(), 0);
    assert!(
        m.by_id("problem-summary")
            .text_content()
            .unwrap_or_default()
            .contains("Valid")
    );
    m.finish().await;
}

#[wasm_bindgen_test]
async fn a_cycle_is_listed_underlined_and_linked_to_the_text() {
    let m = mount("loop.yaml", text::STARTER);
    m.ready().await;
    type_text(&m.root, CYCLE);
    until("cycle problem", 3000.0, || {
        q(&m.root, "[data-testid=problems] [data-code=cycle]").is_some()
    })
    .await;
    let problem = analyze(CYCLE, &Options::default())
        .report
        .errors
        .into_iter()
        .find(|p| p.code == ax_core::Code::Cycle)
        .expect("cycle");
    let line = problem.line.expect("line");
    // Drawn in the text: a squiggle and a gutter marker.
    until("squiggle", 3000.0, || {
        q(&m.root, ".cm-lintRange-error").is_some() && q(&m.root, ".cm-lint-marker-error").is_some()
    })
    .await;
    // Clicking the problem selects its text in the editor and focuses it.
    let item = q(&m.root, "[data-testid=problems] [data-code=cycle]").expect("item");
    assert!(
        item.text_content()
            .unwrap_or_default()
            .contains(&format!("{line}:"))
    );
    click(&q(&item, "button").expect("problem button"));
    let (start, _) = text::selection_for(
        CYCLE,
        line,
        problem.column.expect("column"),
        problem.end_line.zip(problem.end_column),
    );
    let range: js_sys::Array = cm_call(&m.root, "selectionRange", &[]).unchecked_into();
    assert_eq!(range.get(0).as_f64(), Some(f64::from(start)));
    let active = document().active_element().expect("focus");
    assert!(
        active.closest(".cm-editor").ok().flatten().is_some(),
        "the editor has focus"
    );
    // The other way: the cursor on the problem's text marks it in the list.
    cursor_at(&m.root, start + 1);
    until("the problem under the cursor is current", 2000.0, || {
        q(
            &m.root,
            "[data-testid=problems] li.current[data-code=cycle]",
        )
        .is_some()
    })
    .await;
    cursor_at(&m.root, 0);
    until("no current problem at the top", 2000.0, || {
        q(&m.root, "[data-testid=problems] li.current").is_none()
    })
    .await;
    // The graph still shows the three steps, with the closing edge flagged.
    until("nodes", 2000.0, || m.nodes().len() == 3).await;
    assert!(q(&m.root, "[data-testid=graph] .edge.cyclic").is_some());
    m.finish().await;
}

#[wasm_bindgen_test]
async fn clicking_a_node_opens_its_form_and_edits_write_back() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    until("nodes", 3000.0, || m.nodes().len() == 4).await;
    click(&m.node("draft"));
    until("form", 2000.0, || {
        q(&m.root, "[data-testid=step-form]").is_some()
    })
    .await;
    let agent = m.by_id("field-agent");
    assert_eq!(
        agent.unchecked_ref::<web_sys::HtmlInputElement>().value(),
        "writer"
    );
    assert!(m.node("draft").class_list().contains("selected"));
    set_input(&agent, "editor-in-chief");
    let text = || editor_text(&m.root);
    until("text edited", 2000.0, || {
        text().contains("agent: editor-in-chief")
    })
    .await;
    // Comments and the rest of the file are untouched.
    assert!(text().starts_with("# A workflow: steps send prompts"));
    assert_eq!(
        text().matches("agent: writer").count(),
        1,
        "only the draft step changed"
    );
    // Renaming the key updates dependencies and placeholders.
    set_input(&m.by_id("field-key"), "write");
    until("renamed", 2000.0, || text().contains("key: write\n")).await;
    let wf = analyze(&text(), &Options::default())
        .workflow()
        .cloned()
        .expect("workflow");
    assert_eq!(
        wf.step("publish").map(|s| s.dependencies.clone()),
        Some(vec!["write".to_owned(), "review".to_owned()])
    );
    assert!(
        wf.step("review")
            .is_some_and(|s| s.prompt.contains("{{write.result}}"))
    );
    until("node renamed", 2000.0, || {
        q(&m.root, "[data-step=write]").is_some()
    })
    .await;
    // Optional and timeout.
    click(&m.by_id("field-optional"));
    let opt = m.by_id("field-optional");
    opt.unchecked_ref::<web_sys::HtmlInputElement>()
        .set_checked(true);
    fire(&opt, "change");
    until("optional", 2000.0, || text().contains("optional: true")).await;
    set_input(&m.by_id("field-timeout"), "45000");
    until("timeout", 2000.0, || text().contains("timeoutMs: 45000")).await;
    assert!(analyze(&text(), &Options::default()).report.valid);
    m.finish().await;
}

#[wasm_bindgen_test]
async fn connect_mode_adds_dependencies_and_refuses_cycles() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    until("nodes", 3000.0, || m.nodes().len() == 4).await;
    let before = editor_text(&m.root);
    click(&m.by_id("connect"));
    // collect → publish would make collect depend on publish: a cycle.
    click(&m.node("publish"));
    click(&m.node("collect"));
    until("refusal", 2000.0, || {
        q(&m.root, "[data-testid=notice]")
            .is_some_and(|n| n.text_content().unwrap_or_default().contains("cycle"))
    })
    .await;
    let notice = m.by_id("notice").text_content().unwrap_or_default();
    assert!(notice.contains("collect → publish"), "{notice}");
    assert_eq!(editor_text(&m.root), before);
    // review may depend on collect.
    click(&m.node("collect"));
    click(&m.node("review"));
    until("edge added", 2000.0, || {
        let wf = analyze(&editor_text(&m.root), &Options::default())
            .workflow()
            .cloned();
        wf.and_then(|w| {
            w.step("review")
                .map(|s| s.dependencies.contains(&"collect".to_owned()))
        })
        .unwrap_or(false)
    })
    .await;
    until("edge drawn", 2000.0, || {
        qa(&m.root, "[data-testid=graph] .edge").len() == 5
    })
    .await;
    // Select the new edge and remove it.
    let edge = q(&m.root, ".edge[data-from=collect][data-to=review]").expect("edge");
    click(&m.by_id("connect"));
    click(&edge);
    until("remove button", 2000.0, || {
        q(&m.root, "[data-testid=remove-edge]").is_some()
    })
    .await;
    click(&m.by_id("remove-edge"));
    until("edge removed", 2000.0, || {
        qa(&m.root, "[data-testid=graph] .edge").len() == 4
    })
    .await;
    m.finish().await;
}

#[wasm_bindgen_test]
async fn adding_and_deleting_steps_from_the_graph() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    until("nodes", 3000.0, || m.nodes().len() == 4).await;
    click(&m.node("publish"));
    click(&m.by_id("add-step"));
    until("new node", 2000.0, || m.nodes().len() == 5).await;
    let wf = analyze(&editor_text(&m.root), &Options::default())
        .workflow()
        .cloned()
        .expect("workflow");
    assert_eq!(
        wf.step("step").map(|s| s.dependencies.clone()),
        Some(vec!["publish".to_owned()])
    );
    // The new step's form is open; delete it (two clicks).
    until("form", 2000.0, || {
        q(&m.root, "[data-testid=delete-step]").is_some()
    })
    .await;
    click(&m.by_id("delete-step"));
    until("confirmation", 2000.0, || {
        q(&m.root, "[data-testid=confirm-delete]").is_some()
    })
    .await;
    click(&m.by_id("confirm-delete"));
    until("node removed", 2000.0, || m.nodes().len() == 4).await;
    assert_eq!(editor_text(&m.root), text::STARTER);
    m.finish().await;
}

#[wasm_bindgen_test]
async fn json_documents_are_detected_by_name() {
    let json = ax_core::emit::to_json(
        analyze(text::STARTER, &Options::default())
            .workflow()
            .expect("wf"),
    );
    let m = mount("notes.json", &json);
    m.ready().await;
    until("nodes", 3000.0, || m.nodes().len() == 4).await;
    assert!(
        m.by_id("analysis-info")
            .text_content()
            .unwrap_or_default()
            .starts_with("JSON")
    );
    click(&m.node("review"));
    until("form", 2000.0, || {
        q(&m.root, "[data-testid=field-agent]").is_some()
    })
    .await;
    set_input(&m.by_id("field-agent"), "critic");
    until("edited", 2000.0, || {
        editor_text(&m.root).contains("\"agent\": \"critic\"")
    })
    .await;
    assert!(
        serde_json::from_str::<serde_json::Value>(&editor_text(&m.root)).is_ok(),
        "still JSON"
    );
    m.finish().await;
}

#[wasm_bindgen_test]
async fn a_file_dropped_on_the_editor_opens_as_a_document() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    let json = "{\"name\": \"dropped\", \"steps\": [{\"key\": \"only\", \"agent\": \"a\", \"prompt\": \"p\"}]}";
    let parts = js_sys::Array::of1(&json.into());
    let file = web_sys::File::new_with_str_sequence(&parts, "dropped.json").expect("file");
    let transfer = web_sys::DataTransfer::new().expect("transfer");
    transfer.items().add_with_file(&file).expect("add");
    let init = web_sys::DragEventInit::new();
    init.set_bubbles(true);
    init.set_data_transfer(Some(&transfer));
    let ev = web_sys::DragEvent::new_with_event_init_dict("drop", &init).expect("drop");
    q(&m.root, ".cm-content")
        .expect("editor")
        .dispatch_event(&ev)
        .expect("dispatch");
    until("the dropped document", 3000.0, || {
        m.by_id("doc-name").text_content().as_deref() == Some("dropped.json")
    })
    .await;
    until("its text", 3000.0, || editor_text(&m.root) == json).await;
    until("its graph", 2000.0, || m.nodes().len() == 1).await;
    m.finish().await;
}

#[wasm_bindgen_test]
async fn exports_download_yaml_json_mermaid_and_dot() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    // Catch the Blob that a download would save.
    let url =
        js_sys::Reflect::get(&web_sys::window().expect("window"), &"URL".into()).expect("URL");
    let original = js_sys::Reflect::get(&url, &"createObjectURL".into()).expect("createObjectURL");
    let catcher =
        js_sys::Function::new_with_args("b", "window.__axBlob = b; return 'data:text/plain,';");
    js_sys::Reflect::set(&url, &"createObjectURL".into(), &catcher).expect("patch");
    let mut texts = Vec::new();
    for kind in ["yaml", "json", "mermaid", "dot"] {
        click(&m.by_id(&format!("export-{kind}")));
        let blob: web_sys::Blob =
            js_sys::Reflect::get(&web_sys::window().expect("window"), &"__axBlob".into())
                .expect("blob")
                .unchecked_into();
        let text = wasm_bindgen_futures::JsFuture::from(blob.text())
            .await
            .expect("text")
            .as_string()
            .unwrap_or_default();
        texts.push(text);
    }
    js_sys::Reflect::set(&url, &"createObjectURL".into(), &original).expect("restore");
    assert_eq!(texts[0], text::STARTER, "YAML documents export as written");
    let json: serde_json::Value = serde_json::from_str(&texts[1]).expect("json");
    assert_eq!(json["steps"].as_array().map(Vec::len), Some(4));
    assert!(
        texts[2].contains("collect") && texts[2].contains("-->"),
        "{}",
        texts[2]
    );
    assert!(
        texts[3].starts_with("digraph") && texts[3].contains("->"),
        "{}",
        texts[3]
    );
    m.finish().await;
}

#[wasm_bindgen_test]
async fn a_dry_run_colours_the_graph_until_completed() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    until("nodes", 3000.0, || m.nodes().len() == 4).await;
    click(&m.by_id("tab-run"));
    until("run panel", 2000.0, || {
        q(&m.root, "[data-testid=latency]").is_some()
    })
    .await;
    set_input(&m.by_id("latency"), "0");
    click(&m.by_id("run-local"));
    until("completed", 5000.0, || {
        m.nodes()
            .iter()
            .all(|n| n.get_attribute("data-state").as_deref() == Some("completed"))
    })
    .await;
    until("state", 2000.0, || {
        m.by_id("run-state").text_content().as_deref() == Some("completed")
    })
    .await;
    assert!(!qa(&m.root, "[data-testid=checkpoints] li").is_empty());
    let steps = qa(&m.root, "[data-testid=run-steps] [data-step]");
    assert_eq!(steps.len(), 4);
    // One click on a node (the Run tab open): its rendered prompt, output,
    // figures and attempts.
    click(&m.node("draft"));
    until("the step's details", 2000.0, || {
        q(
            &m.root,
            "[data-testid=step-detail] [data-testid=step-output]",
        )
        .is_some()
    })
    .await;
    let prompt = m.by_id("step-prompt").text_content().unwrap_or_default();
    assert!(
        prompt.contains("Write release notes from these changes"),
        "{prompt}"
    );
    assert!(!prompt.contains("{{collect.result}}"), "rendered: {prompt}");
    let output = m.by_id("step-output").text_content().unwrap_or_default();
    assert!(output.contains("dry run"), "{output}");
    let figures = m.by_id("step-figures").text_content().unwrap_or_default();
    assert!(
        figures.contains("tokens") || figures.contains("Tokens"),
        "{figures}"
    );
    assert_eq!(qa(&m.root, "[data-testid=step-attempts] tbody tr").len(), 1);
    m.finish().await;
}

#[wasm_bindgen_test]
async fn pause_resume_and_cancel_buttons_control_the_run() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    click(&m.by_id("tab-run"));
    until("run panel", 2000.0, || {
        q(&m.root, "[data-testid=latency]").is_some()
    })
    .await;
    set_input(&m.by_id("latency"), "120");
    click(&m.by_id("run-local"));
    until("pause enabled", 3000.0, || {
        q(&m.root, "[data-testid=pause]")
            .is_some_and(|b| !b.unchecked_ref::<web_sys::HtmlButtonElement>().disabled())
    })
    .await;
    click(&m.by_id("pause"));
    until("paused", 3000.0, || {
        m.by_id("run-state").text_content().as_deref() == Some("paused")
    })
    .await;
    // The attempt in flight still finishes.
    until("quiet", 3000.0, || {
        m.nodes()
            .iter()
            .all(|n| n.get_attribute("data-state").as_deref() != Some("running"))
    })
    .await;
    let done = m
        .nodes()
        .iter()
        .filter(|n| n.get_attribute("data-state").as_deref() == Some("completed"))
        .count();
    sleep(400).await;
    let still = m
        .nodes()
        .iter()
        .filter(|n| n.get_attribute("data-state").as_deref() == Some("completed"))
        .count();
    assert_eq!(done, still, "nothing runs while paused");
    click(&m.by_id("resume"));
    until("running", 2000.0, || {
        m.by_id("run-state").text_content().as_deref() == Some("running")
    })
    .await;
    click(&m.by_id("cancel"));
    until("cancelled", 3000.0, || {
        m.by_id("run-state").text_content().as_deref() == Some("cancelled")
    })
    .await;
    m.finish().await;
}

#[wasm_bindgen_test]
async fn a_dry_runs_answer_streams_into_the_running_steps_row() {
    let m = mount("stream.yaml", text::STARTER);
    m.ready().await;
    click(&m.by_id("tab-run"));
    until("run panel", 2000.0, || {
        q(&m.root, "[data-testid=latency]").is_some()
    })
    .await;
    set_input(&m.by_id("latency"), "2000");
    click(&m.by_id("run-local"));
    let partial = || {
        q(&m.root, "li[data-state=running] [data-testid=live-text]")
            .and_then(|e| e.text_content())
            .filter(|t| !t.is_empty())
    };
    until("partial text of a running step", 5000.0, || {
        partial().is_some()
    })
    .await;
    let text = partial().unwrap_or_default();
    let row = q(&m.root, "li[data-state=running]").expect("running row");
    let key = row.get_attribute("data-step").unwrap_or_default();
    // Selected, its details show the answer so far too.
    click(&q(&row, "button").expect("row button"));
    until("live text in the details", 2000.0, || {
        q(&m.root, "[data-testid=step-detail] [data-testid=live-text]").is_some()
    })
    .await;
    // Once the step completes, its output (which the text began) replaces it.
    until("the step completed", 5000.0, || {
        q(
            &m.root,
            &format!("li[data-step={key}][data-state=completed]"),
        )
        .is_some()
    })
    .await;
    let output = m.by_id("step-output").text_content().unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        output.contains(lines[0]) && output.len() > text.len(),
        "{text:?} is part of {output:?}"
    );
    assert!(q(&m.root, "[data-testid=step-detail] [data-testid=live-text]").is_none());
    click(&m.by_id("cancel"));
    until("cancelled", 3000.0, || {
        m.by_id("run-state").text_content().as_deref() == Some("cancelled")
    })
    .await;
    m.finish().await;
}

#[wasm_bindgen_test]
async fn save_lists_the_document_and_keeps_a_version() {
    let m = mount("kept.yaml", text::STARTER);
    m.ready().await;
    click(&m.by_id("save"));
    until("saved", 3000.0, || {
        q(&m.root, "[data-testid=notice]")
            .is_some_and(|n| n.text_content().unwrap_or_default().contains("Saved"))
    })
    .await;
    click(&m.by_id("tab-documents"));
    until("drafts entry", 3000.0, || {
        q(&m.root, "[data-testid=drafts] [data-name=\"kept.yaml\"]").is_some()
    })
    .await;
    until("version", 3000.0, || {
        !qa(&m.root, "[data-testid=versions] li").is_empty()
    })
    .await;
    // An edit, then restore the saved version.
    type_text(&m.root, &format!("{}# more\n", text::STARTER));
    sleep(50).await;
    click(&m.by_id("restore-version"));
    until("restored", 3000.0, || editor_text(&m.root) == text::STARTER).await;
    m.finish().await;
}

/// Type 20 keys into a bare code editor holding `doc` (callbacks that do
/// nothing) at `at`: median, p90 and max milliseconds per key.
async fn editor_alone(doc: &str, format: ax_core::parse::Format, at: u32) -> [String; 3] {
    let bare = fresh_div();
    let noop = ax_web::editor_host::Callbacks {
        on_change: Box::new(|_| {}),
        on_edit: Box::new(|_| {}),
        on_cursor: Box::new(|_| {}),
        on_history: Box::new(|_, _| {}),
        on_drop_file: Box::new(|_| {}),
        complete: Box::new(|_, _| String::new()),
    };
    let host = ax_web::editor_host::EditorHost::new(&bare, doc, format, "bench", noop);
    host.select(at, at);
    sleep(2000).await;
    next_frame().await;
    let el: web_sys::Element = bare.clone().unchecked_into();
    let editor = js_sys::Reflect::get(&el, &"axEditor".into()).expect("axEditor");
    let type_text: js_sys::Function = js_sys::Reflect::get(&editor, &"typeText".into())
        .expect("typeText")
        .unchecked_into();
    let mut v = Vec::new();
    for _ in 0..20 {
        let t0 = perf_now();
        type_text.call1(&editor, &"x".into()).expect("type");
        v.push(perf_now() - t0);
        next_frame().await;
    }
    drop(host);
    bare.remove();
    v.sort_by(f64::total_cmp);
    [
        format!("{:.1}", v[v.len() / 2]),
        format!("{:.1}", v[v.len() * 9 / 10]),
        format!("{:.1}", v[v.len() - 1]),
    ]
}

/// The keystroke benchmark (BENCHMARKS.md, "The browser"): a key typed in a
/// prompt of a 1,000-step document, through the code editor, to the updated
/// analysis, diagnostics, graph and problem list, and to the next painted frame.
/// Figures are printed (`-- --nocapture keystroke`), not asserted: speed is a
/// benchmark, not a timed test.
#[wasm_bindgen_test]
async fn keystroke_at_a_thousand_steps() {
    let big = big_workflow(1000);
    let m = mount("big.yaml", &big);
    m.ready().await;
    until("nodes", 10_000.0, || m.nodes().len() == 1000).await;
    let d = m.designer;
    let at = big.find("improve the draft").expect("a prompt") as u32 + 7;
    cursor_at(&m.root, at);
    // Typing starts once the page has settled (the editor parses the rest of
    // the document in idle time after it opens).
    sleep(2000).await;
    next_frame().await;
    let mut samples = Vec::new();
    for _ in 0..20 {
        let before = d.editor.analyzed.get_untracked().generation;
        let t0 = perf_now();
        // The editor's update and our change listener (synchronous)…
        type_here(&m.root, "x");
        let typed = perf_now() - t0;
        // …validation (scheduled for the next tick), diagnostics and effects…
        d.editor.analyze_now();
        microtasks().await;
        let js = perf_now() - t0;
        assert_ne!(d.editor.analyzed.get_untracked().generation, before);
        // …and the browser's next frame (style, layout, paint).
        next_frame().await;
        samples.push((
            typed,
            d.editor.analyzed.get_untracked().millis,
            js,
            perf_now() - t0,
        ));
    }
    // The code editor alone (its update and the change handed to Rust, with
    // callbacks that do nothing), on this document and on a 4-step one: the
    // editor's own share of a keystroke, and whether it grows with the document.
    use ax_core::parse::Format;
    let alone_big = editor_alone(&big, Format::Yaml, at).await;
    let small_at = text::STARTER.find("List the notable").expect("prompt") as u32 + 4;
    let alone_small = editor_alone(text::STARTER, Format::Yaml, small_at).await;
    let json = ax_core::emit::to_json(
        analyze(&big, &Options::default())
            .workflow()
            .expect("valid"),
    );
    let json_at = json.find("improve the draft").expect("a prompt") as u32 + 7;
    let alone_json = editor_alone(&json, Format::Json, json_at).await;
    console_log!(
        "keystroke, the code editor alone (median / p90 / max ms): 1000 steps {:?}; 4 steps {:?}; 1000 steps as JSON {:?}",
        alone_big,
        alone_small,
        alone_json
    );
    let f = |i: usize| -> Vec<String> {
        let mut v: Vec<f64> = samples
            .iter()
            .map(|s| match i {
                0 => s.0,
                1 => s.1,
                2 => s.2,
                _ => s.3,
            })
            .collect();
        v.sort_by(f64::total_cmp);
        vec![
            format!("{:.1}", v[v.len() / 2]),
            format!("{:.1}", v[v.len() * 9 / 10]),
            format!("{:.1}", v[v.len() - 1]),
        ]
    };
    console_log!(
        "keystroke at 1000 steps ({} bytes), median / p90 / max ms: editor update {:?}; analysis {:?}; to every effect done {:?}; to the next painted frame {:?}",
        big.len(),
        f(0),
        f(1),
        f(2),
        f(3)
    );
    assert!(editor_text(&m.root).contains(&format!("improve{} the draft", "x".repeat(20))));
    assert_eq!(d.editor.text.get_untracked(), editor_text(&m.root));
    m.finish().await;
}

#[wasm_bindgen_test]
async fn completion_offers_upstream_steps_in_an_aria_listbox() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    // Inside a placeholder of `publish`: inputs and upstream steps.
    let t = editor_text(&m.root);
    let at = t.find("fixing {{review.result}}").expect("placeholder") + "fixing {{".len();
    let t2 = t.replacen("fixing {{review.result}}", "fixing {{", 1);
    type_text(&m.root, &t2);
    cursor_at(&m.root, at as u32);
    m.by_id("editor")
        .query_selector(".cm-content")
        .ok()
        .flatten()
        .map(|c| c.unchecked_into::<web_sys::HtmlElement>().focus());
    cm_call(&m.root, "startCompletion", &[]);
    until("the completion list", 3000.0, || {
        q(
            &m.root,
            ".cm-tooltip-autocomplete [role=listbox] [role=option]",
        )
        .is_some()
    })
    .await;
    let labels: Vec<String> = qa(&m.root, ".cm-tooltip-autocomplete [role=option]")
        .iter()
        .map(|o| o.text_content().unwrap_or_default())
        .collect();
    let has = |l: &str| labels.iter().any(|x| x.starts_with(l));
    assert!(
        has("review.result") && has("draft.result") && has("collect.result"),
        "{labels:?}"
    );
    assert!(has("version"), "the declared input: {labels:?}");
    assert!(!has("publish.result"), "not the step itself: {labels:?}");
    // The list is an ARIA listbox the content points into, and the keyboard moves in it.
    let content = q(&m.root, ".cm-content").expect("content");
    assert!(content.get_attribute("aria-activedescendant").is_some());
    assert_eq!(
        content.get_attribute("aria-autocomplete").as_deref(),
        Some("list")
    );
    press("ArrowDown");
    press("Enter");
    until("a completion applied", 2000.0, || {
        let t = editor_text(&m.root);
        t.contains("fixing {{") && t.contains(".result}}")
    })
    .await;
    m.finish().await;
}

#[wasm_bindgen_test]
async fn the_pages_text_follows_edits_with_any_characters() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    // Edits arrive as changes in UTF-16 offsets; the page's text is UTF-8.
    cursor_at(&m.root, 0);
    type_here(&m.root, "# é😀 naïve\n");
    let at = editor_text(&m.root).encode_utf16().count() as u32 - 1;
    cursor_at(&m.root, at);
    type_here(&m.root, " 日本");
    cm_call(&m.root, "select", &[2.into(), 5.into()]);
    type_here(&m.root, "ü");
    assert_eq!(m.designer.editor.text.get_untracked(), editor_text(&m.root));
    click(&m.by_id("undo"));
    assert_eq!(m.designer.editor.text.get_untracked(), editor_text(&m.root));
    m.finish().await;
}

#[wasm_bindgen_test]
async fn ctrl_f_opens_search_in_the_editor() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    if let Some(c) = q(&m.root, ".cm-content") {
        let _ = c.unchecked_into::<web_sys::HtmlElement>().focus();
    }
    press_with("f", true);
    until("the search panel", 2000.0, || {
        q(&m.root, ".cm-search input[name=search]").is_some()
    })
    .await;
    m.finish().await;
}

#[wasm_bindgen_test]
async fn the_graph_is_one_tab_stop_and_arrow_keys_move_between_steps() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    until("nodes", 3000.0, || m.nodes().len() == 4).await;
    // One node is reachable with Tab; the others are not in the tab order.
    let tabbable: Vec<String> = m
        .nodes()
        .iter()
        .filter(|n| n.get_attribute("tabindex").as_deref() == Some("0"))
        .filter_map(|n| n.get_attribute("data-step"))
        .collect();
    assert_eq!(tabbable, ["collect"]);
    let first = m.node("collect").unchecked_into::<web_sys::SvgElement>();
    first.focus().expect("focus");
    // collect → draft is the next level (columns or rows, whichever the layout chose).
    let vertical = m.designer.editor.vertical.get_untracked();
    press(if vertical { "ArrowDown" } else { "ArrowRight" });
    let active = || {
        document()
            .active_element()
            .and_then(|e| e.get_attribute("data-step"))
            .unwrap_or_default()
    };
    until("focus on the next step", 2000.0, || active() == "draft").await;
    // The tab stop follows.
    until("draft to be the tab stop", 2000.0, || {
        m.node("draft").get_attribute("tabindex").as_deref() == Some("0")
            && m.node("collect").get_attribute("tabindex").as_deref() == Some("-1")
    })
    .await;
    // Enter opens its form.
    press("Enter");
    until("the form", 2000.0, || {
        q(&m.root, "[data-testid=field-key]")
            .is_some_and(|k| k.unchecked_ref::<web_sys::HtmlInputElement>().value() == "draft")
    })
    .await;
    m.finish().await;
}

#[wasm_bindgen_test]
async fn undo_and_redo_cover_form_edits() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    until("nodes", 3000.0, || m.nodes().len() == 4).await;
    // A keystroke in the editor, then an edit through the form.
    cursor_at(&m.root, 0);
    type_here(&m.root, "# typed\n");
    let typed = editor_text(&m.root);
    click(&m.node("draft"));
    until("form", 2000.0, || {
        q(&m.root, "[data-testid=field-agent]").is_some()
    })
    .await;
    set_input(&m.by_id("field-agent"), "copywriter");
    until("edited", 2000.0, || {
        editor_text(&m.root).contains("agent: copywriter")
    })
    .await;
    // The cursor stayed where it was (after the typed comment).
    let range: js_sys::Array = cm_call(&m.root, "selectionRange", &[]).unchecked_into();
    assert_eq!(range.get(0).as_f64(), Some(8.0));
    // Undo (the toolbar's button) takes back the form's edit, then the typing.
    click(&m.by_id("undo"));
    until("form edit undone", 2000.0, || editor_text(&m.root) == typed).await;
    until("the form follows", 2000.0, || {
        m.by_id("field-agent")
            .unchecked_ref::<web_sys::HtmlInputElement>()
            .value()
            == "writer"
    })
    .await;
    click(&m.by_id("undo"));
    until("typing undone", 2000.0, || {
        editor_text(&m.root) == text::STARTER
    })
    .await;
    click(&m.by_id("redo"));
    click(&m.by_id("redo"));
    until("both redone", 2000.0, || {
        editor_text(&m.root).contains("agent: copywriter")
    })
    .await;
    assert!(editor_text(&m.root).starts_with("# typed\n"));
    // The page's copy of the text follows the editor's edit by edit.
    assert_eq!(m.designer.editor.text.get_untracked(), editor_text(&m.root));
    // A graph edit is one undo step too.
    click(&m.by_id("add-step"));
    until("added", 2000.0, || m.nodes().len() == 5).await;
    click(&m.by_id("undo"));
    until("removed again", 2000.0, || m.nodes().len() == 4).await;
    m.finish().await;
}

#[wasm_bindgen_test]
async fn two_dry_runs_are_listed_and_compared_step_by_step() {
    let m = mount("notes.yaml", text::STARTER);
    m.ready().await;
    click(&m.by_id("tab-run"));
    until("run panel", 2000.0, || {
        q(&m.root, "[data-testid=latency]").is_some()
    })
    .await;
    set_input(&m.by_id("latency"), "0");
    let completed = |m: &Mounted<_>| {
        m.nodes()
            .iter()
            .all(|n| n.get_attribute("data-state").as_deref() == Some("completed"))
    };
    click(&m.by_id("run-local"));
    until("first run", 5000.0, || completed(&m)).await;
    // A changed prompt: the second run's output of that step differs.
    type_text(
        &m.root,
        &text::STARTER.replace("Review the draft", "Check the draft"),
    );
    sleep(50).await;
    click(&m.by_id("run-local"));
    until("second run started", 3000.0, || {
        m.by_id("run-state").text_content().as_deref() == Some("running")
            || qa(&m.root, "[data-testid=runs] li").len() >= 2
    })
    .await;
    until("second run", 5000.0, || {
        completed(&m) && m.by_id("run-state").text_content().as_deref() == Some("completed")
    })
    .await;
    until("both runs listed", 3000.0, || {
        qa(&m.root, "[data-testid=runs] li").len() == 2
    })
    .await;
    for pick in qa(&m.root, "[data-testid=compare-pick]") {
        pick.unchecked_ref::<web_sys::HtmlInputElement>()
            .set_checked(true);
        fire(&pick, "change");
    }
    click(&m.by_id("compare"));
    until("the comparison", 5000.0, || {
        q(
            &m.root,
            "[data-testid=comparison-table] tr[data-step=review]",
        )
        .is_some()
    })
    .await;
    let change = |key: &str| {
        q(
            &m.root,
            &format!("[data-testid=comparison-table] tr[data-step={key}]"),
        )
        .and_then(|r| r.get_attribute("data-change"))
    };
    assert_eq!(change("collect").as_deref(), Some("same"));
    assert_eq!(change("review").as_deref(), Some("changed"));
    let dialog: web_sys::HtmlDialogElement = m.by_id("comparison").unchecked_into();
    assert!(dialog.open());
    let diff = q(
        &m.root,
        "[data-testid=comparison] details[data-step=review] [data-testid=diff]",
    )
    .expect("the review step's diff");
    assert!(diff.query_selector(".del").ok().flatten().is_some());
    assert!(diff.query_selector(".ins").ok().flatten().is_some());
    click(&m.by_id("close-comparison"));
    until("closed", 2000.0, || !dialog.open()).await;
    m.finish().await;
}

// ---- The local run driver ----

type Seen = Rc<RefCell<Option<RunView>>>;

fn watcher() -> (Seen, ax_web::local_run::OnView) {
    let seen: Seen = Rc::new(RefCell::new(None));
    let s2 = seen.clone();
    (seen, Rc::new(move |v: RunView| *s2.borrow_mut() = Some(v)))
}

fn state_of(seen: &Seen) -> Option<ExecutionState> {
    seen.borrow().as_ref().map(|v| v.state)
}

fn settings(latency_ms: u32) -> SimSettings {
    SimSettings {
        latency_ms,
        failure_rate: 0.0,
        seed: 5,
    }
}

fn inputs() -> std::collections::BTreeMap<String, serde_json::Value> {
    [("version".to_owned(), serde_json::json!("2.0"))]
        .into_iter()
        .collect()
}

#[wasm_bindgen_test]
async fn a_zero_latency_dry_run_completes() {
    let (seen, on_view) = watcher();
    let run = LocalRun::start(
        None,
        text::STARTER.into(),
        Some("n.yaml".into()),
        None,
        settings(0),
        inputs(),
        on_view,
    )
    .await
    .expect("start");
    until("completed", 5000.0, || {
        state_of(&seen) == Some(ExecutionState::Completed)
    })
    .await;
    let view = seen.borrow().clone().expect("view");
    assert_eq!(view.completed(), 4);
    assert!(
        view.steps[0]
            .1
            .prompt
            .as_deref()
            .is_some_and(|p| p.contains("2.0"))
    );
    assert!(!view.checkpoints.is_empty());
    // The export is a valid checkpoint file with every output.
    let file = CheckpointFile::from_json(&run.export().to_json()).expect("checkpoint file");
    assert_eq!(file.checkpoint.completed_steps().len(), 4);
    assert_eq!(file.origin.as_deref(), Some("browser"));
}

#[wasm_bindgen_test]
async fn pause_holds_the_run_and_resume_finishes_it() {
    let (seen, on_view) = watcher();
    let run = LocalRun::start(
        None,
        text::STARTER.into(),
        None,
        None,
        settings(40),
        inputs(),
        on_view,
    )
    .await
    .expect("start");
    run.send(Event::Pause { immediate: false });
    until("paused", 3000.0, || {
        state_of(&seen) == Some(ExecutionState::Paused)
    })
    .await;
    sleep(200).await;
    let done = seen.borrow().as_ref().map(RunView::completed).unwrap_or(0);
    assert!(done <= 1, "at most the attempt in flight finished");
    sleep(200).await;
    assert_eq!(seen.borrow().as_ref().map(RunView::completed), Some(done));
    run.send(Event::Resume);
    until("completed", 5000.0, || {
        state_of(&seen) == Some(ExecutionState::Completed)
    })
    .await;
}

#[wasm_bindgen_test]
async fn a_stored_run_resumes_after_a_reload_and_restores_checkpoints() {
    let db = unique("run");
    let store = Store::open(&db).await.expect("open");
    let (seen, on_view) = watcher();
    let run = LocalRun::start(
        Some(store.clone()),
        text::STARTER.into(),
        Some("n.yaml".into()),
        None,
        settings(60),
        inputs(),
        on_view,
    )
    .await
    .expect("start");
    until("two steps", 5000.0, || {
        seen.borrow().as_ref().is_some_and(|v| v.completed() >= 2)
    })
    .await;
    // The page goes away: stop driving; what is stored stays.
    run.stop();
    let id = run.id();
    let record = store.get_run(&id).await.expect("get").expect("stored");
    assert!(record.last_seq >= 2);
    assert!(!record.state.is_terminal());
    let (seen2, on_view2) = watcher();
    let reopened = LocalRun::open(store.clone(), record.clone(), None, on_view2)
        .await
        .expect("open");
    until("interrupted", 3000.0, || {
        state_of(&seen2) == Some(ExecutionState::Interrupted)
    })
    .await;
    reopened.send(Event::Resume);
    until("completed", 5000.0, || {
        state_of(&seen2) == Some(ExecutionState::Completed)
    })
    .await;
    reopened.stop();
    // Rewind to the first checkpoint (before anything completed) and finish again.
    let cps = store.list_checkpoints(&id).await.expect("checkpoints");
    let first = cps.first().map(|c| c.seq).expect("first");
    let record = store.get_run(&id).await.expect("get").expect("stored");
    let (seen3, on_view3) = watcher();
    let rewound = LocalRun::open(store.clone(), record, Some(first), on_view3)
        .await
        .expect("restore");
    until("rewound", 3000.0, || {
        seen3.borrow().as_ref().is_some_and(|v| v.completed() == 0)
    })
    .await;
    let kept = store.list_checkpoints(&id).await.expect("checkpoints");
    assert!(
        kept.iter().all(|c| c.seq <= first + 1),
        "later checkpoints were dropped"
    );
    rewound.send(Event::Resume);
    until("completed again", 5000.0, || {
        state_of(&seen3) == Some(ExecutionState::Completed)
    })
    .await;
    rewound.stop();
    store.close();
    delete_db(&db).await;
}

#[wasm_bindgen_test]
async fn an_exported_checkpoint_imports_as_a_new_run() {
    let (seen, on_view) = watcher();
    let run = LocalRun::start(
        None,
        text::STARTER.into(),
        None,
        None,
        settings(30),
        inputs(),
        on_view,
    )
    .await
    .expect("start");
    until("one step", 5000.0, || {
        seen.borrow().as_ref().is_some_and(|v| v.completed() >= 1)
    })
    .await;
    run.send(Event::Pause { immediate: true });
    until("paused", 3000.0, || {
        state_of(&seen) == Some(ExecutionState::Paused)
    })
    .await;
    let json = run.export().to_json();
    run.stop();
    let file = CheckpointFile::from_json(&json).expect("file");
    let (seen2, on_view2) = watcher();
    let (imported, note) = LocalRun::import(None, file, on_view2)
        .await
        .expect("import");
    assert!(note.contains("of 4 steps completed"), "{note}");
    until("view", 2000.0, || seen2.borrow().is_some()).await;
    imported.send(Event::Resume);
    until("completed", 5000.0, || {
        state_of(&seen2) == Some(ExecutionState::Completed)
    })
    .await;
}

// ---- IndexedDB ----

#[wasm_bindgen_test]
async fn documents_and_versions_survive_in_indexeddb() {
    let db = unique("docs");
    let store = Store::open(&db).await.expect("open");
    let mut a = store
        .create_doc("a.yaml", "name: a\n")
        .await
        .expect("create");
    let b = store.create_doc("b.json", "{}").await.expect("create");
    a.text = "name: a2\n".into();
    a.updated_at += 10.0;
    store.put_doc(&a).await.expect("put");
    let list = store.list_docs().await.expect("list");
    assert_eq!(
        list.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["a.yaml", "b.json"]
    );
    let v1 = store.add_version(&mut a, "save").await.expect("version");
    a.text = "name: a3\n".into();
    let v2 = store.add_version(&mut a, "auto").await.expect("version");
    assert_eq!((v1.seq, v2.seq), (1, 2));
    let versions = store.list_versions(&a.id).await.expect("versions");
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.seq, v.text.as_str()))
            .collect::<Vec<_>>(),
        [(2, "name: a3\n"), (1, "name: a2\n")]
    );
    assert!(
        store
            .list_versions(&b.id)
            .await
            .expect("versions")
            .is_empty()
    );
    store.put_meta("current", &a.id).await.expect("meta");
    // Reopen: everything is still there.
    store.close();
    let store = Store::open(&db).await.expect("reopen");
    assert_eq!(
        store.get_meta("current").await.expect("meta").as_deref(),
        Some(a.id.as_str())
    );
    assert_eq!(
        store.get_doc(&a.id).await.expect("get").map(|d| d.text),
        Some("name: a3\n".into())
    );
    store.delete_doc(&a.id).await.expect("delete");
    assert!(store.get_doc(&a.id).await.expect("get").is_none());
    assert!(
        store
            .list_versions(&a.id)
            .await
            .expect("versions")
            .is_empty()
    );
    assert_eq!(store.list_docs().await.expect("list").len(), 1);
    store.close();
    delete_db(&db).await;
}

#[wasm_bindgen_test]
async fn checkpoints_and_outputs_are_stored_once() {
    let db = unique("cp");
    let store = Store::open(&db).await.expect("open");
    let (seen, on_view) = watcher();
    let _run = LocalRun::start(
        Some(store.clone()),
        text::STARTER.into(),
        None,
        None,
        settings(0),
        inputs(),
        on_view,
    )
    .await
    .expect("start");
    until("completed", 5000.0, || {
        state_of(&seen) == Some(ExecutionState::Completed)
    })
    .await;
    let id = seen.borrow().as_ref().map(|v| v.id.clone()).expect("id");
    let cps: Vec<CheckpointRecord> = store.list_checkpoints(&id).await.expect("list");
    assert!(cps.len() >= 3);
    assert!(cps[0].snapshot.is_some(), "the first is a snapshot");
    assert!(
        cps[1..].iter().all(|c| c.delta.is_some()),
        "later ones are deltas"
    );
    assert!(cps.windows(2).all(|w| w[0].seq < w[1].seq));
    let last = cps.last().expect("last");
    assert_eq!(last.state, ExecutionState::Completed);
    // Every output the final checkpoint names is stored.
    let records: Vec<_> = cps
        .iter()
        .filter_map(|c| c.record().map(|r| (c.seq, r)))
        .collect();
    let folded = ax_web::dryrun::fold_checkpoint(&records, last.seq).expect("fold");
    let hashes = folded.output_hashes();
    assert_eq!(hashes.len(), 4);
    assert_eq!(store.get_outputs(hashes).await.expect("outputs").len(), 4);
    store
        .truncate_checkpoints(&id, cps[1].seq)
        .await
        .expect("truncate");
    assert_eq!(store.list_checkpoints(&id).await.expect("list").len(), 2);
    store.delete_run(&id).await.expect("delete");
    assert!(store.get_run(&id).await.expect("get").is_none());
    assert!(store.list_checkpoints(&id).await.expect("list").is_empty());
    store.close();
    delete_db(&db).await;
}

// ---- The Rust API the page is built on, in wasm ----

#[wasm_bindgen_test]
fn edits_layout_and_positions_work_in_wasm() {
    let a = analyze(text::STARTER, &Options::default());
    let wf = a.workflow().cloned().expect("workflow");
    let mut s = wf.steps[1].clone();
    s.agent = "editor".into();
    s.timeout_ms = Some(1000);
    let t = edit::update_step(text::STARTER, None, 1, &s).expect("edit");
    let b = analyze(&t, &Options::default());
    assert_eq!(b.workflow().map(|w| &w.steps[1]), Some(&s));
    assert!(t.contains("# A workflow: steps send prompts"));
    let l = layout::layout(&wf, a.graph());
    assert_eq!(l.nodes.len(), 4);
    assert_eq!(
        layout::cycle_if_added(&wf, "collect", "publish").map(|c| c.len()),
        Some(4)
    );
    assert_eq!(text::selection_for("a: é\nb: x", 2, 4, None), (8, 9));
}

// ---- Approvals, forEach and sub-workflows in dry runs ----

const APPROVAL: &str = "name: ship\nsteps:\n  - key: draft\n    agent: writer\n    prompt: Write the release notes\n  - key: sign-off\n    type: approval\n    prompt: \"Ship this? {{draft.result}}\"\n    dependencies: [draft]\n  - key: publish\n    agent: writer\n    prompt: \"Publish, as agreed: {{sign-off.result.comment}}\"\n    dependencies: [sign-off]\n";

const FOR_EACH: &str = "name: each\nsteps:\n  - key: review\n    agent: security\n    forEach: [\"a.rs\", \"b.rs\", \"c.rs\"]\n    prompt: \"Review {{item}} (file {{index}})\"\n  - key: sum-up\n    agent: lead\n    prompt: \"Sum up {{review.result}}\"\n    dependencies: [review]\n";

/// The run's state as the panel shows it ("" before the run is shown).
fn run_state<M: leptos::tachys::view::Mountable>(m: &Mounted<M>) -> String {
    q(&m.root, "[data-testid=run-state]")
        .and_then(|e| e.text_content())
        .unwrap_or_default()
}

async fn open_run_tab<M: leptos::tachys::view::Mountable>(m: &Mounted<M>, latency: &str) {
    click(&m.by_id("tab-run"));
    until("run panel", 2000.0, || {
        q(&m.root, "[data-testid=latency]").is_some()
    })
    .await;
    set_input(&m.by_id("latency"), latency);
}

#[wasm_bindgen_test]
async fn approving_in_the_page_continues_a_waiting_dry_run() {
    let m = mount("ship.yaml", APPROVAL);
    m.ready().await;
    until("nodes", 3000.0, || m.nodes().len() == 3).await;
    // An approval has its own shape (a hexagon, not the prompt's box).
    let sign_off = m.node("sign-off");
    assert!(
        sign_off
            .get_attribute("class")
            .unwrap_or_default()
            .contains("approval"),
        "{:?}",
        sign_off.get_attribute("class")
    );
    assert!(q(&sign_off, "path.box").is_some());
    assert!(q(&m.node("draft"), "rect.box").is_some());
    open_run_tab(&m, "0").await;
    click(&m.by_id("run-local"));
    until("waiting", 5000.0, || run_state(&m) == "waiting").await;
    assert_eq!(
        m.node("sign-off").get_attribute("data-state").as_deref(),
        Some("waiting")
    );
    assert_eq!(
        m.node("publish").get_attribute("data-state").as_deref(),
        Some("pending")
    );
    click(&m.node("sign-off"));
    until("the decision", 2000.0, || {
        q(&m.root, "[data-testid=decision]").is_some()
    })
    .await;
    let request = m
        .by_id("decision-request")
        .text_content()
        .unwrap_or_default();
    assert!(request.starts_with("Ship this? "), "{request}");
    assert!(request.contains("dry run"), "rendered: {request}");
    set_input(&m.by_id("decision-comment"), "ship it on Monday");
    click(&m.by_id("approve"));
    until("completed", 5000.0, || run_state(&m) == "completed").await;
    // The decision is the step's result, and later steps quote it.
    let output = m.by_id("step-output").text_content().unwrap_or_default();
    assert!(output.contains("\"approved\": true"), "{output}");
    assert!(output.contains("ship it on Monday"), "{output}");
    assert!(q(&m.root, "[data-testid=decision]").is_none());
    click(&m.node("publish"));
    until("publish's prompt", 2000.0, || {
        q(&m.root, "[data-testid=step-prompt]")
            .and_then(|p| p.text_content())
            .is_some_and(|t| t.contains("ship it on Monday"))
    })
    .await;
    m.finish().await;
}

#[wasm_bindgen_test]
async fn a_foreach_dry_run_shows_item_progress_and_results() {
    let m = mount("each.yaml", FOR_EACH);
    m.ready().await;
    until("nodes", 3000.0, || m.nodes().len() == 2).await;
    let badge = || {
        q(&m.node("review"), "[data-testid=node-items]")
            .and_then(|b| b.text_content())
            .unwrap_or_default()
    };
    assert_eq!(badge(), "each");
    open_run_tab(&m, "0").await;
    click(&m.by_id("run-local"));
    until("completed", 5000.0, || run_state(&m) == "completed").await;
    until("done/total on the node", 2000.0, || badge() == "3/3").await;
    click(&m.node("review"));
    until("the items", 2000.0, || {
        q(&m.root, "[data-testid=step-items]").is_some()
    })
    .await;
    assert_eq!(
        m.by_id("step-items-progress").text_content().as_deref(),
        Some("Items: 3 of 3 done")
    );
    let items = qa(&m.root, "[data-testid=step-items] li");
    assert_eq!(items.len(), 3);
    for (i, (li, file)) in items.iter().zip(["a.rs", "b.rs", "c.rs"]).enumerate() {
        let text = li.text_content().unwrap_or_default();
        assert!(
            text.contains(&format!("Review {file} (file {i})")),
            "{text}"
        );
        assert_eq!(li.get_attribute("data-state").as_deref(), Some("completed"));
    }
    // The step's result is the list of the items' results, in item order.
    let output = m.by_id("step-output").text_content().unwrap_or_default();
    let list: serde_json::Value = serde_json::from_str(&output).expect("a JSON list");
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{output}");
    m.finish().await;
}

#[wasm_bindgen_test]
async fn a_waiting_dry_run_is_decided_after_a_reload() {
    let db = unique("approval");
    let store = Store::open(&db).await.expect("open");
    let (seen, on_view) = watcher();
    let run = LocalRun::start(
        Some(store.clone()),
        APPROVAL.into(),
        Some("ship.yaml".into()),
        None,
        settings(0),
        Default::default(),
        on_view,
    )
    .await
    .expect("start");
    until("waiting", 5000.0, || {
        state_of(&seen) == Some(ExecutionState::Waiting)
    })
    .await;
    let view = seen.borrow().clone().expect("view");
    let request = view.step("sign-off").and_then(|s| s.request.clone());
    assert!(request.is_some_and(|r| r.starts_with("Ship this?")));
    // The page goes away while the run waits; the waiting state is stored.
    run.stop();
    let record = store
        .get_run(&run.id())
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(record.state, ExecutionState::Waiting);
    let (seen2, on_view2) = watcher();
    let reopened = LocalRun::open(store.clone(), record, None, on_view2)
        .await
        .expect("open");
    until("still waiting", 3000.0, || {
        state_of(&seen2) == Some(ExecutionState::Waiting)
    })
    .await;
    // A decision on a step that is not an approval is refused, and said.
    reopened.send(Event::Approve {
        key: "draft".into(),
        comment: None,
        data: None,
        by: None,
    });
    until("refused", 3000.0, || {
        reopened
            .last_error()
            .is_some_and(|e| e.contains("not an approval"))
    })
    .await;
    assert_eq!(state_of(&seen2), Some(ExecutionState::Waiting));
    reopened.send(Event::Reject {
        key: "sign-off".into(),
        comment: Some("not before the audit".into()),
        by: None,
    });
    until("failed", 3000.0, || {
        state_of(&seen2) == Some(ExecutionState::Failed)
    })
    .await;
    let view = seen2.borrow().clone().expect("view");
    let error = view
        .step("sign-off")
        .and_then(|s| s.error.clone())
        .unwrap_or_default();
    assert!(error.starts_with("rejected"), "{error}");
    assert!(error.contains("not before the audit"), "{error}");
    reopened.stop();
    store.close();
    delete_db(&db).await;
}

const CHILD: &str = "name: localize\ninputs:\n  text: {}\nsteps:\n  - key: translate\n    agent: translator\n    prompt: \"Translate {{text}}\"\n";

const PARENT: &str = "name: report\nsteps:\n  - key: draft\n    agent: writer\n    prompt: Draft it\n  - key: localize\n    type: workflow\n    workflow: ./localize.yaml\n    inputs:\n      text: \"{{draft.result}}\"\n    dependencies: [draft]\n";

#[wasm_bindgen_test]
async fn a_sub_workflow_runs_from_the_browsers_documents() {
    let db = unique("child");
    let store = Store::open(&db).await.expect("open");
    let start = |store: Store, seen: ax_web::local_run::OnView| {
        LocalRun::start(
            Some(store),
            PARENT.into(),
            Some("report.yaml".into()),
            None,
            settings(0),
            Default::default(),
            seen,
        )
    };
    // Without the child among the documents: a clear problem, nothing runs.
    let (_, on_view) = watcher();
    let err = match start(store.clone(), on_view).await {
        Ok(_) => panic!("started without its sub-workflow"),
        Err(e) => e,
    };
    assert!(err.contains("localize.yaml"), "{err}");
    store
        .create_doc("localize.yaml", CHILD)
        .await
        .expect("child");
    let (seen, on_view) = watcher();
    let run = start(store.clone(), on_view).await.expect("start");
    until("completed", 5000.0, || {
        state_of(&seen) == Some(ExecutionState::Completed)
    })
    .await;
    let view = seen.borrow().clone().expect("view");
    let output = view
        .step("localize")
        .and_then(|s| s.output.clone())
        .unwrap_or_default();
    // The child's result: its final steps' results by key.
    let result: serde_json::Value = serde_json::from_str(&output).expect("JSON");
    let translated = result["translate"].as_str().unwrap_or_default();
    assert!(
        translated.contains("Translate [simulated answer"),
        "{output}"
    );
    run.stop();
    store.close();
    delete_db(&db).await;
}

fn set_select(el: &web_sys::Element, value: &str) {
    if let Some(s) = el.dyn_ref::<web_sys::HtmlSelectElement>() {
        s.set_value(value);
    }
    fire(el, "change");
}

#[wasm_bindgen_test]
async fn the_form_edits_the_new_fields_and_a_sub_workflow_opens_its_child() {
    let m = mount("report.yaml", PARENT);
    m.ready().await;
    let store = m.designer.storage.store.get_value().expect("store");
    store
        .create_doc("localize.yaml", CHILD)
        .await
        .expect("child");
    until("nodes", 3000.0, || m.nodes().len() == 2).await;
    let node = m.node("localize");
    assert!(node.class_list().contains("workflow"));
    assert!(q(&node, "rect.inner").is_some());
    let sub = q(&node, "text.agent").and_then(|t| t.text_content());
    assert_eq!(sub.as_deref(), Some("↳ ./localize.yaml"));
    let text = || editor_text(&m.root);
    let wf = || {
        analyze(&text(), &Options::default())
            .workflow()
            .cloned()
            .expect("workflow")
    };
    // A sub-workflow step: no agent field; its workflow, forEach and maxConcurrency.
    click(&m.node("localize"));
    until("form", 2000.0, || {
        q(&m.root, "[data-testid=field-workflow]").is_some()
    })
    .await;
    assert!(q(&m.root, "[data-testid=field-agent]").is_none());
    assert_eq!(
        m.by_id("field-workflow")
            .unchecked_ref::<web_sys::HtmlInputElement>()
            .value(),
        "./localize.yaml"
    );
    set_input(&m.by_id("field-for-each"), "[\"de\", \"ja\"]");
    until("forEach", 2000.0, || text().contains("forEach:")).await;
    set_input(&m.by_id("field-max-concurrency"), "2");
    until("maxConcurrency", 2000.0, || {
        text().contains("maxConcurrency: 2")
    })
    .await;
    let step = wf().step("localize").cloned().expect("localize");
    assert_eq!(
        step.for_each,
        Some(ax_core::model::ForEach::List(vec![
            serde_json::json!("de"),
            serde_json::json!("ja")
        ]))
    );
    // A prompt step made an approval: its agent goes, onTimeout appears.
    click(&m.node("draft"));
    until("draft's form", 2000.0, || {
        q(&m.root, "[data-testid=field-agent]").is_some()
    })
    .await;
    set_select(&m.by_id("field-type"), "approval");
    until("type", 2000.0, || text().contains("type: approval")).await;
    assert!(!text().contains("agent: writer"), "{}", text());
    until("onTimeout field", 2000.0, || {
        q(&m.root, "[data-testid=field-on-timeout]").is_some()
    })
    .await;
    set_select(&m.by_id("field-on-timeout"), "approve");
    until("onTimeout", 2000.0, || {
        text().contains("onTimeout: approve")
    })
    .await;
    until("the approval's shape", 2000.0, || {
        m.node("draft").class_list().contains("approval")
    })
    .await;
    // "Open it" opens the child's document.
    click(&m.node("localize"));
    until("open-child", 2000.0, || {
        q(&m.root, "[data-testid=open-child]").is_some()
    })
    .await;
    click(&m.by_id("open-child"));
    until("the child's document", 3000.0, || {
        text().starts_with("name: localize")
    })
    .await;
    m.finish().await;
}
