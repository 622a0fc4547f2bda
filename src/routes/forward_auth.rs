//! `/auth/check` and `/auth/forward` (the proxy asks whether a request to an app may pass),
//! and `/.well-known/jwks.json` (the key that verifies `Latchkey-Assertion`).
//!
//! This file reads what the proxy sent (the app's name, the original URL, the app's cookie) and
//! writes the answer each proxy expects; which app it is and the decision are the
//! [`crate::forward_auth`] room's. The request body is never read.

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::app_access::{auth_app_url, cookie_keys, denied_page};
use crate::forward_auth::check::{CheckContext, CheckError, Decision, Grant, Refusal};
use crate::forward_auth::target::{self, Forwarded, NamingError, ProxyReport, Target, Unknown};
use crate::state::AppState;
use crate::web::client::client_info;
use crate::web::errors::PageError;

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

fn header_text<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// What the proxy said, as sent. A header that is not visible ASCII counts as sent and
/// unreadable: it must not fall back to another form.
fn proxy_report(req: &HttpRequest) -> Result<ProxyReport<'_>, NamingError> {
    let unreadable = |name: &str| {
        req.headers()
            .get(name)
            .is_some_and(|value| value.to_str().is_err())
    };
    if [
        "x-latchkey-app",
        "x-original-url",
        "x-forwarded-host",
        "x-forwarded-uri",
    ]
    .iter()
    .any(|name| unreadable(name))
    {
        return Err(NamingError::BadUrl(
            crate::domain::app_origin::AppUrlError::BadCharacters,
        ));
    }
    let forwarded = match (
        header_text(req, "x-forwarded-proto"),
        header_text(req, "x-forwarded-host"),
    ) {
        (Some(proto), Some(host)) => Some(Forwarded {
            proto,
            host,
            uri: header_text(req, "x-forwarded-uri").unwrap_or("/"),
        }),
        _ => None,
    };
    Ok(ProxyReport {
        app: header_text(req, "x-latchkey-app"),
        original_url: header_text(req, "x-original-url"),
        forwarded,
    })
}

fn bad_request(err: &NamingError) -> HttpResponse {
    HttpResponse::BadRequest()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(format!("{err}.\n"))
}

fn not_signed_in(state: &AppState, target: &Target, style: Style) -> HttpResponse {
    let location = auth_app_url(state, &target.app.name, target.url.as_str());
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
    let apps = match state.live.apps().await {
        Ok(apps) => apps,
        Err(err) => return PageError::from(err).plain(),
    };
    let resolved = match proxy_report(req).and_then(|report| target::resolve(&report, &apps)) {
        Ok(resolved) => resolved,
        Err(err) => return bad_request(&err),
    };
    let keys = match &resolved {
        Ok(target) => cookie_keys(req, &target.app),
        Err(_) => Vec::new(),
    };
    let context = CheckContext {
        db: &state.db,
        live: &state.live,
        settings: &state.settings,
    };
    let now = chrono::Utc::now().timestamp();
    let decided = state
        .forward_auth
        .decide(&context, resolved.as_ref(), &keys, || client_info(req), now)
        .await;
    match (decided, &resolved) {
        (Ok(Decision::NotSignedIn), Ok(target)) => not_signed_in(state, target, style),
        (Ok(Decision::Allowed(grant)), _) => allowed(&grant),
        (Ok(Decision::Denied(refusal)), resolved) => denied(state, &refusal, resolved.as_ref()),
        (Ok(Decision::NotSignedIn), Err(_)) => {
            unexpected(anyhow::anyhow!("an unknown app cannot want a sign-in"))
        }
        (Err(CheckError::Db(err)), _) => PageError::from(err).plain(),
        (Err(err @ CheckError::Signing(_)), _) => unexpected(err),
    }
}

fn allowed(grant: &Grant) -> HttpResponse {
    let member = &grant.member;
    let groups = grant.groups.join(",");
    let mut response = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish();
    let headers = response.headers_mut();
    let name = member.name.as_ref().map(|name| name.as_str());
    for (header, value) in [
        ("remote-user", Some(member.email.as_str())),
        ("remote-email", Some(member.email.as_str())),
        // One line of text by construction (`MemberName`); a value a header cannot carry is
        // left out rather than mangled.
        ("remote-name", name),
        ("remote-groups", Some(groups.as_str())),
        ("latchkey-assertion", Some(&*grant.assertion)),
    ] {
        if let Some(Ok(value)) = value.map(|value| HeaderValue::from_bytes(value.as_bytes())) {
            headers.insert(HeaderName::from_static(header), value);
        }
    }
    response
}

/// The 403 page, on the app's host (the proxy hands it to the browser as it is, or fetches it
/// again for `error_page`), styled from `/.latchkey/static/`.
fn denied(
    state: &AppState,
    refusal: &Refusal,
    resolved: Result<&Target, &Unknown>,
) -> HttpResponse {
    let url = match resolved {
        Ok(target) => &target.url,
        Err(unknown) => &unknown.url,
    };
    denied_page(state, refusal, url.as_str())
}
