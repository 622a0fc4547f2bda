//! Each app's own session, over HTTP: `GET /auth/app` on Latchkey hands a signed-in member on
//! to the app with a one-time code; on the app's host (the proxy routes `/.latchkey/` to
//! Latchkey and names the app in `X-Latchkey-App`), `GET /.latchkey/callback` trades the code
//! for the app's cookie and `/.latchkey/logout` ends it. The room behind it is
//! [`crate::forward_auth::app_sessions`].

use actix_web::cookie::{Cookie, CookieJar, SameSite};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::domain::app_origin::AppUrl;
use crate::domain::digests::{AppKeyDigest, SessionKeyDigest};
use crate::domain::next_path::NextPath;
use crate::forward_auth::app_sessions::{self, app_cookie_name, key_digest, AppCookies};
use crate::forward_auth::check::{signed_in, CheckContext, Refusal};
use crate::models::app::AppRule;
use crate::state::AppState;
use crate::web::browser::session_cookie_name;
use crate::web::client::client_info;
use crate::web::errors::PageError;
use crate::web::pages::render_standalone;
use crate::web::redirect::see_other;

/// `/auth/app?app=NAME&rd=URL`: where a signed-in browser goes on to an app.
pub fn auth_app_path(app_name: &str, rd: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("app", app_name)
        .append_pair("rd", rd)
        .finish();
    format!("/auth/app?{query}")
}

/// The same on the public URL: where a browser without the app's cookie goes.
pub fn auth_app_url(state: &AppState, app_name: &str, rd: &str) -> String {
    state.settings.public_url.join(&auth_app_path(app_name, rd))
}

/// The app registered for `url`'s origin, from the session cache.
pub async fn app_for(state: &AppState, url: &AppUrl) -> Result<Option<AppRule>, PageError> {
    let apps = state.live.apps().await?;
    Ok(apps.iter().find(|app| &app.origin == url.origin()).cloned())
}

/// A page of the app-host kind (the 403 page, the callback's and sign-out's pages): it links
/// its stylesheet under `/.latchkey/`, which reaches Latchkey on any app's host.
pub fn app_host_page(
    state: &AppState,
    status: StatusCode,
    template: &str,
    title: &str,
    fill: impl FnOnce(&mut tera::Context),
) -> HttpResponse {
    let mut context = tera::Context::new();
    context.insert("title", title);
    context.insert("id", template.trim_end_matches(".html"));
    context.insert("org", state.settings.org_name.as_str());
    context.insert("latchkey", &state.settings.public_url.join("/"));
    fill(&mut context);
    match render_standalone(template, &context) {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(html),
        Err(err) => PageError::Unexpected(anyhow::anyhow!("rendering {template}: {err}")).plain(),
    }
}

#[derive(Deserialize)]
pub struct AppQuery {
    app: Option<String>,
    rd: Option<String>,
    switch: Option<String>,
}

/// The digest of the Latchkey session key in this browser's session cookie (every cookie of
/// that name is tried).
pub(super) fn session_key_digest(req: &HttpRequest, state: &AppState) -> Option<SessionKeyDigest> {
    let name = session_cookie_name(state.settings.public_url.is_https());
    let cookies = req.cookies().ok()?;
    cookies
        .iter()
        .filter(|cookie| cookie.name() == name)
        .find_map(|cookie| {
            let mut jar = CookieJar::new();
            jar.add_original(cookie.clone().into_owned());
            jar.private(&state.keys.cookie)
                .get(&name)
                .map(|plain| SessionKeyDigest::sha256(plain.value().as_bytes()))
        })
}

async fn app_named(state: &AppState, name: Option<&str>) -> Result<Option<AppRule>, PageError> {
    let Some(name) = name.map(str::trim).filter(|name| !name.is_empty()) else {
        return Ok(None);
    };
    let apps = state.live.apps().await?;
    Ok(apps.iter().find(|app| app.name == name).cloned())
}

/// The 403 page: who was refused which app and whom to ask, or that no app has this name or
/// origin; with "sign in as someone else" where there is an app to sign in to.
pub fn denied_page(state: &AppState, refusal: &Refusal, url: &str) -> HttpResponse {
    let origin =
        AppUrl::parse(url).map_or_else(|_| url.to_string(), |url| url.origin().to_string());
    let switch = refusal
        .app_name
        .as_ref()
        .map(|name| format!("{}&switch=1", auth_app_url(state, name, url)));
    app_host_page(
        state,
        StatusCode::FORBIDDEN,
        "app_denied.html",
        "No access",
        |context| {
            context.insert("email", &refusal.member.as_ref().map(|m| m.email.as_str()));
            context.insert("app_name", &refusal.app_name);
            context.insert("origin", &origin);
            context.insert("admins", &refusal.admins);
            context.insert("switch", &switch);
        },
    )
}

fn no_such_app(state: &AppState, origin: &str) -> HttpResponse {
    let nobody = Refusal {
        member: None,
        app_name: None,
        admins: Vec::new(),
    };
    denied_page(state, &nobody, origin)
}

