//! Whether the database could be reached, noted per request: `Db::run` notes a failure to get
//! a connection, and `middleware::availability` turns a request that met one into a 503.

use std::cell::Cell;
use std::future::Future;

tokio::task_local! {
    static DATABASE_UNAVAILABLE: Cell<bool>;
}

/// Called by `Db::run` when no connection could be had. Outside [`watch`] it does nothing.
pub fn note_database_unavailable() {
    let _ = DATABASE_UNAVAILABLE.try_with(|flag| flag.set(true));
}

/// Runs `work` and says whether it met an unreachable database.
pub async fn watch<F: Future>(work: F) -> (F::Output, bool) {
    DATABASE_UNAVAILABLE
        .scope(Cell::new(false), async move {
            let output = work.await;
            (output, DATABASE_UNAVAILABLE.with(Cell::get))
        })
        .await
}
