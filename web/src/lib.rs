//! ax-web: the browser designer of ax (Leptos, client-side rendering).
//!
//! The pure parts are tested natively: [`layout`] (the graph's layered layout),
//! [`dryrun`] (the simulated provider and the executor driver), [`text`]
//! (positions and names), [`complete`] (completion from the file format's
//! schema), [`lint`] (problems as editor diagnostics), [`compare`] (two runs
//! side by side), [`run_view`] (what the page shows of a run).
//!
//! The page's state lives in three contexts that depend on each other in one
//! direction only: [`editing::Editor`] (the text, its analysis, the selection)
//! ← [`documents::Storage`] (IndexedDB: documents, autosave) ← [`runs::Runs`]
//! (the run on the graph, dry runs and the server), with [`notice::Notices`]
//! shared by all. [`local_run`] and [`server`] drive runs; [`editor_host`] is
//! the code editor (CodeMirror); [`ui`] holds the components, which nothing
//! else imports.

pub mod browser;
pub mod compare;
pub mod complete;
pub mod documents;
pub mod dryrun;
pub mod editing;
pub mod editor_host;
pub mod layout;
pub mod lint;
pub mod local_run;
pub mod notice;
pub mod run_view;
pub mod runs;
pub mod server;
pub mod store;
pub mod text;
pub mod ui;

pub use ui::App;

use documents::Storage;
use editing::Editor;
use notice::Notices;
use runs::Runs;

/// How the app is set up (tests use their own database and no server probe).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub db_name: String,
    /// Probe `/healthz` for an `ax serve` next to the page.
    pub probe_server: bool,
    /// Base URL of the server API ("" = the page's origin).
    pub server_base: String,
    /// Open this text instead of the stored session (tests).
    pub initial: Option<(String, String)>,
    /// Delay before validating after a keystroke, in milliseconds.
    pub debounce_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db_name: store::DEFAULT_DB.into(),
            probe_server: true,
            server_base: String::new(),
            initial: None,
            debounce_ms: 0,
        }
    }
}

/// The page's contexts together (what `App` provides, and tests hold on to).
#[derive(Clone, Copy)]
pub struct Designer {
    pub notices: Notices,
    pub editor: Editor,
    pub storage: Storage,
    pub runs: Runs,
}

impl Designer {
    pub fn new(config: &Config) -> Designer {
        let (name, text) = config
            .initial
            .clone()
            .unwrap_or_else(|| ("release-notes.yaml".into(), text::STARTER.into()));
        let notices = Notices::new();
        let editor = Editor::new(name, text, config.debounce_ms, notices);
        let storage = Storage::new(editor, notices);
        let api = server::Api {
            base: config.server_base.clone(),
            token: browser::query_param("token"),
        };
        let runs = Runs::new(editor, storage, notices, api);
        Designer {
            notices,
            editor,
            storage,
            runs,
        }
    }

    /// Make each context available to the components below.
    pub fn provide(&self) {
        leptos::prelude::provide_context(self.notices);
        leptos::prelude::provide_context(self.editor);
        leptos::prelude::provide_context(self.storage);
        leptos::prelude::provide_context(self.runs);
    }
}

/// Mount the designer into the page's body.
pub fn mount() {
    console_error();
    leptos::mount::mount_to_body(|| leptos::view! { <App /> });
}

/// Mount the designer into an element with a configuration (tests, embedding);
/// returns its state and the handle that unmounts it when dropped.
pub fn mount_to(
    parent: web_sys::HtmlElement,
    config: Config,
) -> (
    Designer,
    leptos::mount::UnmountHandle<impl leptos::tachys::view::Mountable>,
) {
    let designer = Designer::new(&config);
    let handle = leptos::mount::mount_to(
        parent,
        move || leptos::view! { <App config=config.clone() designer=designer /> },
    );
    (designer, handle)
}

#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// Panics go to the console with their message.
fn console_error() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("ax designer: {info}").into());
    }));
}
