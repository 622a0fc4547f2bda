//! `LATCHKEY_LOGIN_RATE`: the posts to `/login`, `/auth/verify`, `/auth/code`,
//! `/auth/approve`, the passkey sign-in (`/auth/passkey/start`, `/auth/passkey/finish`) and
//! the passkey confirmation (`/passkeys/confirm/finish`), counted together per client IP (one
//! budget for all of them, so an attacker cannot spread guesses across them). Page views are never counted.
//!
//! governor's keyed limiter does the counting, keyed by [`limit_key`]; a refusal is answered
//! with a page (or an HTMX partial) and audited as `login_throttled`. The limiter sits before
//! the session, the body and the CSRF check: a refused request costs no database work except
//! its audit row.

use std::net::{IpAddr, Ipv6Addr};
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, Error, HttpRequest, HttpResponse};
use anyhow::Context as _;
use futures_util::future::LocalBoxFuture;
use governor::clock::{Clock as _, DefaultClock, QuantaInstant};
use governor::{DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::settings::Rate;
use crate::state::AppState;
use crate::web::client::{client_info, client_ip_of_service};
use crate::web::pages::Page;
use crate::web::policy::rule_of;

/// How often idle entries (clients whose budget is full again) are dropped from memory.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// Whose budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A client: an IPv4 address, or the /64 network of an IPv6 address (one host usually
    /// holds a whole /64, so single IPv6 addresses would be free to rotate).
    Client(IpAddr),
    /// No peer address at all (not seen over TCP); such requests share one budget.
    Unknown,
    /// Not a limited route, or not a POST: never counted.
    Exempt,
}

/// The budget a request spends, with the path it is limited under, if any.
pub fn limit_key(req: &ServiceRequest) -> (LimitKey, Option<&'static str>) {
    if req.method() != Method::POST {
        return (LimitKey::Exempt, None);
    }
    let rule = rule_of(req.request());
    if !rule.sign_in_budget {
        return (LimitKey::Exempt, None);
    }
    let key =
        client_ip_of_service(req).map_or(LimitKey::Unknown, |ip| LimitKey::Client(bucket(ip)));
    (key, Some(rule.name()))
}

/// IPv4 addresses as they are (also when written IPv4-mapped); IPv6 addresses by /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

/// Seconds until the next request would be allowed, rounded up (never 0: "retry now" would
/// just be refused again a few milliseconds early).
fn retry_after_secs(negative: &NotUntil<QuantaInstant>) -> u64 {
    let wait = negative.wait_time_from(DefaultClock::default().now());
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The middleware factory. Build it once (it owns the counters) and clone it into every
/// worker, so all workers share one budget per client.
#[derive(Clone)]
pub struct LoginRateLimit {
    counted: Arc<DefaultKeyedRateLimiter<LimitKey>>,
    /// Refusals are audited at most at the login rate per client, so a flood of refused
    /// posts cannot turn into a flood of audit rows (each one a write on the hash chain).
    audit_budget: Arc<DefaultKeyedRateLimiter<LimitKey>>,
    rate: Rate,
}

impl LoginRateLimit {
    /// `rate.count` posts per `rate.per`, with a burst of `rate.count`. Must be called inside
    /// the actix runtime: it starts the task that forgets idle clients.
    pub fn new(rate: Rate) -> anyhow::Result<Self> {
        let quota = Quota::with_period(rate.replenish_interval())
            .context("LATCHKEY_LOGIN_RATE: the interval between requests rounds to zero")?
            .allow_burst(
                std::num::NonZeroU32::new(rate.count)
                    .context("LATCHKEY_LOGIN_RATE: the count must be at least 1")?,
            );
        let counted = Arc::new(RateLimiter::keyed(quota));
        let audit_budget = Arc::new(RateLimiter::keyed(quota));
        spawn_cleanup(Arc::downgrade(&counted), Arc::downgrade(&audit_budget));
        Ok(Self {
            counted,
            audit_budget,
            rate,
        })
    }
}

/// Drops the entries of clients whose budget is full again; ends when the limiter is gone.
fn spawn_cleanup(
    counted: Weak<DefaultKeyedRateLimiter<LimitKey>>,
    audited: Weak<DefaultKeyedRateLimiter<LimitKey>>,
) {
    actix_web::rt::spawn(async move {
        let mut interval = actix_web::rt::time::interval(CLEANUP_INTERVAL);
        loop {
            interval.tick().await;
            let (Some(counted), Some(audited)) = (counted.upgrade(), audited.upgrade()) else {
                return;
            };
            for limiter in [counted, audited] {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    });
}

impl<S, B> Transform<S, ServiceRequest> for LoginRateLimit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = LoginRateLimitService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(LoginRateLimitService {
            inner: Rc::new(service),
            limits: self.clone(),
        }))
    }
}

pub struct LoginRateLimitService<S> {
    inner: Rc<S>,
    limits: LoginRateLimit,
}

impl<S, B> Service<ServiceRequest> for LoginRateLimitService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let (key, path) = limit_key(&req);
        let refused = path.and_then(|path| {
            let waited = self.limits.counted.check_key(&key).err()?;
            Some((path, retry_after_secs(&waited)))
        });
        let Some((path, retry_after)) = refused else {
            let inner = Rc::clone(&self.inner);
            return Box::pin(async move {
                inner
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_boxed_body)
            });
        };
        let audit = self.limits.audit_budget.check_key(&key).is_ok();
        let rate = self.limits.rate;
        Box::pin(async move {
            let (req, _) = req.into_parts();
            if audit {
                audit_refusal(&req, rate, path, retry_after).await;
            } else {
                log::debug!(
                    "refused a post to {path} over LATCHKEY_LOGIN_RATE (not audited again)"
                );
            }
            let response = refusal_page(&req, retry_after);
            Ok(ServiceResponse::new(req, response))
        })
    }
}

/// Writes the `login_throttled` row. The answer is 429 either way: a database that cannot be
/// reached is no reason to let the request through.
async fn audit_refusal(req: &HttpRequest, rate: Rate, path: &'static str, retry_after: u64) {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return;
    };
    let client = client_info(req);
    let detail = format!(
        "POST {path} over LATCHKEY_LOGIN_RATE ({} per {}); retry after {retry_after}s",
        rate.count,
        humantime::format_duration(rate.per)
    );
    let written = state
        .db
        .query(move |conn| {
            NewAuditRow::new(AuditEvent::LoginThrottled)
                .client(&client)
                .detail(detail)
                .insert(conn)
        })
        .await;
    if let Err(err) = written {
        log::warn!("auditing a refused post to {path}: {err}");
    }
}

fn refusal_page(req: &HttpRequest, retry_after: u64) -> HttpResponse {
    let wait = if retry_after == 1 {
        "a second".to_string()
    } else {
        format!("{retry_after} seconds")
    };
    let mut response = Page::new("message", "Too many attempts")
        .with("heading", "Too many attempts")
        .with(
            "message",
            format!(
                "Too many sign-in attempts came from your network. Wait {wait}, then try again."
            ),
        )
        .status(StatusCode::TOO_MANY_REQUESTS)
        .render(req);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket(a), bucket(b));
        assert_ne!(bucket(a), bucket(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(bucket(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(bucket(v4), v4);
    }
}
