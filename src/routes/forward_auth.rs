//! `/auth/check` and `/auth/forward` (the proxy asks whether a request to an app may pass),
//! and `/.well-known/jwks.json` (the key that verifies `Latchkey-Assertion`).
//!
//! A check reads the session (by the digest of the key in its cookie), the member and the app
//! in one statement and decides; it writes nothing, except the first time a session opens an
//! app (`app_opened`), a refusal at most once a minute (`app_denied`), and the session's idle
//! expiry at most once a minute, as pages do. The request body is never read.

use actix_web::cookie::{Cookie, CookieJar};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};

use crate::assertion::{Claims, LIFETIME_SECS};
use crate::crypto::sha256;
use crate::db::DbError;
use crate::domain::app_origin::AppUrl;
use crate::middleware::check_cookie::CheckCookies;
use crate::middleware::guard::{seen_refresh_secs, SIGNED_IN_AT_KEY};
use crate::models::app::{self, CheckRow};
use crate::models::audit::{AuditEvent, NewAuditRow};
use crate::models::member;
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
fn session_key_digest(req: &HttpRequest, state: &AppState) -> Option<Vec<u8>> {
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
            .map(|plain| sha256(plain.value().as_bytes()))
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

async fn decide(req: &HttpRequest, state: &web::Data<AppState>, style: Style) -> HttpResponse {
    let url = match original_url(req) {
        Some(Ok(url)) => url,
        Some(Err(())) | None => return bad_request(),
    };
    let Some(digest) = session_key_digest(req, state) else {
        return not_signed_in(state, &url, style);
    };
    let origin = url.origin().clone();
    let looked_up = origin.clone();
    let row = state
        .db
        .run(move |conn| {
            app::check(conn, &digest, &looked_up, SIGNED_IN_AT_KEY).map_err(DbError::from)
        })
        .await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => return not_signed_in(state, &url, style),
        Err(err) => return unavailable(err),
    };
    let now = chrono::Utc::now().timestamp();
    let signed_in_at = row
        .signed_in_at
        .as_deref()
        .and_then(|text| text.trim_matches('"').parse::<i64>().ok())
        .unwrap_or(0);
    let max_secs = i64::try_from(state.settings.session_max.as_secs()).unwrap_or(i64::MAX);
    if !row.active || now.saturating_sub(signed_in_at) >= max_secs {
        return not_signed_in(state, &url, style);
    }
    let idle_secs = i64::try_from(state.settings.session_idle.as_secs()).unwrap_or(i64::MAX);
    if now.saturating_sub(row.last_seen_secs) >= seen_refresh_secs(state.settings.session_idle) {
        let session_id = row.session_id;
        let touched = state
            .db
            .query(move |conn| app::touch_session(conn, session_id, idle_secs))
            .await;
        if let Err(err) = touched {
            log::warn!("forward auth: extending a session's idle expiry: {err}");
        }
    }
    match (row.app_id, row.allowed) {
        (Some(app_id), true) => allowed(req, state, &row, app_id, &origin).await,
        _ => denied(req, state, &row, &origin).await,
    }
}

async fn allowed(
    req: &HttpRequest,
    state: &AppState,
    row: &CheckRow,
    app_id: i64,
    origin: &crate::domain::app_origin::AppOrigin,
) -> HttpResponse {
    if !state.forward_auth.has_opened(row.session_id, app_id) {
        let (session_id, email) = (row.session_id, row.email.clone());
        let app_name = row.app_name.clone().unwrap_or_default();
        let client = client_info(req);
        let recorded = state
            .db
            .run(move |conn| {
                app::record_opened(conn, session_id, app_id, &email, &app_name, &client)
                    .map_err(DbError::from)
            })
            .await;
        match recorded {
            Ok(_) => state.forward_auth.remember_opened(row.session_id, app_id),
            // The session ended while this check ran: the next one refuses it.
            Err(err) => return unavailable(err),
        }
    }
    let now = chrono::Utc::now().timestamp();
    let token = state.keys.assertion.sign(&Claims {
        iss: state.settings.public_url.base(),
        aud: origin.as_str(),
        sub: row.member_id.to_string(),
        email: &row.email,
        role: &row.role,
        iat: now,
        exp: now + LIFETIME_SECS,
    });
    let token = match token {
        Ok(token) => token,
        Err(err) => return unexpected(err),
    };
    let mut response = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish();
    let headers = response.headers_mut();
    for (name, value) in [
        ("remote-user", row.email.as_str()),
        ("remote-email", row.email.as_str()),
        ("remote-groups", row.role.as_str()),
        ("latchkey-assertion", token.as_str()),
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
    row: &CheckRow,
    origin: &crate::domain::app_origin::AppOrigin,
) -> HttpResponse {
    let audit = state
        .forward_auth
        .should_audit_denial(row.member_id, origin.as_str());
    let (email, client) = (row.email.clone(), client_info(req));
    let detail = match &row.app_name {
        Some(name) => format!("{name} ({origin}) does not admit role {}", row.role),
        None => format!("{origin} is not a registered app"),
    };
    let admins = state
        .db
        .run(move |conn| {
            if audit {
                NewAuditRow::new(AuditEvent::AppDenied)
                    .email(&email)
                    .client(&client)
                    .detail(detail)
                    .insert(conn)?;
            }
            member::active_admin_emails(conn).map_err(DbError::from)
        })
        .await;
    let admins = match admins {
        Ok(admins) => admins,
        Err(err) => return unavailable(err),
    };
    let mut context = tera::Context::new();
    context.insert("email", &row.email);
    context.insert("app_name", &row.app_name);
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
