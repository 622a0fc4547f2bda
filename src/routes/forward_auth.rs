//! `/auth/check` and `/auth/forward` (the proxy asks whether a request to an app may pass),
//! and `/.well-known/jwks.json` (the key that verifies `Latchkey-Assertion`).
//!
//! A check reads the session (by the digest of the key in its cookie), the member and the apps
//! through the session cache (no query when they are cached; a revocation, deactivation or
//! app change empties the entries it concerns on every instance) and decides. It writes
//! nothing, except the first time a session opens an app (`app_opened`), a refusal at most once
//! a minute (`app_denied`), and the session's idle expiry at most once a minute, as pages do,
//! off the answer's path. The request body is never read.

use actix_web::cookie::{Cookie, CookieJar};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};

use crate::assertion::{Claims, LIFETIME_SECS};
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::app_origin::{AppOrigin, AppUrl};
use crate::domain::digests::SessionKeyDigest;
use crate::domain::ids::SessionId;
use crate::forward_auth::AssertionFor;
use crate::middleware::check_cookie::CheckCookies;
use crate::models::app::{self, AppRule};
use crate::models::member::{self, Member};
use crate::session::validity::{judge, SessionTimes, Timeouts, Validity};
use crate::state::AppState;
use crate::web::browser::session_cookie_name;
use crate::web::client::client_info;
use crate::web::pages::render_standalone;

/// How "not signed in" is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// 401 with `Location` (nginx `auth_request` turns it into a redirect itself).
    Check,
    /// 302 to the sign-in page (Caddy and Traefik hand the answer to the browser as is).
    Forward,
}

pub async fn check(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    decide(&req, &state, Style::Check).await
}

pub async fn forward(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    decide(&req, &state, Style::Forward).await
}

pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/jwk-set+json")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(state.keys.assertion.jwks())
}

/// The URL the browser asked the app for, as the proxy reports it.
fn original_url(req: &HttpRequest) -> Option<Result<AppUrl, ()>> {
    let text = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    if let Some(url) = text("x-original-url") {
        return Some(AppUrl::parse(url).map_err(|_| ()));
    }
    match (text("x-forwarded-proto"), text("x-forwarded-host")) {
        (Some(proto), Some(host)) => {
            let uri = text("x-forwarded-uri").unwrap_or("/");
            Some(AppUrl::from_forwarded(proto, host, uri).map_err(|_| ()))
        }
        _ => None,
    }
}

/// The digest of the session key in the (encrypted) session cookie, as the store keeps it.
/// Every cookie of that name is tried: one planted by a sibling host must not hide the real one.
/// The cookies were taken off the request before actix-session (`middleware::check_cookie`).
fn session_key_digest(req: &HttpRequest, state: &AppState) -> Option<SessionKeyDigest> {
    let settings = &state.settings;
    let name = session_cookie_name(
        settings.public_url.is_https(),
        settings.cookie_domain.is_some(),
    );
    let cookies = req.extensions().get::<CheckCookies>().cloned()?;
    cookies.0.into_iter().find_map(|value| {
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(name.clone(), value));
        jar.private(&state.keys.cookie)
            .get(&name)
            .map(|plain| SessionKeyDigest::sha256(plain.value().as_bytes()))
    })
}

fn bad_request() -> HttpResponse {
    HttpResponse::BadRequest()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body("The proxy must send X-Original-URL, or X-Forwarded-Proto, X-Forwarded-Host and X-Forwarded-Uri.\n")
}

