//! Reads (or hands out) the browser cookie and the sign-in binding cookie. No database work:
//! an anonymous page view only ever costs a Set-Cookie header.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};

use crate::state::AppState;

/// More sign-in cookies than this is not a browser but a crafted request.
const MAX_BINDINGS: usize = 4;
use crate::web::browser::{
    cookie_name, BindingSecret, Browser, BrowserId, BROWSER_COOKIE, SIGNIN_COOKIE,
};
use crate::web::policy::rule_of;

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
    // Every valid binding the browser sends: a cookie planted beside this browser's own (say
    // by a sibling host, where the `__Host-` prefix is not in force) must not hide it.
    let signin_name = cookie_name(SIGNIN_COOKIE, https);
    let bindings: Vec<BindingSecret> = req
        .cookies()
        .map(|cookies| {
            cookies
                .iter()
                .filter(|cookie| cookie.name() == signin_name)
                .filter_map(|cookie| BindingSecret::from_cookie(key, cookie.value()))
                .take(MAX_BINDINGS)
                .collect()
        })
        .unwrap_or_default();
    let had_cookie = existing.is_some();
    let id = existing.unwrap_or_else(BrowserId::generate);
    req.extensions_mut().insert(Browser {
        id: id.clone(),
        had_cookie,
        bindings,
    });
    let mut res = next.call(req).await?;
    // Pages and form posts need the cookie; what the policy marks (static files, health
    // checks, the JWK set, forward-auth answers) never sets one.
    let wants_cookie = !rule_of(res.request()).sets_no_cookie;
    if !had_cookie && wants_cookie && !clears_site_data(&res) {
        res.response_mut().add_cookie(&id.cookie(key, https))?;
    }
    Ok(res)
}

fn clears_site_data<B>(res: &ServiceResponse<B>) -> bool {
    res.headers().contains_key("clear-site-data")
}
