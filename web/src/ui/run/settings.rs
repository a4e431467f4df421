//! Dry-run settings: the simulated provider's latency and failure rate, and
//! the run inputs.

use crate::runs::use_runs;
use crate::ui::dom::{El, el, elc, nothing, show};
use crate::ui::toolbar::event_target;
use leptos::ev;
use leptos::prelude::*;

pub(super) fn settings() -> El {
    let runs = use_runs();
    let settings = runs.settings;
    elc("SECTION", "settings")
        .attr("aria-label", "Dry-run settings")
        .child(el("H2").text("Dry-run settings"))
        .child(elc("P", "muted small").text(
            "“▶ Dry run” runs the workflow in this page with a simulated provider: no model is called.",
        ))
        .child(
            elc("DIV", "row wrap")
                .child(
                    elc("LABEL", "inline grow").text("Latency (ms)").child(
                        el("INPUT")
                            .attr("type", "number")
                            .attr("min", "0")
                            .attr("data-testid", "latency")
                            .prop_dyn("value", move || settings.get().latency_ms.to_string())
                            .on(ev::change, move |e| {
                                let i: web_sys::HtmlInputElement = event_target(&e);
                                let v = i.value().trim().parse::<u32>().unwrap_or(0);
                                settings.update(|s| s.latency_ms = v);
                            }),
                    ),
                )
                .child(
                    elc("LABEL", "inline grow").text("Failure rate (%)").child(
                        el("INPUT")
                            .attr("type", "number")
                            .attr("min", "0")
                            .attr("max", "100")
                            .attr("data-testid", "failure-rate")
                            .prop_dyn("value", move || settings.get().failure_rate.to_string())
                            .on(ev::change, move |e| {
                                let i: web_sys::HtmlInputElement = event_target(&e);
                                let v = i
                                    .value()
                                    .trim()
                                    .parse::<f64>()
                                    .unwrap_or(0.0)
                                    .clamp(0.0, 100.0);
                                settings.update(|s| s.failure_rate = v);
                            }),
                    ),
                ),
        )
        .view(show(
            move || !runs.inputs.with(String::is_empty),
            move || {
                el("DETAILS")
                    .child(el("SUMMARY").text("Run inputs"))
                    .child(
                        elc("TEXTAREA", "inputs")
                            .attr("rows", "4")
                            .attr("aria-label", "Run inputs as JSON")
                            .attr("data-testid", "run-inputs")
                            .prop_dyn("value", move || runs.inputs.get())
                            .on(ev::change, move |e| {
                                let t: web_sys::HtmlTextAreaElement = event_target(&e);
                                runs.inputs.set(t.value());
                            }),
                    )
                    .into_any()
            },
            nothing,
        ))
}
