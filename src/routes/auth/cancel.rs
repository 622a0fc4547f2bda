//! "Not you?": `GET /auth/cancel` shows a button; `POST /auth/cancel` kills the request and
//! tells the admins.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{refusal_page, verify_token};
use crate::domain::email_address::EmailAddress;
use crate::mail::{cancelled_mail, CancelledMail};
use crate::models::audit::ClientInfo;
use crate::models::member;
use crate::signin::{self, Refusal};
use crate::state::AppState;
use crate::web::client::Client;
use crate::web::errors::{respond, PageResult};
use crate::web::pages::Page;

#[derive(Deserialize)]
pub struct TokenParam {
    token: Option<String>,
}

/// Only a page with a button: following a link must never change anything.
pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<TokenParam>,
) -> HttpResponse {
    let token = query.into_inner().token;
    if verify_token(&state, token.as_deref()).is_none() {
        return super::no_store(refusal_page(&req, Refusal::Invalid));
    }
    super::no_store(
        Page::new("cancel", "Not you?")
            .with("token", token.unwrap_or_default())
            .render(&req),
    )
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    Client(client): Client,
    form: web::Form<TokenParam>,
) -> HttpResponse {
    let result = submit_inner(&req, &state, client, form.into_inner().token).await;
    super::no_store(respond(&req, result))
}

async fn submit_inner(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    client: ClientInfo,
    token: Option<String>,
) -> PageResult {
    let Some(token_id) = verify_token(state, token.as_deref()) else {
        return Ok(refusal_page(req, Refusal::Invalid));
    };
    let outcome = state
        .db
        .run(move |conn| {
            let Some(found) = signin::find_by_token(conn, &token_id)? else {
                return Ok(None);
            };
            let cancelled = signin::cancel(conn, &found, &client)?;
            let admins = if cancelled {
                member::active_admin_emails(conn)?
            } else {
                Vec::new()
            };
            Ok::<_, crate::db::DbError>(Some((found, cancelled, admins)))
        })
        .await?;
    let Some((found, cancelled, admins)) = outcome else {
        return Ok(refusal_page(req, Refusal::Invalid));
    };
    if !cancelled {
        return Ok(Page::new("message", "Nothing to cancel")
            .with("heading", "Nothing to cancel")
            .with(
                "message",
                "This sign-in request was already used, cancelled or expired.",
            )
            .render(req));
    }
    if let Ok(email) = EmailAddress::parse(&found.member.email) {
        let mail = CancelledMail {
            email,
            requested_at: found.request.created_at,
            cancelled_at: chrono::Utc::now(),
            ip: found.request.requested_ip.clone(),
            user_agent: found.request.requested_user_agent.clone(),
        };
        for admin in admins.iter().filter_map(|a| EmailAddress::parse(a).ok()) {
            match cancelled_mail(&admin, &mail) {
                Ok(outgoing) => state.mailer.queue(outgoing),
                Err(err) => log::error!("rendering the cancellation email: {err}"),
            }
        }
    }
    Ok(Page::new("message", "Sign-in cancelled")
        .with("heading", "Sign-in request cancelled")
        .with(
            "message",
            "The link no longer works, and the administrators have been told. Thank you.",
        )
        .render(req))
}
