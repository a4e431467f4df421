//! The checkpoints of the run on the graph (restore one), and importing a
//! checkpoint file as a run.

use crate::browser;
use crate::notice::Notices;
use crate::runs::use_runs;
use crate::ui::dom::{El, ElRef, el, elc};
use crate::ui::toolbar::event_target;
use crate::ui::when;
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

pub(super) fn checkpoints() -> AnyView {
    let runs = use_runs();
    let list = Memo::new(move |_| {
        runs.run.with(|r| {
            r.as_ref()
                .map(|r| r.checkpoints.clone())
                .unwrap_or_default()
        })
    });
    elc("DETAILS", "checkpoints")
        .child(el("SUMMARY").text_dyn(move || format!("Checkpoints ({})", list.with(Vec::len))))
        .child(
            el("OL")
                .attr("data-testid", "checkpoints")
                .list_dyn(move || {
                    list.get()
                        .into_iter()
                        .rev()
                        .take(50)
                        .map(|c| {
                            let (id, seq) = (c.id.clone(), c.seq);
                            el("LI")
                                .attr_string("data-seq", c.seq.to_string())
                                .child(elc("SPAN", "seq").string(format!("#{}", c.seq)))
                                .child(elc("SPAN", "muted small").string(when(c.at)))
                                .child(elc("SPAN", "small").string(
                                    c.state.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                                ))
                                .child(elc("SPAN", "small").string(format!("{} done", c.completed)))
                                .child(
                                    elc("BUTTON", "small")
                                        .attr("data-testid", "restore-checkpoint")
                                        .on_click(move |_| runs.restore(id.clone(), seq))
                                        .attr_string(
                                            "title",
                                            format!("Rewind the run to checkpoint {seq}"),
                                        )
                                        .text("Restore"),
                                )
                                .into_any()
                        })
                        .collect()
                }),
        )
        .into_any()
}

pub(super) fn import_checkpoint() -> El {
    let runs = use_runs();
    let notices = expect_context::<Notices>();
    let import_ref = ElRef::new();
    let on_import = move |e: ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&e);
        if let Some(f) = input.files().and_then(|l| l.get(0)) {
            leptos::task::spawn_local(async move {
                match browser::read_file(&f).await {
                    Ok(t) => runs.import_checkpoint(t),
                    Err(e) => notices.error(e),
                }
            });
        }
        input.set_value("");
    };
    elc("DIV", "row")
        .child(
            el("BUTTON")
                .on_click(move |_| {
                    if let Some(i) = import_ref.get() {
                        i.click();
                    }
                })
                .attr("data-testid", "import-checkpoint")
                .attr(
                    "title",
                    "Open a checkpoint file exported here or by the server",
                )
                .text("Import checkpoint…"),
        )
        .child(
            elc("INPUT", "hidden")
                .attr("type", "file")
                .attr("accept", ".json,application/json")
                .node_ref(import_ref)
                .on(ev::change, on_import)
                .attr("tabindex", "-1")
                .attr("aria-hidden", "true"),
        )
}
