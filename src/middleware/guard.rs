//! The one guard: every route that is not public needs a signed-in, still active member, and
//! some need a role. Which route needs what is [`crate::routes::POLICY`].

use actix_identity::IdentityExt as _;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage as _, HttpRequest, HttpResponse};

use crate::domain::ids::MemberId;
use crate::domain::role::Role;
use crate::middleware::anonymous::AnonymousView;
use crate::models::audit::{AuditEvent, NewAuditRow};
use crate::models::member::Member;
use crate::settings::{AdminPasskey, Settings};
use crate::state::AppState;
use crate::web::client::client_info;
use crate::web::errors::PageError;
use crate::web::pages::{is_htmx, Viewer};
use crate::web::session::SessionData;

/// How stale "last seen" may get before it is written again: the idle timeout is enforced by
/// the session row's expiry, which only moves when the session is written. Once a minute at
/// most, and twice per idle period for (test-sized) idle timeouts shorter than two minutes.
const SEEN_REFRESH_SECS: i64 = 60;

pub fn seen_refresh_secs(idle: std::time::Duration) -> i64 {
    let half_idle = i64::try_from(idle.as_secs() / 2).unwrap_or(i64::MAX);
    SEEN_REFRESH_SECS.min(half_idle.max(1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    SignedIn,
    AuditReader,
    Admin,
    /// Auditors read (GET, HEAD), admins also change: the apps pages.
    AuditReaderAdminWrites,
}

impl Access {
    /// What a request with this method needs.
    pub fn for_method(self, method: &actix_web::http::Method) -> Self {
        use actix_web::http::Method;
        match self {
            Access::AuditReaderAdminWrites if matches!(*method, Method::GET | Method::HEAD) => {
                Access::AuditReader
            }
            Access::AuditReaderAdminWrites => Access::Admin,
            other => other,
        }
    }

    fn allows(self, role: Role) -> bool {
        match self {
            Access::Public | Access::SignedIn => true,
            Access::AuditReader => role.can_read_audit(),
            Access::Admin | Access::AuditReaderAdminWrites => role.is_admin(),
        }
    }
}

/// The signed-in member, for handlers behind the guard.
#[derive(Debug, Clone)]
pub struct CurrentMember(pub Member);

impl FromRequest for CurrentMember {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<CurrentMember>()
                .cloned()
                .ok_or_else(|| actix_web::error::ErrorUnauthorized("not signed in")),
        )
    }
}

pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // The path the router matches on (percent-decoded): `/%61udit` is `/audit`.
    let access = crate::routes::rule_for(req.match_info().as_str())
        .access
        .for_method(req.method());
    if access == Access::Public {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req.into_response(HttpResponse::InternalServerError().finish()));
    };
    if req.extensions().contains::<AnonymousView>() {
        return Ok(not_signed_in(req));
    }
    let member_id = req
        .get_identity()
        .ok()
        .and_then(|identity| identity.id().ok())
        .and_then(|id| MemberId::parse(&id));
    let Some(member_id) = member_id else {
        return Ok(not_signed_in(req));
    };
    let session = SessionData::of(req.request());
    let now = chrono::Utc::now().timestamp();
    let signed_in_at = session.signed_in_at();
    let max_secs = i64::try_from(state.settings.session_max.as_secs()).unwrap_or(i64::MAX);
    let expired = now.saturating_sub(signed_in_at) >= max_secs;

    // From the session cache: no query when this member was seen recently.
    let member = match state.live.member(member_id).await {
        Ok(Some(member)) if member.active && !expired => member,
        Ok(found) => {
            if let (Some(member), true) = (found, expired) {
                let client = client_info(req.request());
                let audited = state
                    .db
                    .query(move |conn| {
                        NewAuditRow::new(AuditEvent::SessionExpired)
                            .email(&member.email)
                            .client(&client)
                            .detail("absolute session lifetime reached")
                            .insert(conn)
                    })
                    .await;
                if let Err(err) = audited {
                    let response = PageError::from(err).render(req.request());
                    return Ok(req.into_response(response));
                }
            }
            session.purge();
            return Ok(not_signed_in(req));
        }
        Err(err) => {
            let response = PageError::from(err).render(req.request());
            return Ok(req.into_response(response));
        }
    };
    if !access.allows(member.role()) {
        req.extensions_mut().insert(viewer(&member));
        let response = PageError::Forbidden.render(req.request());
        return Ok(req.into_response(response));
    }
    if access == Access::Admin && !admin_powers(&state.settings, &session, &member) {
        // LATCHKEY_ADMIN_PASSKEY=required and no passkey proved in this session: confirm one
        // (or add one first), then come back. Nothing is done meanwhile.
        let next = (req.method() == actix_web::http::Method::GET).then(|| {
            let uri = req.uri();
            uri.path_and_query()
                .map_or(uri.path(), |pq| pq.as_str())
                .to_string()
        });
        let response = crate::routes::passkey_confirm_redirect(req.request(), next.as_deref());
        return Ok(req.into_response(response));
    }
    if !is_background_poll(req.request())
        && now - session.seen_at() >= seen_refresh_secs(state.settings.session_idle)
    {
        // Writing the session extends its idle expiry; once a minute is enough.
        session.mark_seen(now);
    }
    req.extensions_mut().insert(viewer(&member));
    req.extensions_mut().insert(CurrentMember(member));
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// Whether `member` may do admin work in this session: an admin, and with
/// `LATCHKEY_ADMIN_PASSKEY=required` only once the session proved a passkey.
pub fn admin_powers(settings: &Settings, session: &SessionData, member: &Member) -> bool {
    member.role().is_admin()
        && (settings.admin_passkey == AdminPasskey::Optional || session.proved_passkey())
}

/// A request fired by a timer (polling elements send `X-Latchkey-Poll`), not by the person:
/// it must not keep an unattended tab's session alive past the idle timeout.
fn is_background_poll(req: &HttpRequest) -> bool {
    req.headers().contains_key("x-latchkey-poll")
}

pub fn viewer(member: &Member) -> Viewer {
    Viewer {
        email: member.email.to_string(),
        role: member.role().as_str(),
        is_admin: member.role().is_admin(),
        can_read_audit: member.role().can_read_audit(),
    }
}

/// A page request goes to the sign-in form (and comes back afterwards); an HTMX request gets
/// 401 with `HX-Redirect`, so HTMX navigates the whole page instead of swapping a fragment.
fn not_signed_in(req: ServiceRequest) -> ServiceResponse<BoxBody> {
    let response = if is_htmx(req.request()) {
        HttpResponse::Unauthorized()
            .insert_header(("HX-Redirect", "/login"))
            .finish()
    } else {
        let uri = req.uri();
        let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
        let next: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/login?next={next}")))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish()
    };
    req.into_response(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_is_written_at_most_once_a_minute() {
        use std::time::Duration;
        assert_eq!(seen_refresh_secs(Duration::from_secs(30 * 60)), 60);
        assert_eq!(seen_refresh_secs(Duration::from_secs(10)), 5);
        assert_eq!(seen_refresh_secs(Duration::from_secs(1)), 1);
    }

    #[test]
    fn roles_match_the_contract() {
        assert!(Access::AuditReader.allows(Role::Auditor));
        assert!(Access::AuditReader.allows(Role::Admin));
        assert!(!Access::AuditReader.allows(Role::Member));
        assert!(!Access::Admin.allows(Role::Auditor));
        assert!(Access::SignedIn.allows(Role::Member));
    }
}
