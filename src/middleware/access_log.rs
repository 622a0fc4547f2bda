//! One access-log line per request, and a request id that ties it to every line the request
//! causes: the id travels in a task-local through the handler's future and, across
//! [`crate::db::Db::run`]'s hop, in a thread-local of the blocking thread, and the log format
//! (see [`crate::logging`]) prints it.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;

use crate::web::client::client_ip_of;

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
    fn next() -> Self {
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

/// The access log: client address (as the trusted-proxy rules see it), method, the path
/// without its query string (a sign-in token travels in one), status, body size, time to
/// the response head, and the User-Agent, quoted and escaped.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = RequestId::next();
    let started = Instant::now();
    let res = CURRENT.scope(id, next.call(req)).await?;
    if log::log_enabled!(target: TARGET, log::Level::Info) {
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let size = match res.response().body().size() {
            BodySize::Sized(n) => n.to_string(),
            BodySize::None => "0".to_string(),
            BodySize::Stream => "-".to_string(),
        };
        let req = res.request();
        let agent = req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        // Logged inside the request's scope, so the line carries its id too.
        CURRENT.sync_scope(id, || {
            log::info!(
                target: TARGET,
                "{} \"{} {}\" {} {size} {elapsed:.3}ms {:?}",
                client_ip_of(req).map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                req.method(),
                req.path(),
                res.status().as_u16(),
                agent.as_deref().unwrap_or("-"),
            );
        });
    }
    Ok(res)
}

pub const TARGET: &str = "latchkey::access";

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
