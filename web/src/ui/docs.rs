//! Documents saved in this browser (open, rename, delete) and the version
//! history of the open one (restore).

use super::dom::{el, elc, fragment, nothing, show};
use super::toolbar::event_target;
use super::when;
use crate::documents::{StorageStatus, use_storage};
use crate::editing::use_editor;
use crate::store::{DocRecord, VersionRecord};
use leptos::ev;
use leptos::prelude::*;
use leptos::tachys::view::any_view::AnyView;

/// The stored documents and the open one's versions, loaded together (one
/// signal: each signal type brings its own copy of the reactive code).
#[derive(Default)]
struct Saved {
    docs: Vec<DocRecord>,
    versions: Vec<VersionRecord>,
}

pub fn documents_panel() -> AnyView {
    let d = use_storage();
    let editor = use_editor();
    let saved = RwSignal::new(Saved::default());
    let renaming: RwSignal<Option<String>> = RwSignal::new(None);
    let deleting: RwSignal<Option<String>> = RwSignal::new(None);
    Effect::new(move |_| {
        d.docs_changed.track();
        d.status.track();
        let current = d.doc_id.get();
        if let Some(store) = d.store.get_value() {
            leptos::task::spawn_local(async move {
                let docs = store.list_docs().await.ok();
                let versions = match current {
                    Some(id) => store.list_versions(&id).await.ok(),
                    None => Some(Vec::new()),
                };
                if docs.is_some() || versions.is_some() {
                    saved.update(|s| {
                        if let Some(docs) = docs {
                            s.docs = docs;
                        }
                        if let Some(versions) = versions {
                            s.versions = versions;
                        }
                    });
                }
            });
        }
    });
    let open = move |doc: DocRecord| {
        let this_id = doc.id.clone();
        leptos::task::spawn_local(async move {
            // Store the draft being left, then switch.
            let _ = d.store_draft(None).await;
            let fresh = match d.store.get_value() {
                Some(s) => s.get_doc(&this_id).await.ok().flatten().unwrap_or(doc),
                None => doc,
            };
            d.open_doc(fresh);
        });
    };
    let rename = move |id: String, name: String| {
        renaming.set(None);
        let name = name.trim().to_owned();
        if name.is_empty() {
            return;
        }
        if d.doc_id.get_untracked().as_deref() == Some(id.as_str()) {
            editor.rename(name);
            return;
        }
        let Some(store) = d.store.get_value() else {
            return;
        };
        leptos::task::spawn_local(async move {
            if let Ok(Some(mut doc)) = store.get_doc(&id).await {
                doc.name = name;
                doc.updated_at = js_sys::Date::now();
                if store.put_doc(&doc).await.is_ok() {
                    d.docs_changed.notify();
                }
            }
        });
    };
    let delete = move |id: String| {
        deleting.set(None);
        let Some(store) = d.store.get_value() else {
            return;
        };
        leptos::task::spawn_local(async move {
            if let Err(e) = store.delete_doc(&id).await {
                editor.notices.error(format!("Could not delete: {e}"));
                return;
            }
            if d.doc_id.get_untracked().as_deref() == Some(id.as_str()) {
                match store
                    .list_docs()
                    .await
                    .ok()
                    .and_then(|l| l.into_iter().next())
                {
                    Some(next) => d.open_doc(next),
                    None => d.new_doc("untitled.yaml".into(), crate::text::STARTER.into()),
                }
            }
            d.docs_changed.notify();
        });
    };
    let restore = move |v: VersionRecord| {
        leptos::task::spawn_local(async move {
            // Keep what is being replaced as a version of its own.
            if let Err(e) = d.store_draft(Some("before-restore")).await {
                editor
                    .notices
                    .error(format!("Could not keep the current text: {e}"));
                return;
            }
            editor.set_text(v.text.clone());
            let _ = d.store_draft(None).await;
            editor
                .notices
                .info(format!("Restored version {} ({}).", v.seq, when(v.at)));
        });
    };
    let doc_item = move |doc: DocRecord| {
        let (id1, id2, id3, id4) = (
            doc.id.clone(),
            doc.id.clone(),
            doc.id.clone(),
            doc.id.clone(),
        );
        let doc_open = doc.clone();
        let name = doc.name.clone();
        let name2 = doc.name.clone();
        let (id_a, id_b, id_dd) = (id4.clone(), id4.clone(), id4.clone());
        let id_r = id4;
        el("LI")
            .attr_string("data-name", doc.name.clone())
            .class_dyn("current", move || {
                d.doc_id.with(|c| c.as_deref() == Some(id1.as_str()))
            })
            .view(show(
                move || renaming.with(|r| r.as_deref() == Some(id2.as_str())),
                move || {
                    let (id_r, id_r2) = (id_r.clone(), id_r.clone());
                    elc("INPUT", "rename")
                        .attr("aria-label", "New name")
                        .attr("data-testid", "rename-input")
                        .prop_string("value", name.clone())
                        .on(ev::keydown, move |e: ev::KeyboardEvent| {
                            if e.key() == "Enter" {
                                let i: web_sys::HtmlInputElement = event_target(&e);
                                rename(id_r.clone(), i.value());
                            } else if e.key() == "Escape" {
                                renaming.set(None);
                            }
                        })
                        .on(ev::blur, move |e: ev::FocusEvent| {
                            let i: web_sys::HtmlInputElement = event_target(&e);
                            rename(id_r2.clone(), i.value());
                        })
                        .into_any()
                },
                move || {
                    let doc_open = doc_open.clone();
                    elc("BUTTON", "doc-open link")
                        .on_click(move |_| open(doc_open.clone()))
                        .attr("title", "Open")
                        .string(name2.clone())
                        .into_any()
                },
            ))
            .child(elc("SPAN", "muted small").string(when(doc.updated_at)))
            .view(show(
                move || deleting.with(|r| r.as_deref() == Some(id3.as_str())),
                move || {
                    let id_dd = id_dd.clone();
                    fragment(vec![
                        elc("BUTTON", "small danger")
                            .attr("data-testid", "confirm-delete-doc")
                            .on_click(move |_| delete(id_dd.clone()))
                            .text("Delete it")
                            .into_any(),
                        elc("BUTTON", "small")
                            .on_click(move |_| deleting.set(None))
                            .text("Keep")
                            .into_any(),
                    ])
                },
                move || {
                    let (id_a, id_b) = (id_a.clone(), id_b.clone());
                    fragment(vec![
                        elc("BUTTON", "small")
                            .attr("data-testid", "rename")
                            .on_click(move |_| renaming.set(Some(id_a.clone())))
                            .text("Rename")
                            .into_any(),
                        elc("BUTTON", "small danger")
                            .attr("data-testid", "delete")
                            .on_click(move |_| deleting.set(Some(id_b.clone())))
                            .text("Delete")
                            .into_any(),
                    ])
                },
            ))
            .into_any()
    };
    elc("DIV", "docs-panel")
        .view(show(
            move || matches!(d.status.get(), StorageStatus::Unavailable(_)),
            || {
                elc("P", "error-text")
                    .text("Browser storage is unavailable: documents cannot be kept here.")
                    .into_any()
            },
            nothing,
        ))
        .child(el("H2").text("Documents"))
        .child(elc("P", "muted small").text(
            "Saved in this browser; the open one is autosaved as you type. Save (Ctrl+S) also keeps a version.",
        ))
        .child(
            elc("UL", "docs")
                .attr("data-testid", "drafts")
                .list_dyn(move || saved.with(|s| s.docs.clone()).into_iter().map(doc_item).collect()),
        )
        .child(el("H2").text("Versions of ").text_dyn(move || editor.name.get()))
        .view(show(
            move || saved.with(|s| !s.versions.is_empty()),
            move || {
                elc("OL", "versions")
                    .attr("data-testid", "versions")
                    .list_dyn(move || {
                        saved
                            .with(|s| s.versions.clone())
                            .into_iter()
                            .map(|v| {
                                let v2 = v.clone();
                                el("LI")
                                    .attr_string("data-seq", v.seq.to_string())
                                    .child(elc("SPAN", "seq").text("v").string(v.seq.to_string()))
                                    .child(elc("SPAN", "small").string(v.kind.clone()))
                                    .child(elc("SPAN", "muted small").string(when(v.at)))
                                    .child(
                                        elc("SPAN", "muted small")
                                            .string(format!("{} lines", v.text.lines().count())),
                                    )
                                    .child(
                                        elc("BUTTON", "small")
                                            .attr("data-testid", "restore-version")
                                            .on_click(move |_| restore(v2.clone()))
                                            .text("Restore"),
                                    )
                                    .into_any()
                            })
                            .collect()
                    })
                    .into_any()
            },
            || {
                elc("P", "muted small")
                    .text("No versions yet: Save keeps one, and autosave adds one every five minutes of editing.")
                    .into_any()
            },
        ))
        .into_any()
}
