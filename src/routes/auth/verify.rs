//! `GET /auth/verify` shows a confirmation and consumes nothing (mail scanners fetch links);
//! `POST /auth/verify` signs in.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{refusal_page, start_session, verify_token};
use crate::models::audit::{AuditEvent, ClientInfo, NewAuditRow};
use crate::models::sign_in_request::CompletedBy;
use crate::settings::LinkBinding;
use crate::signin::{self, FoundRequest, Refusal};
use crate::state::AppState;
use crate::web::browser::Browser;
use crate::web::client::Client;
use crate::web::errors::{respond, PageResult};
use crate::web::pages::Page;

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
    Client(client): Client,
    query: web::Query<TokenQuery>,
) -> HttpResponse {
    let result = show_inner(&req, &state, browser, client, query.into_inner().token).await;
    super::no_store(respond(&req, result))
}

async fn show_inner(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    browser: Browser,
    client: ClientInfo,
    token: Option<String>,
) -> PageResult {
    let Some(token_id) = verify_token(state, token.as_deref()) else {
        return Ok(refusal_page(req, Refusal::Invalid));
    };
    let token = token.unwrap_or_default();
    let binding = browser.binding.as_ref().map(|b| b.digest());
    let settings = state.settings.clone();
    let (found, asking_browser) = state
        .db
        .run(move |conn| {
            let Some(found) = signin::find_by_token(conn, &token_id)? else {
                return Ok((None, false));
            };
            let asking_browser = signin::is_asking_browser(&found.request, binding.as_deref());
            if !asking_browser
                && signin::refusal_for_state(&found.request, chrono::Utc::now()).is_none()
            {
                // A mail scanner, or the person on another device: either way, nothing is used up.
                NewAuditRow::new(AuditEvent::LinkPrefetched)
                    .email(&found.member.email)
                    .client(&client)
                    .request(found.request.id)
                    .detail("link opened without the asking browser's cookie")
                    .insert(conn)?;
            }
            Ok::<_, crate::db::DbError>((Some(found), asking_browser))
        })
        .await?;
    let Some(FoundRequest { request, member }) = found else {
        return Ok(refusal_page(req, Refusal::Invalid));
    };
    if let Some(refusal) = signin::refusal_for_state(&request, chrono::Utc::now()) {
        return Ok(refusal_page(req, refusal));
    }
    let needs_approval = !asking_browser
        && settings.link_binding == LinkBinding::Browser
        && request.browser_digest.is_some();
    if needs_approval {
        let choices = signin::approval_choices(&state.keys.token, &request);
        return Ok(Page::new("approve", "Approve sign-in")
            .with("email", &member.email)
            .with("token", &token)
            .with("choices", choices)
            .with(
                "requested_at",
                request.created_at.format("%Y-%m-%d %H:%M").to_string(),
            )
            .with("requested_ip", &request.requested_ip)
            .with("requested_user_agent", &request.requested_user_agent)
            .render(req));
    }
    Ok(Page::new("confirm", "Sign in")
        .with("email", &member.email)
        .with("token", &token)
        .render(req))
}

#[derive(Deserialize)]
pub struct VerifyForm {
    token: Option<String>,
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
    Client(client): Client,
    form: web::Form<VerifyForm>,
) -> HttpResponse {
    let result = submit_inner(&req, &state, browser, client, form.into_inner().token).await;
    super::no_store(respond(&req, result))
}

async fn submit_inner(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    browser: Browser,
    client: ClientInfo,
    token: Option<String>,
) -> PageResult {
    let token_id = verify_token(state, token.as_deref());
    let binding = browser.binding.as_ref().map(|b| b.digest());
    let device = browser.id.device_digest();
    let settings = state.settings.clone();
    let audit_client = client.clone();
    let outcome = state
        .db
        .run(move |conn| {
            let Some(token_id) = token_id else {
                signin::audit_refusal(
                    conn,
                    Refusal::Invalid,
                    None,
                    &audit_client,
                    "malformed or forged token",
                )?;
                return Ok(Err(Refusal::Invalid));
            };
            let Some(found) = signin::find_by_token(conn, &token_id)? else {
                signin::audit_refusal(
                    conn,
                    Refusal::Invalid,
                    None,
                    &audit_client,
                    "unknown token",
                )?;
                return Ok(Err(Refusal::Invalid));
            };
            if let Some(refusal) = signin::refusal_for_state(&found.request, chrono::Utc::now()) {
                signin::audit_refusal(conn, refusal, Some(&found), &audit_client, "")?;
                return Ok(Err(refusal));
            }
            if !signin::browser_may_complete(&settings, &found.request, binding.as_deref()) {
                signin::audit_refusal(
                    conn,
                    Refusal::WrongBrowser,
                    Some(&found),
                    &audit_client,
                    "link posted from a browser that did not ask for it; not used up",
                )?;
                return Ok(Err(Refusal::WrongBrowser));
            }
            let completed = signin::complete(
                conn,
                found.request.id,
                CompletedBy::Link,
                &audit_client,
                &device,
            )?;
            if let Err(refusal) = completed {
                // Lost a race with another request for the same token.
                signin::audit_refusal(conn, refusal, Some(&found), &audit_client, "")?;
            }
            Ok::<_, crate::db::DbError>(completed)
        })
        .await?;
    match outcome {
        Ok(signed_in) => start_session(req, state, &signed_in, &client),
        Err(refusal) => Ok(refusal_page(req, refusal)),
    }
}
