//! `LATCHKEY_LOGIN_RATE`: the posts that start a sign-in (the policy's `sign_in_budget` rules,
//! `POST /login` and `POST /auth/passkey/finish`), counted per client IP. Page views, the
//! passkey ceremony's start and the later steps of a sign-in are never counted: the later
//! steps are bounded by each request's own tries and the per-member locks, and counting them
//! made one person's sign-in cost three posts, which stalled an office behind one address.
//!
//! Two layers, both built here and wired by `startup`:
//! - [`LoginRate::counter`], actix-governor's `Governor`, counts. Its key extractor
//!   ([`SignInStart`]) names the budget a request spends: the client IP as the trusted-proxy
//!   rules see it (IPv6 by /64), or the whitelisted [`LimitKey::Exempt`] for a rule that does
//!   not start a sign-in; the crate's own method filter lets everything but POST by. It runs
//!   permissive: it marks a request over the budget instead of answering it, because the
//!   crate's refusal hook sees neither the request (the page depends on HTMX) nor an executor
//!   to write the audit row on.
//! - [`Refusals::answer`], just inside it, answers a marked request with 429, `Retry-After`
//!   and the page (or HTMX partial) that says so, and audits it as `login_throttled`.
//!
//! Both sit before the session, the body and the CSRF check: a refused request costs no
//! database work except its audit row.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_governor::governor::middleware::NoOpMiddleware;
use actix_governor::governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use actix_governor::{
    Governor, GovernorConfig, GovernorConfigBuilder, GovernorResult, KeyExtractor,
};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage as _, HttpRequest, HttpResponse, ResponseError};
use anyhow::Context as _;

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::settings::Rate;
use crate::state::AppState;
use crate::web::client::{client_info, client_ip_of_service};
use crate::web::pages::Page;
use crate::web::policy::rule_of;

/// How often idle entries (clients whose budget is full again) are dropped from memory:
/// actix-governor leaves that to its user.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// Whose budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A client: an IPv4 address, or the /64 network of an IPv6 address (one host usually
    /// holds a whole /64, so single IPv6 addresses would be free to rotate).
    Client(IpAddr),
    /// No peer address at all (not seen over TCP); such requests share one budget.
    Unknown,
    /// Not a sign-in start: whitelisted, never counted.
    Exempt,
}

