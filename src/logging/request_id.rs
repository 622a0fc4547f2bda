//! A request id that ties the access-log line to every line the request causes: the id
//! travels in a task-local through the handler's future and, across [`crate::db::Db::run`]'s
//! hop, in a thread-local of the blocking thread, and the log format prints it. Below `db`
//! and the middleware, which both carry it.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

tokio::task_local! {
    static CURRENT: RequestId;
}

thread_local! {
    static BLOCKING: Cell<Option<RequestId>> = const { Cell::new(None) };
}

/// `4f1c-2a`: this process's random prefix (several instances share one log) and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    instance: u16,
    n: u64,
}

impl RequestId {
    pub(crate) fn next() -> Self {
        static INSTANCE: OnceLock<u16> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            instance: *INSTANCE
                .get_or_init(|| u16::from_be_bytes(crate::crypto::random_bytes::<2>())),
            n: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The request this code runs for, if any.
    pub fn current() -> Option<Self> {
        CURRENT
            .try_with(|id| *id)
            .ok()
            .or_else(|| BLOCKING.with(Cell::get))
    }

    /// Runs blocking work with the calling request's id, on whatever thread it lands on.
    pub fn carry<T>(id: Option<Self>, work: impl FnOnce() -> T) -> T {
        let before = BLOCKING.with(|slot| slot.replace(id));
        let result = work();
        BLOCKING.with(|slot| slot.set(before));
        result
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}-{:x}", self.instance, self.n)
    }
}

impl RequestId {
    /// Runs a request's future with this id as the current one.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// Runs `work` with this id as the current one (a line logged after the future ended).
    pub fn sync_scope<T>(self, work: impl FnOnce() -> T) -> T {
        CURRENT.sync_scope(self, work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_carried_into_blocking_work() {
        let (a, b) = (RequestId::next(), RequestId::next());
        assert_ne!(a, b);
        assert_eq!(RequestId::current(), None);
        let seen = RequestId::carry(Some(a), RequestId::current);
        assert_eq!(seen, Some(a));
        assert_eq!(
            RequestId::current(),
            None,
            "the thread forgets it afterwards"
        );
    }
}
