//! Takes the session cookie off a forward-auth check before actix-session sees it.
//!
//! actix-session loads a session's state from the database for every request that carries its
//! cookie. A check reads the session itself, together with the member and the app, in one
//! statement (`models::app::check`), so the middleware's load would be a second read per
//! check, and the check must never write the session through it either. The cookie's values
//! move into a request extension that only the check handler reads.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, COOKIE};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};

use crate::state::AppState;
use crate::web::browser::session_cookie_name;
use crate::web::policy::rule_of;

/// The (decoded) values of the session cookies a forward-auth check carried.
#[derive(Debug, Clone, Default)]
pub struct CheckCookies(pub Vec<String>);

pub async fn take_check_cookie(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let (true, Some(state)) = (rule_of(req.request()).forward_auth, state) {
        let name = session_cookie_name(
            state.settings.public_url.is_https(),
            state.settings.cookie_domain.is_some(),
        );
        let mut values = Vec::new();
        let mut kept = Vec::new();
        for header in req.headers().get_all(COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some((key, value)) if key.trim() == name => {
                        if let Ok(value) = percent_encoding::percent_decode_str(value).decode_utf8()
                        {
                            values.push(value.into_owned());
                        }
                    }
                    _ => kept.push(pair.to_string()),
                }
            }
        }
        let headers = req.headers_mut();
        headers.remove(COOKIE);
        if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
            if !kept.is_empty() {
                headers.insert(COOKIE, value);
            }
        }
        req.extensions_mut().insert(CheckCookies(values));
    }
    next.call(req).await
}
