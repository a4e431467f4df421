//! ax-web: the browser designer of ax (Leptos, client-side rendering).
//!
//! The pure parts are tested natively: [`layout`] (the graph's layered layout),
//! [`dryrun`] (the simulated provider and the executor driver), [`text`]
//! (positions and names). The browser parts: [`state`] (shared signals and
//! edits through `ax_core::edit`), [`store`] (IndexedDB), [`local_run`] (timers
//! and checkpoints for dry runs), [`server`] (the `ax serve` API and SSE),
//! [`runs`] (the run on the graph), and the components in [`ui`].

#[cfg(target_arch = "wasm32")]
mod alloc;
pub mod browser;
pub mod dryrun;
pub mod layout;
pub mod local_run;
pub mod runs;
pub mod server;
pub mod state;
pub mod store;
pub mod text;
pub mod ui;

pub use state::Config;
pub use ui::App;

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
    state::Designer,
    leptos::mount::UnmountHandle<impl leptos::tachys::view::Mountable>,
) {
    let designer = state::Designer::new(config.clone());
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
