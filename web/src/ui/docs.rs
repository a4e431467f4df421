//! Documents saved in this browser (open, rename, delete) and the version
//! history of the open one (restore).

use super::toolbar::event_target;
use super::when;
use crate::state::{StorageStatus, use_designer};
use crate::store::{DocRecord, VersionRecord};
use leptos::ev;
use leptos::prelude::*;

#[component]
pub fn DocumentsPanel() -> impl IntoView {
    let d = use_designer();
    let docs: RwSignal<Vec<DocRecord>> = RwSignal::new(Vec::new());
    let versions: RwSignal<Vec<VersionRecord>> = RwSignal::new(Vec::new());
    let renaming: RwSignal<Option<String>> = RwSignal::new(None);
    let deleting: RwSignal<Option<String>> = RwSignal::new(None);
    Effect::new(move |_| {
        d.docs_changed.track();
        d.storage.track();
        let current = d.doc_id.get();
        if let Some(store) = d.store.get_value() {
            leptos::task::spawn_local(async move {
                if let Ok(v) = store.list_docs().await {
                    docs.set(v);
                }
                match current {
                    Some(id) => {
                        if let Ok(v) = store.list_versions(&id).await {
                            versions.set(v);
                        }
                    }
                    None => versions.set(Vec::new()),
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
            d.rename(name);
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
                    d.docs_changed.update(|v| *v += 1);
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
                d.error(format!("Could not delete: {e}"));
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
            d.docs_changed.update(|v| *v += 1);
        });
    };
    let restore = move |v: VersionRecord| {
        leptos::task::spawn_local(async move {
            // Keep what is being replaced as a version of its own.
            if let Err(e) = d.store_draft(Some("before-restore")).await {
                d.error(format!("Could not keep the current text: {e}"));
                return;
            }
            d.set_text(v.text.clone());
            let _ = d.store_draft(None).await;
            d.info(format!("Restored version {} ({}).", v.seq, when(v.at)));
        });
    };
    view! {
        <div class="docs-panel">
            <Show when=move || matches!(d.storage.get(), StorageStatus::Unavailable(_))>
                <p class="error-text">"Browser storage is unavailable: documents cannot be kept here."</p>
            </Show>
            <h2>"Documents"</h2>
            <p class="muted small">"Saved in this browser; the open one is autosaved as you type. Save (Ctrl+S) also keeps a version."</p>
            <ul class="docs" data-testid="drafts">
                {move || docs.get().into_iter().map(|doc|
                    {
                        let (id1, id2, id3, id4) = (doc.id.clone(), doc.id.clone(), doc.id.clone(), doc.id.clone());
                        let doc_open = doc.clone();
                        let current = move || d.doc_id.with(|c| c.as_deref() == Some(id1.as_str()));
                        let is_renaming = move || renaming.with(|r| r.as_deref() == Some(id2.as_str()));
                        let is_deleting = move || deleting.with(|r| r.as_deref() == Some(id3.as_str()));
                        let name = doc.name.clone();
                        let id_r = id4.clone();
                        let id_d = id4.clone();
                        let id_dd = id4.clone();
                        view! {
                            <li data-name=doc.name.clone() class:current=current.clone()>
                                <Show
                                    when=is_renaming
                                    fallback={
                                        let doc_open = doc_open.clone();
                                        let name = name.clone();
                                        move || {
                                            let doc_open = doc_open.clone();
                                            view! {
                                                <button class="doc-open link" on:click=move |_| open(doc_open.clone()) title="Open">{name.clone()}</button>
                                            }
                                        }
                                    }
                                >
                                    {
                                        let id_r = id_r.clone();
                                        let id_r2 = id_r.clone();
                                        view! {
                                            <input
                                                class="rename"
                                                aria-label="New name"
                                                data-testid="rename-input"
                                                prop:value=name.clone()
                                                on:keydown=move |e: ev::KeyboardEvent| {
                                                    if e.key() == "Enter" {
                                                        let i: web_sys::HtmlInputElement = event_target(&e);
                                                        rename(id_r.clone(), i.value());
                                                    } else if e.key() == "Escape" {
                                                        renaming.set(None);
                                                    }
                                                }
                                                on:blur=move |e: ev::FocusEvent| {
                                                    let i: web_sys::HtmlInputElement = event_target(&e);
                                                    rename(id_r2.clone(), i.value());
                                                }
                                            />
                                        }
                                    }
                                </Show>
                                <span class="muted small">{when(doc.updated_at)}</span>
                                <Show
                                    when=is_deleting
                                    fallback={
                                        let (id_a, id_b) = (id_d.clone(), id_d.clone());
                                        move || {
                                            let (id_a, id_b) = (id_a.clone(), id_b.clone());
                                            view! {
                                                <button class="small" data-testid="rename" on:click=move |_| renaming.set(Some(id_a.clone()))>"Rename"</button>
                                                <button class="small danger" data-testid="delete" on:click=move |_| deleting.set(Some(id_b.clone()))>"Delete"</button>
                                            }
                                        }
                                    }
                                >
                                    {
                                        let id_dd = id_dd.clone();
                                        view! {
                                            <button class="small danger" data-testid="confirm-delete-doc" on:click=move |_| delete(id_dd.clone())>"Delete it"</button>
                                            <button class="small" on:click=move |_| deleting.set(None)>"Keep"</button>
                                        }
                                    }
                                </Show>
                            </li>
                        }
                    }
                ).collect_view()}
            </ul>
            <h2>"Versions of " {move || d.name.get()}</h2>
            <Show when=move || !versions.with(Vec::is_empty) fallback=|| view! { <p class="muted small">"No versions yet: Save keeps one, and autosave adds one every five minutes of editing."</p> }>
                <ol class="versions" data-testid="versions">
                    {move || versions.get().into_iter().map(|v|
                        {
                            let v2 = v.clone();
                            view! {
                                <li data-seq=v.seq>
                                    <span class="seq">"v" {v.seq}</span>
                                    <span class="small">{v.kind.clone()}</span>
                                    <span class="muted small">{when(v.at)}</span>
                                    <span class="muted small">{format!("{} lines", v.text.lines().count())}</span>
                                    <button class="small" data-testid="restore-version" on:click=move |_| restore(v2.clone())>"Restore"</button>
                                </li>
                            }
                        }
                    ).collect_view()}
                </ol>
            </Show>
        </div>
    }
}
