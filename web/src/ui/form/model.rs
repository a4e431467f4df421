//! The step's own model settings (prompt steps): model, temperature,
//! maxTokens and system prompt, each empty for the agent's.

use super::StepCtx;
use crate::ui::dom::{El, el, elc};
use leptos::ev;

/// A text box bound to one field through `get` and `set`.
fn input(
    ctx: StepCtx,
    testid: &'static str,
    label: &'static str,
    kind: &'static str,
    get: fn(&ax_core::model::Step) -> String,
    set: fn(&mut ax_core::model::Step, String) -> Result<(), String>,
) -> El {
    elc("LABEL", "inline grow").text(label).child(
        el("INPUT")
            .attr("type", kind)
            .attr("data-testid", testid)
            .attr("placeholder", "the agent's")
            .prop_dyn("value", ctx.field(get))
            .on(ev::change, ctx.on_change(set)),
    )
}

fn text_or_none(v: String) -> Option<String> {
    (!v.trim().is_empty()).then_some(v)
}

pub(super) fn model_row(ctx: StepCtx) -> El {
    elc("DIV", "row wrap")
        .child(input(
            ctx,
            "field-model",
            "Model",
            "text",
            |s| s.model.clone().unwrap_or_default(),
            |s, v| {
                s.model = text_or_none(v.trim().to_owned());
                Ok(())
            },
        ))
        .child(input(
            ctx,
            "field-temperature",
            "Temperature",
            "number",
            |s| s.temperature.map(|t| t.to_string()).unwrap_or_default(),
            |s, v| {
                s.temperature = match v.trim() {
                    "" => None,
                    t => match t.parse::<f64>() {
                        Ok(t) if (0.0..=2.0).contains(&t) => Some(t),
                        _ => {
                            return Err(
                                "temperature is a number from 0 to 2 (empty for the agent's)"
                                    .into(),
                            );
                        }
                    },
                };
                Ok(())
            },
        ))
        .child(input(
            ctx,
            "field-max-tokens",
            "Max tokens",
            "number",
            |s| s.max_tokens.map(|t| t.to_string()).unwrap_or_default(),
            |s, v| {
                s.max_tokens =
                    match v.trim() {
                        "" => None,
                        t => match t.parse::<u32>() {
                            Ok(t) if t >= 1 => Some(t),
                            _ => return Err(
                                "maxTokens is a whole number, at least 1 (empty for the agent's)"
                                    .into(),
                            ),
                        },
                    };
                Ok(())
            },
        ))
        .child(input(
            ctx,
            "field-system",
            "System prompt",
            "text",
            |s| s.system.clone().unwrap_or_default(),
            |s, v| {
                s.system = text_or_none(v);
                Ok(())
            },
        ))
}
