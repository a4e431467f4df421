//! The few IndexedDB calls the store makes, straight on `web_sys`: a request or a
//! transaction is awaited as a promise whose `resolve` and `reject` are its own
//! event handlers (no Rust closure per call; only opening needs one, for
//! `upgradeneeded`). A wrapper crate (`indexed_db_futures`, before) brought its
//! own channels, error types and generic futures: about 6 KB of gzipped wasm.
//!
//! As before: a read-only transaction per read; a read-write transaction per
//! write, committed explicitly and awaited until complete, and aborted when one
//! of its requests cannot be placed (nothing of it is written).

use js_sys::{Array, Promise};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    DomException, IdbDatabase, IdbFactory, IdbKeyRange, IdbObjectStore, IdbOpenDbRequest,
    IdbRequest, IdbTransaction, IdbTransactionMode,
};

type Result<T> = std::result::Result<T, String>;

/// A DOMException as `Name: message`; other JavaScript errors by their message.
fn js_err(e: JsValue) -> String {
    match e.dyn_ref::<DomException>() {
        Some(d) => dom_err(d),
        None => match e.dyn_ref::<js_sys::Error>() {
            Some(e) => String::from(e.message()),
            None => "Non-Error JSValue error".to_owned(),
        },
    }
}

fn dom_err(d: &DomException) -> String {
    format!("{}: {}", d.name(), d.message())
}

/// The error of the request or transaction an error or abort event was sent to.
fn event_err(event: &JsValue) -> Option<String> {
    let target = event.dyn_ref::<web_sys::Event>()?.target()?;
    let error = if let Some(r) = target.dyn_ref::<IdbRequest>() {
        r.error().ok().flatten()
    } else {
        target.dyn_ref::<IdbTransaction>()?.error()
    };
    error.as_ref().map(dom_err)
}

fn factory() -> Result<IdbFactory> {
    web_sys::window()
        .ok_or("Unsupported environment")?
        .indexed_db()
        .map_err(js_err)?
        .ok_or_else(|| "The `indexedDB` getter returned `null` or `undefined`".to_owned())
}

/// Wait for a request's `success` (then its result) or `error`.
async fn request(req: &IdbRequest) -> Result<JsValue> {
    let done = Promise::new(&mut |resolve, reject| {
        req.set_onsuccess(Some(&resolve));
        req.set_onerror(Some(&reject));
    });
    let outcome = JsFuture::from(done).await;
    req.set_onsuccess(None);
    req.set_onerror(None);
    match outcome {
        Ok(_) => req.result().map_err(js_err),
        Err(event) => Err(event_err(&event).unwrap_or_else(|| "The request failed.".to_owned())),
    }
}

/// Open (creating or upgrading) a database with these object stores.
pub async fn open(name: &str, version: u32, stores: &[&'static str]) -> Result<IdbDatabase> {
    let req = factory()?.open_with_u32(name, version).map_err(js_err)?;
    let on_upgrade = {
        let req: IdbOpenDbRequest = req.clone();
        let stores = stores.to_vec();
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_: web_sys::Event| {
            let Ok(db) = req.result().and_then(JsCast::dyn_into::<IdbDatabase>) else {
                return;
            };
            let existing = db.object_store_names();
            for s in &stores {
                if !existing.contains(s) && db.create_object_store(s).is_err() {
                    // The open request then fails (AbortError).
                    if let Some(tx) = req.transaction() {
                        let _ = tx.abort();
                    }
                    return;
                }
            }
        })
    };
    req.set_onupgradeneeded(Some(on_upgrade.as_ref().unchecked_ref()));
    let db = request(&req).await;
    req.set_onupgradeneeded(None);
    drop(on_upgrade);
    db?.dyn_into::<IdbDatabase>()
        .map_err(|_| "IndexedDB did not open a database".to_owned())
}

/// Delete a whole database.
pub async fn delete_database(name: &str) -> Result<()> {
    let req = factory()?.delete_database(name).map_err(js_err)?;
    request(&req).await.map(drop)
}

