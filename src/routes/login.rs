//! `GET /login`, `POST /login`: ask for a sign-in link.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::domain::email_address::EmailAddress;
use crate::domain::next_path::NextPath;
use crate::mail::{sign_in_mail, SignInMail};
use crate::signin::{self, LinkRequest};
use crate::state::AppState;
use crate::web::browser::{BindingSecret, Browser};
use crate::web::client::Client;
use crate::web::errors::{respond, PageResult};
use crate::web::pages::Page;

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Writes nothing anywhere: an anonymous page view costs no database work.
pub async fn form(req: HttpRequest, query: web::Query<LoginQuery>) -> HttpResponse {
    let next = NextPath::parse(query.next.as_deref());
    Page::new("login", "Sign in")
        .with("next", next.as_str())
        .render(&req)
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    next: Option<String>,
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
    Client(client): Client,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let next = NextPath::parse(form.next.as_deref());
    let email = match EmailAddress::parse(&form.email) {
        Ok(email) => email,
        Err(err) => {
            return Page::new("login", "Sign in")
                .with("next", next.as_str())
                .with("email", form.email.chars().take(254).collect::<String>())
                .with("error", err.to_string())
                .status(StatusCode::UNPROCESSABLE_ENTITY)
                .render(&req)
        }
    };
    respond(
        &req,
        request_link(&req, &state, browser, client, email, next).await,
    )
}

async fn request_link(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    browser: Browser,
    client: crate::models::audit::ClientInfo,
    email: EmailAddress,
    next: NextPath,
) -> PageResult {
    // Reuse the browser's binding secret so that every link it asked for keeps working in it.
    let binding = browser.binding.unwrap_or_else(BindingSecret::generate);
    let binding_digest = binding.digest();
    let settings = state.settings.clone();
    let token_key = state.keys.token.clone();
    let shown_email = email.clone();
    let outcome = state
        .db
        .run(move |conn| {
            signin::request_link(
                conn,
                &settings,
                &token_key,
                &email,
                Some(binding_digest),
                &next,
                &client,
            )
        })
        .await?;
    if let LinkRequest::Created {
        member,
        request,
        token,
        code,
    } = outcome
    {
        queue_sign_in_mail(state, &member.email, &request, &token, &code);
    }
    let https = state.settings.public_url.is_https();
    let ttl = signin::to_chrono(state.settings.link_ttl);
    let mut response = Page::new("check_inbox", "Check your inbox")
        .with("email", shown_email.as_str())
        .with("ttl_minutes", state.settings.link_ttl_minutes())
        .render(req);
    let max_age = actix_web::cookie::time::Duration::seconds(ttl.num_seconds());
    response
        .add_cookie(&binding.cookie(&state.keys.browser, https, max_age))
        .map_err(|e| anyhow::anyhow!("setting the sign-in cookie: {e}"))?;
    Ok(response)
}

/// Renders and queues the email; sending happens off the request path, so the answer takes
/// the same time whether or not a mail goes out.
pub fn queue_sign_in_mail(
    state: &AppState,
    stored_email: &str,
    request: &crate::models::sign_in_request::SignInRequest,
    token: &crate::domain::token::SignInToken,
    code: &crate::domain::code::SignInCode,
) {
    // Mail goes to the stored address, never to what was typed.
    let Ok(to) = EmailAddress::parse(stored_email) else {
        log::error!(
            "member {} has an unparseable stored address",
            request.member_id
        );
        return;
    };
    let mail = SignInMail {
        link: signin::link_with_token(&state.settings, "/auth/verify", token),
        cancel_link: signin::link_with_token(&state.settings, "/auth/cancel", token),
        code: code.as_str().to_string(),
        expires_at: request.expires_at,
        ttl_minutes: state.settings.link_ttl_minutes(),
        requested_at: request.created_at,
        ip: request.requested_ip.clone(),
        user_agent: request.requested_user_agent.clone(),
        request_id: request.id,
    };
    match sign_in_mail(&to, &mail) {
        Ok(outgoing) => state.mailer.queue(outgoing),
        Err(err) => log::error!("rendering the sign-in email: {err}"),
    }
}
