//! Reads (or hands out) the browser cookie and the sign-in binding cookie. No database work:
//! an anonymous page view only ever costs a Set-Cookie header.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};

use crate::state::AppState;
use crate::web::browser::{
    cookie_name, BindingSecret, Browser, BrowserId, BROWSER_COOKIE, SIGNIN_COOKIE,
};

pub async fn browser_cookie(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await;
    };
    let https = state.settings.public_url.is_https();
    let key = &state.keys.browser;
    let existing = req
        .cookie(&cookie_name(BROWSER_COOKIE, https))
        .and_then(|cookie| BrowserId::from_cookie(key, cookie.value()));
    let binding = req
        .cookie(&cookie_name(SIGNIN_COOKIE, https))
        .and_then(|cookie| BindingSecret::from_cookie(key, cookie.value()));
    let had_cookie = existing.is_some();
    let id = existing.unwrap_or_else(BrowserId::generate);
    req.extensions_mut().insert(Browser {
        id: id.clone(),
        had_cookie,
        binding,
    });
    let mut res = next.call(req).await?;
    // Static files and health checks need no cookie; pages and form posts do.
    let path = res.request().path();
    let wants_cookie = !path.starts_with("/static/") && path != "/healthz" && path != "/readyz";
    if !had_cookie && wants_cookie && !clears_site_data(&res) {
        res.response_mut().add_cookie(&id.cookie(key, https))?;
    }
    Ok(res)
}

fn clears_site_data<B>(res: &ServiceResponse<B>) -> bool {
    res.headers().contains_key("clear-site-data")
}
