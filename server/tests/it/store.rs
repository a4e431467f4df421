//! The store on its own: what every backend must do the same way.

use super::common::Backend;
use ax_server::store::{DbTarget, Durability, Store};
use std::sync::{Arc, Barrier};

/// Many connections opening the same fresh database at the same instant (the
/// in-process version of `cli::concurrent_first_opens`, with a tighter start):
/// every open succeeds and the schema is made once.
async fn fresh_database_opened_by_many_at_once(b: Backend) {
    // Races are a matter of luck: several rounds, each on a fresh database.
    let rounds = if matches!(b, Backend::Sqlite) { 10 } else { 3 };
    for round in 0..rounds {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = b.fresh(dir.path()).await;
        opened_at_once(&target, round).await;
    }
}

async fn opened_at_once(target: &DbTarget, round: usize) {
    let n = 16;
    let barrier = Arc::new(Barrier::new(n));
    let mut handles = Vec::new();
    for _ in 0..n {
        let (barrier, target) = (barrier.clone(), target.clone());
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            match &target {
                DbTarget::Sqlite(path) => Store::open_sqlite(path, Durability::Normal).map(drop),
                DbTarget::Postgres(_) => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(async { Store::open(&target).await.map(drop) }),
            }
        }));
    }
    for h in handles {
        h.join()
            .expect("thread")
            .unwrap_or_else(|e| panic!("round {round}: a concurrent open failed: {e:#}"));
    }
    let store = Store::open(target).await.expect("open");
    assert_eq!(store.check().await.expect("check"), "ok");
}

crate::on_both_backends!(fresh_database_opened_by_many_at_once);
