//! Takes the cookies off a request that comes through an app's proxy (the forward-auth checks
//! and the app host's `/.latchkey/` pages) before actix-session sees it.
//!
//! Those requests carry the app host's cookies: the app's own session cookie is all Latchkey
//! reads there, and it reads it through the session cache. actix-session must load nothing
//! for them, and never write a Latchkey session either. The app cookies' values move into a
//! request extension that only those handlers read; every other cookie is dropped.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::COOKIE;
use actix_web::middleware::Next;
use actix_web::HttpMessage as _;

use crate::forward_auth::app_sessions::{AppCookies, APP_COOKIE_NAMES};
use crate::web::policy::rule_of;

pub async fn take_check_cookie(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if rule_of(req.request()).forward_auth {
        let mut values = Vec::new();
        for header in req.headers().get_all(COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for pair in text.split(';').map(str::trim) {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                if let Some(name) = APP_COOKIE_NAMES.iter().find(|name| **name == key.trim()) {
                    values.push((*name, value.trim().to_string()));
                }
            }
        }
        req.headers_mut().remove(COOKIE);
        req.extensions_mut().insert(AppCookies(values));
    }
    next.call(req).await
}