fn not_signed_in(state: &AppState, url: &AppUrl, style: Style) -> HttpResponse {
    let rd: String = url::form_urlencoded::byte_serialize(url.as_str().as_bytes()).collect();
    let location = state.settings.public_url.join(&format!("/login?rd={rd}"));
    let status = match style {
        Style::Check => StatusCode::UNAUTHORIZED,
        Style::Forward => StatusCode::FOUND,
    };
    HttpResponse::build(status)
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

fn unexpected(err: impl std::fmt::Display) -> HttpResponse {
    log::error!("forward auth: {err}");
    HttpResponse::InternalServerError()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

fn unavailable(err: DbError) -> HttpResponse {
    if err.is_unavailable() {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "5"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish()
    } else {
        unexpected(err)
    }
}

/// A signed-in member's check, with what the answer needs.
struct Checked {
    session_id: SessionId,
    member: Member,
    /// The app registered for the origin, if any.
    app: Option<AppRule>,
}

async fn decide(req: &HttpRequest, state: &web::Data<AppState>, style: Style) -> HttpResponse {
    let url = match original_url(req) {
        Some(Ok(url)) => url,
        Some(Err(())) | None => return bad_request(),
    };
    let Some(digest) = session_key_digest(req, state) else {
        return not_signed_in(state, &url, style);
    };
    let checked = match signed_in(state, &digest, url.origin()).await {
        Ok(Some(checked)) => checked,
        Ok(None) => return not_signed_in(state, &url, style),
        Err(err) => return unavailable(err),
    };
    match &checked.app {
        Some(app) if app.admits(&checked.member) => allowed(req, state, &checked, app).await,
        _ => denied(req, state, &checked, url.origin()).await,
    }
}

/// The live, still valid sign-in behind this session key digest, and the app for `origin`.
async fn signed_in(
    state: &AppState,
    digest: &SessionKeyDigest,
    origin: &AppOrigin,
) -> Result<Option<Checked>, DbError> {
    let Some(session) = state.live.session(digest).await? else {
        return Ok(None);
    };
    let Some(member_id) = session.member_id else {
        return Ok(None);
    };
    let Some(member) = state.live.member(member_id).await? else {
        return Ok(None);
    };
    let now = chrono::Utc::now().timestamp();
    let timeouts = Timeouts::of(&state.settings);
    match judge(
        Some(&member),
        SessionTimes::in_state(&session.state),
        now,
        timeouts,
    ) {
        Validity::Live => {}
        Validity::NeedsSeenRefresh => state.live.touch(digest, now, timeouts.idle),
        Validity::Expired | Validity::Gone => return Ok(None),
    }
    let apps = state.live.apps().await?;
    let app = apps.iter().find(|app| &app.origin == origin).cloned();
    Ok(Some(Checked {
        session_id: session.id,
        member,
        app,
    }))
}

async fn allowed(
    req: &HttpRequest,
    state: &AppState,
    checked: &Checked,
    app: &AppRule,
) -> HttpResponse {
    let member = &checked.member;
    if !state.forward_auth.has_opened(checked.session_id, app.id) {
        let (session_id, app_id) = (checked.session_id, app.id);
        let (email, app_name) = (member.email.clone(), app.name.clone());
        let client = client_info(req);
        let recorded = state
            .db
            .query(move |conn| {
                app::record_opened(conn, session_id, app_id, email.as_str(), &app_name, &client)
            })
            .await;
        match recorded {
            Ok(_) => state.forward_auth.remember_opened(session_id, app_id),
            // The session ended while this check ran: the next one refuses it.
            Err(err) => return unavailable(err),
        }
    }
    let now = chrono::Utc::now().timestamp();
    let role = member.role();
    let about = AssertionFor {
        session_id: checked.session_id,
        app_id: app.id,
        aud: app.origin.as_str().to_string(),
        email: member.email.to_string(),
        role: role.as_str(),
    };
    let token = match state.forward_auth.fresh_assertion(&about, now) {
        Some(token) => token,
        None => {
            let signed = state.keys.assertion.sign(&Claims {
                iss: state.settings.public_url.base(),
                aud: app.origin.as_str(),
                sub: member.id.to_string(),
                email: member.email.as_str(),
                role: role.as_str(),
                iat: now,
                exp: now + LIFETIME_SECS,
            });
            let token: std::sync::Arc<str> = match signed {
                Ok(token) => token.into(),
                Err(err) => return unexpected(err),
            };
            state
                .forward_auth
                .remember_assertion(about, now, token.clone());
            token
        }
    };
    let mut response = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish();
    let headers = response.headers_mut();
    for (name, value) in [
        ("remote-user", member.email.as_str()),
        ("remote-email", member.email.as_str()),
        ("remote-groups", role.as_str()),
        ("latchkey-assertion", &*token),
    ] {
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

async fn denied(
    req: &HttpRequest,
    state: &AppState,
    checked: &Checked,
    origin: &AppOrigin,
) -> HttpResponse {
    let member = &checked.member;
    let audit = state
        .forward_auth
        .should_audit_denial(member.id, origin.as_str());
    let (email, client) = (member.email.clone(), client_info(req));
    let app_name = checked.app.as_ref().map(|app| app.name.clone());
    let detail = match &app_name {
        Some(name) => format!(
            "{name} ({origin}) does not admit role {}",
            member.role().as_str()
        ),
        None => format!("{origin} is not a registered app"),
    };
    let admins = state
        .db
        .query(move |conn| {
            if audit {
                NewAuditRow::new(AuditEvent::AppDenied)
                    .email(&email)
                    .client(&client)
                    .detail(detail)
                    .insert(conn)?;
            }
            member::active_admin_emails(conn)
        })
        .await;
    let admins = match admins {
        Ok(admins) => admins,
        Err(err) => return unavailable(err),
    };
    let mut context = tera::Context::new();
    context.insert("email", &member.email);
    context.insert("app_name", &app_name);
    context.insert("origin", origin.as_str());
    context.insert("admins", &admins);
    context.insert("latchkey", &state.settings.public_url.join("/"));
    match render_standalone("app_denied.html", &context) {
        Ok(html) => HttpResponse::Forbidden()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(html),
        Err(err) => unexpected(err),
    }
}