/// The string under `key`, if any.
pub async fn get(db: &IdbDatabase, store: &str, key: &str) -> Result<Option<String>> {
    let tx = db.transaction_with_str(store).map_err(js_err)?;
    let req = tx
        .object_store(store)
        .and_then(|s| s.get(&JsValue::from_str(key)))
        .map_err(js_err)?;
    let v = request(&req).await?;
    if v.is_undefined() {
        return Ok(None);
    }
    v.as_string().map(Some).ok_or_else(not_a_string)
}

fn not_a_string() -> String {
    "Simple value parse error: Not a string".to_owned()
}

/// Every string in a store, in key order; with a range, those with keys in
/// `start..end`.
pub async fn get_all(
    db: &IdbDatabase,
    store: &str,
    range: Option<std::ops::Range<String>>,
) -> Result<Vec<String>> {
    let tx = db.transaction_with_str(store).map_err(js_err)?;
    let s = tx.object_store(store).map_err(js_err)?;
    let req = match range {
        Some(r) => s.get_all_with_key(&key_range(&r)?.into()),
        None => s.get_all(),
    }
    .map_err(js_err)?;
    let all: Array = request(&req).await?.unchecked_into();
    all.iter()
        .map(|v| v.as_string().ok_or_else(not_a_string))
        .collect()
}

/// `start..end` (lower bound closed, upper open).
fn key_range(r: &std::ops::Range<String>) -> Result<IdbKeyRange> {
    IdbKeyRange::bound_with_lower_open_and_upper_open(
        &JsValue::from_str(&r.start),
        &JsValue::from_str(&r.end),
        false,
        true,
    )
    .map_err(js_err)
}

/// Write `(store, key, value)` strings in one transaction over `stores`.
pub async fn put_all(
    db: &IdbDatabase,
    stores: &[&str],
    writes: &[(&str, String, String)],
) -> Result<()> {
    let names: Array = stores.iter().map(|s| JsValue::from_str(s)).collect();
    let tx = db
        .transaction_with_str_sequence_and_mode(&names, IdbTransactionMode::Readwrite)
        .map_err(js_err)?;
    for (store, key, value) in writes {
        let placed = tx
            .object_store(store)
            .and_then(|s| s.put_with_key(&JsValue::from_str(value), &JsValue::from_str(key)));
        if let Err(e) = placed {
            let _ = tx.abort();
            return Err(js_err(e));
        }
    }
    commit(&tx).await
}

/// Delete the record under `key`, or those with keys in `range`.
pub async fn delete(
    db: &IdbDatabase,
    store: &str,
    key: Option<&str>,
    range: Option<std::ops::Range<String>>,
) -> Result<()> {
    let tx = db
        .transaction_with_str_and_mode(store, IdbTransactionMode::Readwrite)
        .map_err(js_err)?;
    let placed = match (key, range) {
        (Some(k), _) => Ok(JsValue::from_str(k)),
        (None, Some(r)) => key_range(&r).map(JsValue::from),
        (None, None) => Err("nothing to delete".to_owned()),
    }
    .and_then(|k| {
        tx.object_store(store)
            .and_then(|s: IdbObjectStore| s.delete(&k))
            .map_err(js_err)
    });
    if let Err(e) = placed {
        let _ = tx.abort();
        return Err(e);
    }
    commit(&tx).await
}

/// Commit a read-write transaction and wait until it is complete.
async fn commit(tx: &IdbTransaction) -> Result<()> {
    let done = Promise::new(&mut |resolve, reject| {
        tx.set_oncomplete(Some(&resolve));
        tx.set_onerror(Some(&reject));
        tx.set_onabort(Some(&reject));
    });
    // Standard (and what the wrapper crate called); web-sys marks it deprecated.
    #[allow(deprecated)]
    tx.commit().map_err(js_err)?;
    JsFuture::from(done).await.map(drop).map_err(|event| {
        event_err(&event).unwrap_or_else(|| {
            "Expected the Transaction to be committed, but it was aborted.".to_owned()
        })
    })
}
