//! The step's own retry policy: attempts, delay, backoff and retried error classes.

use super::{StepCtx, checked, value_of};
use crate::ui::dom::{El, el, elc, fragment, show};
use ax_core::model::{ErrorClass, RetryPolicy};
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

pub(super) fn retry_fieldset(ctx: StepCtx) -> El {
    let has_policy = move || {
        ctx.step
            .with(|s| s.as_ref().is_some_and(|s| s.retry_policy.is_some()))
    };
    el("FIELDSET")
        .child(
            el("LEGEND").child(
                elc("LABEL", "inline")
                    .child(
                        el("INPUT")
                            .attr("type", "checkbox")
                            .attr("data-testid", "field-retry")
                            .prop_flag("checked", has_policy)
                            .on(
                                ev::change,
                                ctx.on_check(|s, v| s.retry_policy = v.then(RetryPolicy::default)),
                            ),
                    )
                    .text("Own retry policy"),
            ),
        )
        .view(show(
            has_policy,
            move || retry_fields(ctx),
            || {
                elc("P", "muted small")
                    .text("Uses config.maxRetries (default 0).")
                    .into_any()
            },
        ))
}

fn policy(ctx: StepCtx) -> impl Fn() -> Option<RetryPolicy> + Copy + Send + 'static {
    let step = ctx.step;
    move || step.with(|s| s.as_ref().and_then(|s| s.retry_policy.clone()))
}

/// A number field of the policy.
fn number(
    ctx: StepCtx,
    label: &'static str,
    testid: &'static str,
    min: &'static str,
    get: fn(&RetryPolicy) -> String,
    set: fn(&mut RetryPolicy, &str) -> Result<(), String>,
) -> El {
    let retry = policy(ctx);
    elc("LABEL", "inline grow").text(label).child(
        el("INPUT")
            .attr("type", "number")
            .attr("min", min)
            .attr("data-testid", testid)
            .prop_dyn("value", move || {
                retry().map(|p| get(&p)).unwrap_or_default()
            })
            .on(ev::change, move |e| {
                let v = value_of(&e);
                ctx.commit(|s| set(s.retry_policy.get_or_insert_with(RetryPolicy::default), &v))
            }),
    )
}

fn retry_fields(ctx: StepCtx) -> AnyView {
    let backoff = number(
        ctx,
        "Backoff ×",
        "field-backoff",
        "1",
        |p| p.retry_backoff_multiplier.to_string(),
        |p, v| {
            p.retry_backoff_multiplier = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 1.0)
                .ok_or("retryBackoffMultiplier must be a number of at least 1")?;
            Ok(())
        },
    )
    .attr("step", "0.5");
    fragment(vec![
        elc("DIV", "row wrap")
            .child(number(
                ctx,
                "Max retries",
                "field-max-retries",
                "0",
                |p| p.max_retries.to_string(),
                |p, v| {
                    p.max_retries = v
                        .trim()
                        .parse::<u32>()
                        .map_err(|_| "maxRetries must be a whole number".to_owned())?;
                    Ok(())
                },
            ))
            .child(number(
                ctx,
                "Delay (ms)",
                "field-retry-delay",
                "0",
                |p| p.retry_delay_ms.to_string(),
                |p, v| {
                    p.retry_delay_ms = v
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| "retryDelayMs must be a whole number".to_owned())?;
                    Ok(())
                },
            ))
            .child(backoff)
            .into_any(),
        error_classes(ctx).into_any(),
    ])
}

/// The error classes that are retried (the defaults until one is changed).
fn error_classes(ctx: StepCtx) -> El {
    let retry = policy(ctx);
    let class_box = move |class: ErrorClass| {
        let on = move || {
            retry().is_some_and(|p| {
                p.retryable_errors
                    .map_or(class.retryable_by_default(), |l| l.contains(&class))
            })
        };
        elc("LABEL", "inline small")
            .child(
                el("INPUT")
                    .attr("type", "checkbox")
                    .prop_flag("checked", on)
                    .on(ev::change, move |e| {
                        let v = checked(&e);
                        ctx.commit(|s| {
                            let p = s.retry_policy.get_or_insert_with(RetryPolicy::default);
                            let mut list = p.retryable_errors.clone().unwrap_or_else(|| {
                                ErrorClass::ALL
                                    .into_iter()
                                    .filter(|c| c.retryable_by_default())
                                    .collect()
                            });
                            list.retain(|c| *c != class);
                            if v {
                                list.push(class);
                            }
                            list.sort();
                            p.retryable_errors = Some(list);
                            Ok(())
                        })
                    }),
            )
            .text(class.as_str())
    };
    let mut list = elc("DIV", "classes")
        .attr("role", "group")
        .attr("aria-label", "Retried errors")
        .child(elc("SPAN", "muted small").str_dyn(move || {
            if retry().is_some_and(|p| p.retryable_errors.is_none()) {
                "Retried errors (the defaults):"
            } else {
                "Retried errors:"
            }
        }));
    for c in ErrorClass::ALL {
        list = list.child(class_box(c));
    }
    list
}
