//! CSRF protection for every state-changing request, in one place: a same-origin check
//! (`Origin`, else `Sec-Fetch-Site`) and a token tied to the browser, sent as the form field
//! `csrf_token` or the `X-CSRF-Token` header, compared in constant time. Anything else is
//! refused with 403 before a handler runs, so nothing changes.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _, HttpResponse};

use subtle::ConstantTimeEq as _;

use crate::middleware::body_limit::BufferedBody;
use crate::state::AppState;
use crate::web::pages::csrf_token;
use crate::web::policy::rule_of;

pub const CSRF_FIELD: &str = "csrf_token";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub async fn csrf_protect(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || rule_of(req.request()).forward_auth
        || rule_of(req.request()).app_protocol
    {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req.into_response(forbidden("no application state")));
    };
    if !same_origin(&req, &state.settings.public_url.origin()) {
        return Ok(req.into_response(forbidden("cross-origin request")));
    }
    let expected = csrf_token(req.request());
    let sent = sent_token(&req);
    let valid = !expected.is_empty()
        && sent.is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(expected.as_bytes())));
    if !valid {
        return Ok(req.into_response(forbidden("missing or wrong CSRF token")));
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// Browsers send `Origin` on every POST (sometimes `null`) and `Sec-Fetch-Site`. A request with
/// neither is not from a browser page, and still needs the token.
fn same_origin(req: &ServiceRequest, public_origin: &str) -> bool {
    let fetch_site = req.headers().get("sec-fetch-site").map(|v| v.as_bytes());
    let same_site_fetch = matches!(fetch_site, Some(b"same-origin") | Some(b"none"));
    match req.headers().get(header::ORIGIN).map(|v| v.as_bytes()) {
        // Under `Referrer-Policy: no-referrer` browsers send `Origin: null` on plain form
        // posts. That says nothing, so `Sec-Fetch-Site` must vouch for the request (a
        // sandboxed frame elsewhere also sends `null`, with `cross-site`).
        Some(b"null") => same_site_fetch,
        Some(origin) => origin == public_origin.as_bytes(),
        None => fetch_site.is_none() || same_site_fetch,
    }
}

fn sent_token(req: &ServiceRequest) -> Option<String> {
    if let Some(value) = req.headers().get(CSRF_HEADER) {
        return value.to_str().ok().map(str::to_string);
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return None;
    }
    let extensions = req.extensions();
    let body = extensions.get::<BufferedBody>()?;
    url::form_urlencoded::parse(&body.0)
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value.into_owned())
}

fn forbidden(reason: &'static str) -> HttpResponse {
    log::info!("refused a state-changing request: {reason}");
    HttpResponse::Forbidden()
        .content_type("text/plain; charset=utf-8")
        .body(
            "This form has expired or did not come from this site. Reload the page and try again.",
        )
}
