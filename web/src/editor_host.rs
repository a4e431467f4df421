//! The code editor (CodeMirror 6, `web/editor/src/index.js`, bundled by
//! `cargo xtask editor`) as the page sees it: created with callbacks into Rust,
//! then driven through a handful of methods. wasm-bindgen copies the bundle
//! next to the page's own JavaScript, so it works offline and from any folder.

use ax_core::parse::Format;
use wasm_bindgen::prelude::*;

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen(module = "/editor/dist/ax-editor.js")]
extern "C" {
    #[wasm_bindgen(js_name = AxEditor)]
    type JsEditor;

    #[wasm_bindgen(constructor, js_class = "AxEditor")]
    fn new(parent: &web_sys::HtmlElement, options: &js_sys::Object) -> JsEditor;
    #[wasm_bindgen(method, js_class = "AxEditor", js_name = replaceAll)]
    fn replace_all(this: &JsEditor, text: &str);
    #[wasm_bindgen(method, js_class = "AxEditor")]
    fn reset(this: &JsEditor, text: &str, language: &str);
    #[wasm_bindgen(method, js_class = "AxEditor", js_name = setLanguage)]
    fn set_language(this: &JsEditor, language: &str);
    #[wasm_bindgen(method, js_class = "AxEditor", js_name = setDiagnostics)]
    fn set_diagnostics(this: &JsEditor, list: &JsValue);
    #[wasm_bindgen(method, js_class = "AxEditor")]
    fn select(this: &JsEditor, from: u32, to: u32);
    #[wasm_bindgen(method, js_class = "AxEditor")]
    fn focus(this: &JsEditor);
    #[wasm_bindgen(method, js_class = "AxEditor")]
    fn undo(this: &JsEditor) -> bool;
    #[wasm_bindgen(method, js_class = "AxEditor")]
    fn redo(this: &JsEditor) -> bool;
    #[wasm_bindgen(method, js_class = "AxEditor", js_name = openSearch)]
    fn open_search(this: &JsEditor) -> bool;
    #[wasm_bindgen(method, js_class = "AxEditor")]
    fn destroy(this: &JsEditor);
}

/// Native builds (the pure modules' tests) have no editor: the same methods, doing nothing.
#[cfg(not(target_arch = "wasm32"))]
struct JsEditor;

#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::unused_self)]
impl JsEditor {
    fn new(_: &web_sys::HtmlElement, _: &js_sys::Object) -> JsEditor {
        JsEditor
    }
    fn replace_all(&self, _: &str) {}
    fn reset(&self, _: &str, _: &str) {}
    fn set_language(&self, _: &str) {}
    fn set_diagnostics(&self, _: &JsValue) {}
    fn select(&self, _: u32, _: u32) {}
    fn focus(&self) {}
    fn undo(&self) -> bool {
        false
    }
    fn redo(&self) -> bool {
        false
    }
    fn open_search(&self) -> bool {
        false
    }
    fn destroy(&self) {}
}

/// What the editor tells the page.
pub struct Callbacks {
    /// The whole text (a new document in the editor).
    pub on_change: Box<dyn FnMut(String)>,
    /// A change (typing, undo, our own edits): `[from, to, inserted, …]`, UTF-16
    /// offsets of the text before it, ascending.
    pub on_edit: Box<dyn FnMut(js_sys::Array)>,
    /// The cursor moved (UTF-16 offset).
    pub on_cursor: Box<dyn FnMut(u32)>,
    /// Undo and redo depths changed.
    pub on_history: Box<dyn FnMut(u32, u32)>,
    /// A file was dropped on the editor.
    pub on_drop_file: Box<dyn FnMut(web_sys::File)>,
    /// Completions at a UTF-16 offset (explicitly asked for or not): JSON
    /// `{from, to, options}` or "" for none.
    pub complete: Box<dyn FnMut(u32, bool) -> String>,
}

/// A mounted code editor; destroyed when dropped.
pub struct EditorHost {
    editor: JsEditor,
    _closures: Closures,
}