/// The budget a request spends (the method is the crate's to filter: see [`LoginRate::new`]).
pub fn limit_key(req: &ServiceRequest) -> LimitKey {
    if !rule_of(req.request()).sign_in_budget {
        return LimitKey::Exempt;
    }
    client_ip_of_service(req).map_or(LimitKey::Unknown, |ip| LimitKey::Client(bucket(ip)))
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

/// actix-governor's key extractor for the sign-in budget: the client as the trusted-proxy
/// rules see it (`LATCHKEY_TRUSTED_PROXIES`, read from the app's settings per request).
#[derive(Debug, Clone, Copy)]
pub struct SignInStart;

/// Extraction never fails (a request without a peer address shares [`LimitKey::Unknown`]);
/// the crate asks for an error type all the same.
#[derive(Debug)]
pub enum NoKeyError {}

impl std::fmt::Display for NoKeyError {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl ResponseError for NoKeyError {}

impl KeyExtractor for SignInStart {
    type Key = LimitKey;
    type KeyExtractionError = NoKeyError;

    fn extract(&self, req: &ServiceRequest) -> Result<Self::Key, Self::KeyExtractionError> {
        Ok(limit_key(req))
    }

    fn whitelisted_keys(&self) -> Vec<Self::Key> {
        vec![LimitKey::Exempt]
    }
}

/// What actix-governor leaves in a request's extensions.
type Verdict = GovernorResult<NoKeyError>;

/// The limiter of the whole process. Build it once (it owns the counters) and take its two
/// layers into every worker, so all workers share one budget per client.
#[derive(Clone)]
pub struct LoginRate {
    config: GovernorConfig<SignInStart, NoOpMiddleware>,
    refusals: Refusals,
}

impl LoginRate {
    /// `rate.count` posts per `rate.per`, with a burst of `rate.count`, one coming back every
    /// `rate.per / rate.count`. Must be called inside the actix runtime: it starts the task
    /// that forgets idle clients.
    pub fn new(rate: Rate) -> anyhow::Result<Self> {
        let config = GovernorConfigBuilder::default()
            .period(rate.replenish_interval())
            .burst_size(rate.count)
            .methods(vec![Method::POST])
            .permissive(true)
            .key_extractor(SignInStart)
            .finish()
            .context(
                "LATCHKEY_LOGIN_RATE: the count and the interval between requests must not be zero",
            )?;
        // Refusals are audited at most at the login rate per client, so a flood of refused
        // posts cannot turn into a flood of audit rows (each one a write on the hash chain).
        let audit_budget = Arc::new(RateLimiter::keyed(
            Quota::with_period(rate.replenish_interval())
                .context("LATCHKEY_LOGIN_RATE: the interval between requests rounds to zero")?
                .allow_burst(
                    std::num::NonZeroU32::new(rate.count)
                        .context("LATCHKEY_LOGIN_RATE: the count must be at least 1")?,
                ),
        ));
        spawn_cleanup(
            Arc::downgrade(&config.limiter()),
            Arc::downgrade(&audit_budget),
        );
        Ok(Self {
            config,
            refusals: Refusals { audit_budget, rate },
        })
    }

    /// The counting layer (actix-governor's); [`Self::refusals`] goes just inside it.
    pub fn counter(&self) -> Governor<SignInStart, NoOpMiddleware> {
        Governor::new(&self.config)
    }

    pub fn refusals(&self) -> Refusals {
        self.refusals.clone()
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

/// The answer to a request the counter marked as over the budget.
#[derive(Clone)]
pub struct Refusals {
    audit_budget: Arc<DefaultKeyedRateLimiter<LimitKey>>,
    rate: Rate,
}

impl Refusals {
    /// The layer itself (for `from_fn`): passes every request the counter let by.
    pub async fn answer(
        self,
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let waited = req
            .extensions()
            .get::<Verdict>()
            .and_then(|verdict| verdict.check().ok().flatten());
        let Some(waited) = waited else {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body);
        };
        // The crate rounds the wait down to whole seconds; one more is never early ("retry
        // now" would just be refused again a few milliseconds too soon).
        let retry_after = waited + 1;
        let audit = self.audit_budget.check_key(&limit_key(&req)).is_ok();
        let (req, _) = req.into_parts();
        let path = rule_of(&req).name();
        if audit {
            audit_refusal(&req, self.rate, path, retry_after).await;
        } else {
            log::debug!("refused a post to {path} over LATCHKEY_LOGIN_RATE (not audited again)");
        }
        let response = refusal_page(&req, retry_after);
        Ok(ServiceResponse::new(req, response))
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
    match written {
        // No member: the row names none (the client's address is in the access line).
        Ok(_) => log::info!(target: crate::signin::LOG_TARGET, "login_throttled"),
        Err(err) => log::warn!("auditing a refused post to {path}: {err}"),
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
    use actix_web::test::TestRequest;

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

    #[test]
    fn only_the_sign_in_starts_have_a_budget() {
        let peer = "192.0.2.7:4000".parse().unwrap();
        let key = |path: &str| {
            let req = TestRequest::post()
                .uri(path)
                .peer_addr(peer)
                .to_srv_request();
            SignInStart.extract(&req).unwrap()
        };
        let client = LimitKey::Client("192.0.2.7".parse().unwrap());
        assert_eq!(key("/login"), client);
        assert_eq!(key("/auth/passkey/finish"), client);
        for path in [
            "/auth/passkey/start",
            "/auth/verify",
            "/auth/code",
            "/auth/approve",
            "/passkeys/confirm/finish",
            "/logout",
        ] {
            assert_eq!(key(path), LimitKey::Exempt, "{path}");
        }
        assert!(SignInStart.whitelisted_keys().contains(&LimitKey::Exempt));
    }
}