/// `GET /auth/app?app=NAME&rd=URL`.
pub async fn open(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<AppQuery>,
) -> Result<HttpResponse, PageError> {
    let Some(app) = app_named(&state, query.app.as_deref()).await? else {
        return Ok(no_such_app(&state, query.app.as_deref().unwrap_or("")));
    };
    // Only a page on the app itself; anything else is the app's front page (which a stored
    // origin always has).
    let Some(rd) = query
        .rd
        .as_deref()
        .and_then(|rd| AppUrl::parse(rd).ok())
        .filter(|url| url.origin() == &app.origin)
        .or_else(|| AppUrl::parse(&format!("{}/", app.origin)).ok())
    else {
        return Ok(no_such_app(&state, app.origin.as_str()));
    };
    let sign_in = {
        let rd: String = url::form_urlencoded::byte_serialize(rd.as_str().as_bytes()).collect();
        format!("/login?rd={rd}")
    };
    if query.switch.is_some() {
        return Ok(see_other(&sign_in));
    }
    let now = chrono::Utc::now();
    let signed_in = match session_key_digest(&req, &state) {
        Some(digest) => signed_in(&state.live, &state.settings, &digest, now.timestamp()).await?,
        None => None,
    };
    let Some(signed_in) = signed_in else {
        return Ok(see_other(&sign_in));
    };
    if !app.admits(&signed_in.member) {
        let context = CheckContext {
            db: &state.db,
            live: &state.live,
            settings: &state.settings,
        };
        let refusal = state
            .forward_auth
            .refuse(&context, signed_in.member, &app, || client_info(&req))
            .await?;
        return Ok(denied_page(&state, &refusal, rd.as_str()));
    }
    let code = app_sessions::issue_code(&state.db, &signed_in, &app, now).await?;
    // The path and query alone: the callback sends the browser on within the app's origin.
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &code)
        .append_pair("rd", &rd.path_and_query())
        .finish();
    Ok(see_other(&format!(
        "{}/.latchkey/callback?{query}",
        app.origin
    )))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    rd: Option<String>,
}

/// The digests of the app cookies of `app`'s own name that the request carried: `__Host-` on
/// https, where no sibling can plant one (several are tried all the same).
pub fn cookie_keys(req: &HttpRequest, app: &AppRule) -> Vec<AppKeyDigest> {
    req.extensions()
        .get::<AppCookies>()
        .map(|cookies| {
            cookies
                .named(app_cookie_name(&app.origin))
                .filter_map(key_digest)
                .collect()
        })
        .unwrap_or_default()
}

/// The app the proxy names in `X-Latchkey-App` for a request on the app's host.
async fn proxied_app(req: &HttpRequest, state: &AppState) -> Result<Option<AppRule>, PageError> {
    let name = req
        .headers()
        .get("x-latchkey-app")
        .and_then(|value| value.to_str().ok());
    app_named(state, name).await
}

fn app_cookie(app: &AppRule, value: String) -> Cookie<'static> {
    Cookie::build(app_cookie_name(&app.origin), value)
        .path("/")
        .http_only(true)
        .secure(app.origin.as_str().starts_with("https://"))
        .same_site(SameSite::Lax)
        .finish()
}

/// `GET /.latchkey/callback?code=C&rd=PATH`, on the app's host.
pub async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, PageError> {
    let Some(app) = proxied_app(&req, &state).await? else {
        return Ok(no_such_app(&state, "this site"));
    };
    let rd = NextPath::parse(query.rd.as_deref());
    let redeemed = match query.code.as_deref() {
        Some(code) => {
            app_sessions::redeem(&state.db, code, &app, client_info(&req), chrono::Utc::now())
                .await?
        }
        None => None,
    };
    let Some(value) = redeemed else {
        let retry = auth_app_url(&state, &app.name, &format!("{}{}", app.origin, rd.as_str()));
        return Ok(app_host_page(
            &state,
            StatusCode::BAD_REQUEST,
            "app_callback_failed.html",
            "Sign-in failed",
            |context| {
                context.insert("app_name", &app.name);
                context.insert("retry", &retry);
            },
        ));
    };
    let mut response = see_other(rd.as_str());
    response
        .add_cookie(&app_cookie(&app, value.0))
        .map_err(|err| anyhow::anyhow!("setting the app cookie: {err}"))?;
    Ok(response)
}

fn logout_page(
    state: &AppState,
    app: &AppRule,
    status: StatusCode,
    signed_out: bool,
) -> HttpResponse {
    let everywhere = state.settings.public_url.join("/sessions");
    app_host_page(state, status, "app_logout.html", "Sign out", |context| {
        context.insert("app_name", &app.name);
        context.insert("signed_out", &signed_out);
        context.insert("everywhere", &everywhere);
    })
}

/// `GET /.latchkey/logout`: a page with the sign-out button (a link alone must not sign out).
pub async fn logout_form(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let Some(app) = proxied_app(&req, &state).await? else {
        return Ok(no_such_app(&state, "this site"));
    };
    Ok(logout_page(&state, &app, StatusCode::OK, false))
}

/// `POST /.latchkey/logout`: ends this app's session. Accepted only from a page of the app's
/// own origin (`Origin`): the app's host has no Latchkey CSRF token, and a browser always
/// sends `Origin` on a cross-site POST.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let Some(app) = proxied_app(&req, &state).await? else {
        return Ok(no_such_app(&state, "this site"));
    };
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok());
    if origin != Some(app.origin.as_str()) {
        return Ok(logout_page(&state, &app, StatusCode::FORBIDDEN, false));
    }
    app_sessions::sign_out(&state.db, &state.live, cookie_keys(&req, &app), &app).await?;
    let mut response = logout_page(&state, &app, StatusCode::OK, true);
    let mut gone = app_cookie(&app, String::new());
    gone.make_removal();
    response
        .add_cookie(&gone)
        .map_err(|err| anyhow::anyhow!("removing the app cookie: {err}"))?;
    Ok(response)
}