/// The callbacks as JavaScript functions, alive as long as the editor.
struct Closures {
    on_change: Closure<dyn FnMut(String)>,
    on_edit: Closure<dyn FnMut(js_sys::Array)>,
    on_cursor: Closure<dyn FnMut(u32)>,
    on_history: Closure<dyn FnMut(u32, u32)>,
    on_drop_file: Closure<dyn FnMut(web_sys::File)>,
    complete: Closure<dyn FnMut(u32, bool) -> String>,
}

fn language(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Yaml => "yaml",
    }
}

/// One diagnostic as the editor takes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnostic {
    pub from: u32,
    pub to: u32,
    /// `error` or `warning`.
    pub severity: &'static str,
    pub message: String,
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

/// A suggested replacement, offered as a button in the diagnostic's tooltip.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fix {
    pub label: String,
    pub from: u32,
    pub to: u32,
    pub insert: String,
}

impl EditorHost {
    /// Create the editor in `parent` with `text`.
    pub fn new(
        parent: &web_sys::HtmlElement,
        text: &str,
        format: Format,
        label: &str,
        callbacks: Callbacks,
    ) -> EditorHost {
        let closures = Closures {
            on_change: Closure::new(callbacks.on_change),
            on_edit: Closure::new(callbacks.on_edit),
            on_cursor: Closure::new(callbacks.on_cursor),
            on_history: Closure::new(callbacks.on_history),
            on_drop_file: Closure::new(callbacks.on_drop_file),
            complete: Closure::new(callbacks.complete),
        };
        let options = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| {
            let _ = js_sys::Reflect::set(&options, &JsValue::from_str(k), v);
        };
        set("doc", &JsValue::from_str(text));
        set("language", &JsValue::from_str(language(format)));
        set("label", &JsValue::from_str(label));
        set("onChange", closures.on_change.as_ref());
        set("onEdit", closures.on_edit.as_ref());
        set("onCursor", closures.on_cursor.as_ref());
        set("onHistory", closures.on_history.as_ref());
        set("onDropFile", closures.on_drop_file.as_ref());
        set("complete", closures.complete.as_ref());
        EditorHost {
            editor: JsEditor::new(parent, &options),
            _closures: closures,
        }
    }

    pub fn replace_all(&self, text: &str) {
        self.editor.replace_all(text);
    }

    pub fn reset(&self, text: &str, format: Format) {
        self.editor.reset(text, language(format));
    }

    pub fn set_format(&self, format: Format) {
        self.editor.set_language(language(format));
    }

    pub fn set_diagnostics(&self, list: &[Diagnostic]) {
        let json = serde_json::to_string(list).unwrap_or_else(|_| "[]".into());
        let value = js_sys::JSON::parse(&json).unwrap_or_else(|_| js_sys::Array::new().into());
        self.editor.set_diagnostics(&value);
    }

    pub fn select(&self, from: u32, to: u32) {
        self.editor.select(from, to);
    }

    pub fn focus(&self) {
        self.editor.focus();
    }

    pub fn undo(&self) {
        self.editor.undo();
    }

    pub fn redo(&self) {
        self.editor.redo();
    }

    pub fn open_search(&self) {
        self.editor.open_search();
    }
}

impl Drop for EditorHost {
    fn drop(&mut self) {
        self.editor.destroy();
    }
}

/// The edits of an `on_edit` call: `(from, to, inserted)`, UTF-16 offsets.
pub fn edits(list: &js_sys::Array) -> Vec<(u32, u32, String)> {
    let mut out = Vec::with_capacity(list.length() as usize / 3);
    let mut i = 0;
    while i + 2 < list.length() {
        let n = |v: wasm_bindgen::JsValue| v.as_f64().unwrap_or(0.0) as u32;
        out.push((
            n(list.get(i)),
            n(list.get(i + 1)),
            list.get(i + 2).as_string().unwrap_or_default(),
        ));
        i += 3;
    }
    out
}
