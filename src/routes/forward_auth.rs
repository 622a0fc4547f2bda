//! `/auth/check` and `/auth/forward` (the proxy asks whether a request to an app may pass),
//! and `/.well-known/jwks.json` (the key that verifies `Latchkey-Assertion`).
//!
//! This file reads what the proxy sent (the original URL, the session cookie) and writes the
//! answer each proxy expects; the decision is [`crate::forward_auth::check`]'s. The request
//! body is never read.

use actix_web::cookie::{Cookie, CookieJar};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};

use crate::domain::app_origin::{AppOrigin, AppUrl};
use crate::domain::digests::SessionKeyDigest;
use crate::forward_auth::check::{CheckContext, CheckError, Decision, Grant, Refusal};
use crate::middleware::check_cookie::CheckCookies;
use crate::state::AppState;
use crate::web::browser::session_cookie_name;
use crate::web::client::client_info;
use crate::web::errors::PageError;
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
        .json(state.forward_auth.jwks())
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

fn unexpected(err: impl Into<anyhow::Error>) -> HttpResponse {
    PageError::Unexpected(err.into().context("forward auth")).plain()
}

async fn decide(req: &HttpRequest, state: &web::Data<AppState>, style: Style) -> HttpResponse {
    let url = match original_url(req) {
        Some(Ok(url)) => url,
        Some(Err(())) | None => return bad_request(),
    };
    let context = CheckContext {
        db: &state.db,
        live: &state.live,
        settings: &state.settings,
    };
    let now = chrono::Utc::now().timestamp();
    let decided = state
        .forward_auth
        .decide(
            &context,
            session_key_digest(req, state),
            url.origin(),
            || client_info(req),
            now,
        )
        .await;
    match decided {
        Ok(Decision::NotSignedIn) => not_signed_in(state, &url, style),
        Ok(Decision::Allowed(grant)) => allowed(&grant),
        Ok(Decision::Denied(refusal)) => denied(state, &refusal, url.origin()),
        Err(CheckError::Db(err)) => PageError::from(err).plain(),
        Err(err @ CheckError::Signing(_)) => unexpected(err),
    }
}

fn allowed(grant: &Grant) -> HttpResponse {
    let member = &grant.member;
    let mut response = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish();
    let headers = response.headers_mut();
    for (name, value) in [
        ("remote-user", member.email.as_str()),
        ("remote-email", member.email.as_str()),
        ("remote-groups", member.role().as_str()),
        ("latchkey-assertion", &*grant.assertion),
    ] {
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

fn denied(state: &AppState, refusal: &Refusal, origin: &AppOrigin) -> HttpResponse {
    let mut context = tera::Context::new();
    context.insert("email", &refusal.member.email);
    context.insert("app_name", &refusal.app_name);
    context.insert("origin", origin.as_str());
    context.insert("admins", &refusal.admins);
    context.insert("latchkey", &state.settings.public_url.join("/"));
    match render_standalone("app_denied.html", &context) {
        Ok(html) => HttpResponse::Forbidden()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(html),
        Err(err) => unexpected(anyhow::anyhow!("rendering the refusal page: {err}")),
    }
}
