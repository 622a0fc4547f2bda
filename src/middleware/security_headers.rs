//! The headers every response carries: errors, partials and static files included.
//!
//! This is the outermost layer but the access log, and it also covers errors that no inner
//! layer turned into a response (a broken chunked body, say): actix would otherwise render
//! those after every middleware has run, without these headers.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;

use crate::state::AppState;

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000; includeSubDomains";

pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let https = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.settings.public_url.is_https());
    match next.call(req).await {
        Ok(mut res) => {
            add_security_headers(res.headers_mut(), https);
            Ok(res.map_into_boxed_body())
        }
        Err(err) => {
            let mut response = err.error_response();
            add_security_headers(response.headers_mut(), https);
            Err(InternalError::from_response(err, response).into())
        }
    }
}

/// Adds each header unless the handler set its own (a handler may only make a policy
/// stricter; nothing here is loosened per route).
pub fn add_security_headers(headers: &mut HeaderMap, https: bool) {
    let mut add = |name: HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    add(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    add(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    add(header::REFERRER_POLICY, "no-referrer");
    add(header::X_FRAME_OPTIONS, "DENY");
    add(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if https {
        add(header::STRICT_TRANSPORT_SECURITY, STRICT_TRANSPORT_SECURITY);
    }
}
