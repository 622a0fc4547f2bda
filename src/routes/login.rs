//! `GET /login`, `POST /login`: ask for a sign-in link.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use chrono::Utc;

use crate::domain::app_origin::AppUrl;
use crate::domain::client_info::ClientInfo;
use crate::domain::email_address::EmailAddress;
use crate::domain::next_path::NextPath;
use crate::oidc::authorize::app_of_next;
use crate::routes::app_access::{app_for, auth_app_path};
use crate::settings::OrgName;
use crate::signin::{self, LinkAsk};
use crate::state::AppState;
use crate::web::browser::BindingSecret;
use crate::web::client::Client;
use crate::web::errors::{PageError, PageResult};
use crate::web::pages::{Page, Prerendered};

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    rd: Option<String>,
}

/// `rd`: a URL on an app (the forward-auth check sent the browser here). Only its shape is
/// checked here; whether its origin is a registered app's is asked when the link is.
fn return_url(rd: Option<&str>) -> Option<AppUrl> {
    rd.and_then(|text| AppUrl::parse(text).ok())
}

/// The sign-in form as most views ask for it (no `next`, no `rd`), rendered at start-up.
pub struct LoginPage(Prerendered);

impl LoginPage {
    pub fn new(passkeys: bool, org: &OrgName) -> Result<Self, tera::Error> {
        Prerendered::new(&login_page(&NextPath::root(), None, passkeys), org).map(Self)
    }
}

fn login_page(next: &NextPath, rd: Option<&AppUrl>, passkeys: bool) -> Page {
    Page::new("login", "Sign in")
        .with("next", next.as_str())
        .with("rd", rd.map(AppUrl::as_str))
        .with("passkeys", passkeys)
}

/// The sign-in page for a browser on its way to an app: it says which ("to continue to
/// Wiki"), and a passkey sign-in goes on through `/auth/app` as an email sign-in does.
async fn app_login_page(
    state: &AppState,
    next: &NextPath,
    rd: Option<&AppUrl>,
) -> Result<Page, PageError> {
    let page = login_page(next, rd, state.webauthn.is_some());
    let app = match rd {
        Some(rd) => app_for(state, rd).await?,
        None => None,
    };
    Ok(match (app, rd) {
        (Some(app), Some(rd)) => page
            .with("app_name", &app.name)
            .with("passkey_next", auth_app_path(&app.name, rd.as_str())),
        // An app's OpenID Connect authorization request, waiting for this sign-in.
        _ => {
            let apps = state.live.apps().await?;
            match app_of_next(next.as_str(), &apps) {
                Some(app) => page
                    .with("app_name", &app.name)
                    .with("passkey_next", next.as_str()),
                None => page,
            }
        }
    })
}

/// Writes nothing anywhere: an anonymous page view costs no database work.
pub async fn form(
    req: HttpRequest,
    state: web::Data<AppState>,
    prerendered: web::Data<LoginPage>,
    query: web::Query<LoginQuery>,
) -> HttpResponse {
    let next = NextPath::parse(query.next.as_deref());
    let rd = return_url(query.rd.as_deref());
    if next == NextPath::root() && rd.is_none() {
        return prerendered.0.render(&req);
    }
    match app_login_page(&state, &next, rd.as_ref()).await {
        Ok(page) => page.render(&req),
        Err(err) => err.render(&req),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    next: Option<String>,
    rd: Option<String>,
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    Client(client): Client,
    form: web::Form<LoginForm>,
) -> PageResult {
    let form = form.into_inner();
    let next = NextPath::parse(form.next.as_deref());
    let rd = return_url(form.rd.as_deref());
    let email = match EmailAddress::parse(&form.email) {
        Ok(email) => email,
        Err(err) => {
            return Ok(app_login_page(&state, &next, rd.as_ref())
                .await?
                .with("email", form.email.chars().take(254).collect::<String>())
                .with("error", err.to_string())
                .status(StatusCode::UNPROCESSABLE_ENTITY)
                .render(&req));
        }
    };
    request_link(&req, &state, client, email, next, rd).await
}

async fn request_link(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    client: ClientInfo,
    email: EmailAddress,
    next: NextPath,
    rd: Option<AppUrl>,
) -> PageResult {
    // A fresh binding for every request, never the one the browser brought: a sign-in
    // cookie planted in a victim's browser must not be bound to the victim's requests.
    let binding = BindingSecret::generate();
    let ask = LinkAsk {
        email: email.clone(),
        binding: binding.digest(),
        next,
        return_url: rd,
        client,
    };
    // A member and a stranger get the same page (a decoy stands in for the stranger).
    state.signin.request_link(ask, Utc::now()).await?;
    let https = state.settings.public_url.is_https();
    let ttl = signin::to_chrono(state.settings.link_ttl);
    let mut response = Page::new("check_inbox", "Check your inbox")
        .with("email", email.as_str())
        .with("ttl_minutes", state.settings.link_ttl_minutes())
        .render(req);
    let max_age = actix_web::cookie::time::Duration::seconds(ttl.num_seconds());
    response
        .add_cookie(&binding.cookie(&state.keys.browser, https, max_age))
        .map_err(|e| anyhow::anyhow!("setting the sign-in cookie: {e}"))?;
    Ok(response)
}
