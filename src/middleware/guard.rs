//! The one guard: every route that is not public needs a signed-in, still active member, and
//! some need a role. Which route needs what is [`crate::web::policy::POLICY`].

use actix_identity::IdentityExt as _;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage as _, HttpRequest, HttpResponse};

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::domain::ids::MemberId;
use crate::middleware::anonymous::AnonymousView;
use crate::models::member::Member;
use crate::session::validity::{judge, SessionTimes, Timeouts, Validity};
use crate::session::SessionData;
use crate::settings::{AdminPasskey, Settings};
use crate::state::AppState;
use crate::web::client::client_info;
use crate::web::errors::PageError;
use crate::web::pages::{is_htmx, Viewer};
use crate::web::policy::{passkey_confirm_location, rule_of, sign_in_location, Access};
use crate::web::redirect::{redirect, see_other};

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
    let access = rule_of(req.request()).access.for_method(req.method());
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
    let timeouts = Timeouts::of(&state.settings);

    // From the session cache: no query when this member was seen recently.
    let member = match state.live.member(member_id).await {
        Ok(member) => member,
        Err(err) => {
            let response = PageError::from(err).render(req.request());
            return Ok(req.into_response(response));
        }
    };
    let validity = judge(member.as_ref(), SessionTimes::of(&session), now, timeouts);
    let member = match (member, validity) {
        (Some(member), validity) if validity.is_live() => member,
        (Some(member), Validity::Expired) => {
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
            session.purge();
            return Ok(not_signed_in(req));
        }
        _ => {
            session.purge();
            return Ok(not_signed_in(req));
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
        let location = passkey_confirm_location(next.as_deref());
        let response = redirect(req.request(), &location, false);
        return Ok(req.into_response(response));
    }
    if validity == Validity::NeedsSeenRefresh && !is_background_poll(req.request()) {
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
        name: member.name.as_ref().map(ToString::to_string),
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
        see_other(&sign_in_location(target))
    };
    req.into_response(response)
}
